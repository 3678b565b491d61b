import keras
import numpy as np

from keras_spvit.layers.attention_refiner import AttentionRefiner
from keras_spvit.layers.class_token import ClassToken
from keras_spvit.layers.conv_stem import ConvStem
from keras_spvit.layers.multi_head_self_attention import MultiHeadSelfAttention
from keras_spvit.layers.position_embedding import PositionEmbedding
from keras_spvit.layers.shared_attention import SharedAttention
from keras_spvit.layers.transformer_block import TransformerBlock
from keras_spvit.models.resizable_backbone import ResizableBackbone
from keras_spvit.models.arguments import check_image_shape
from keras_spvit.models.arguments import check_refined_vit_arguments
from keras_spvit.models.features import attach_features
from keras_spvit.models.naming import default_name

LAYER_NORM_EPSILON = 1e-6  # Refiner's (LV-ViT / SP-ViT use 1e-5)


@keras.saving.register_keras_serializable(package="keras_spvit")
class RefinedViTBackbone(ResizableBackbone):
    """Refined-ViT backbone (Zhou et al., 2021): attention maps refined and shared.

    Blocks not in `refiner_blocks` compute fresh attention and, from the
    second one on, add the map handed on by the previous block scaled by
    `head_dim**-0.5`. Blocks in `refiner_blocks` compute no queries or keys:
    they apply `adapt_bn(DLA(M)) * head_dim**-0.5` of the incoming map `M`
    to their values (`SharedAttention` with an `AttentionRefiner`) and hand
    `M` on unchanged. The released models refine every odd block.

    Each block scales its input by `adjust_ratio` before both LayerNorms and
    divides both residual branches by it; the MLP output is multiplied by a
    learned per-channel scale starting at `mlp_scale_init`. The output is the
    final LayerNorm's `(batch, 1 + rows * cols, embed_dim)`, class token first.
    `from_preset(preset, image_shape=...)` loads a preset at any resolution
    (see `ResizableBackbone`).

    Args:
        embed_dim: int, required. Token width; divisible by `num_heads`.
        depth: int, required. Number of blocks.
        num_heads: int, required. Attention heads.
        mlp_ratio: float. MLP expansion.
        refiner_blocks: optional list of block indices that share and refine
            the previous map; defaults to the odd blocks. Block 0 has no
            previous map and cannot be one.
        refiner_expansion_ratio: int. Maps per head after expansion (3).
        refiner_kernel_size: odd int. Depthwise kernel over each map (3).
        stem: `"refiner"` (widths 32-64-128, released), `"4_2"`, `"4_2_128"`
            or `"patch"`.
        patch_size: int. Stem stride.
        qkv_bias: bool. Projection biases (released: True).
        adjust_ratio: float. See above (0.5 released).
        mlp_scale_init: float. Initial MLP output scale (1e-5 released).
        drop_path_rate: float in `[0, 1)`, linearly increasing over blocks.
        dropout: float in `[0, 1)`.
        attention_dropout: float in `[0, 1)`.
        layer_norm_epsilon: float (1e-6 released).
        image_shape: `(height, width, channels)` of the inputs.
        remat: bool. Rematerialise every transformer block in training
            (`TransformerBlock(remat=True)`): activation memory of about one
            block instead of all, for about one more forward pass per step.
        dtype: optional dtype policy.
        **kwargs: standard `keras_hub.models.Backbone` arguments; `name`
            defaults to `"refined_vit_backbone"`.

    Arguments are checked before anything is built: a `ValueError` names
    the argument at fault (see `keras_spvit.models.arguments`).

    Example:

    >>> backbone = RefinedViTBackbone(
    ...     embed_dim=64, depth=4, num_heads=4, image_shape=(64, 64, 3)
    ... )
    >>> backbone(np.zeros((2, 64, 64, 3), "float32")).shape
    (2, 17, 64)
    """

    family = "refined_vit"

    def __init__(
        self,
        embed_dim=None,
        depth=None,
        num_heads=None,
        mlp_ratio=3.0,
        refiner_blocks=None,
        refiner_expansion_ratio=3,
        refiner_kernel_size=3,
        stem="refiner",
        patch_size=16,
        qkv_bias=True,
        adjust_ratio=0.5,
        mlp_scale_init=1e-5,
        drop_path_rate=0.0,
        dropout=0.0,
        attention_dropout=0.0,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        image_shape=(224, 224, 3),
        remat=False,
        dtype=None,
        **kwargs,
    ):
        check_refined_vit_arguments(
            embed_dim, depth, num_heads, mlp_ratio, refiner_blocks, refiner_expansion_ratio,
            refiner_kernel_size, stem, patch_size, adjust_ratio, mlp_scale_init, drop_path_rate,
            dropout, attention_dropout, layer_norm_epsilon, image_shape,
        )
        kwargs["name"] = default_name(kwargs.get("name"), self.family, "backbone")
        embed_dim, depth, num_heads = int(embed_dim), int(depth), int(num_heads)
        if refiner_blocks is None:
            refiner_blocks = list(range(1, depth, 2))
        refiner_blocks = sorted({int(i) for i in refiner_blocks})
        drop_path_rate = float(drop_path_rate)
        adjust_ratio = float(adjust_ratio)
        image_shape = check_image_shape(image_shape, patch_size)
        head_dim = embed_dim // num_heads

        # === Layers ===
        self.stem = ConvStem(embed_dim, stem=stem, patch_size=patch_size, name="stem", dtype=dtype)
        grid_shape = (image_shape[0] // patch_size, image_shape[1] // patch_size)
        self.class_token = ClassToken(name="class_token", dtype=dtype)
        self.position_embedding = PositionEmbedding(name="pos_embed", dtype=dtype)
        rates = np.linspace(0.0, drop_path_rate, depth)
        self.transformer_blocks = []
        for i in range(depth):
            hands_on = i < depth - 1
            if i in refiner_blocks:
                attention = SharedAttention(
                    num_heads,
                    qkv_bias=qkv_bias,
                    refiner=AttentionRefiner(
                        refiner_expansion_ratio, refiner_kernel_size, name="refiner", dtype=dtype
                    ),
                    output_attention_map=hands_on,
                    dropout=dropout,
                    name="attn",
                    dtype=dtype,
                )
            else:
                attention = MultiHeadSelfAttention(
                    num_heads,
                    qkv_bias=qkv_bias,
                    attention_dropout=attention_dropout,
                    dropout=dropout,
                    previous_map_scale=head_dim**-0.5 if i > 0 else None,
                    output_attention_map=hands_on,
                    name="attn",
                    dtype=dtype,
                )
            self.transformer_blocks.append(
                TransformerBlock(
                    attention,
                    mlp_ratio=mlp_ratio,
                    skip_lam=adjust_ratio,
                    branch_input_scale=adjust_ratio,
                    mlp_scale_init=mlp_scale_init,
                    drop_path_rate=float(rates[i]),
                    dropout=dropout,
                    layer_norm_epsilon=layer_norm_epsilon,
                    remat=remat,
                    name=f"block_{i}",
                    dtype=dtype,
                )
            )
        self.norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="norm", dtype=dtype
        )

        # === Functional Model ===
        images = keras.Input(shape=image_shape, name="images")
        x = self.stem(images)
        x = keras.layers.Reshape(
            (grid_shape[0] * grid_shape[1], embed_dim), name="patch_tokens", dtype=dtype
        )(x)
        x = self.position_embedding(self.class_token(x))
        attention_map = None
        block_outputs = []
        for block in self.transformer_blocks:
            outputs = block(x) if attention_map is None else block(x, attention_map=attention_map)
            x, attention_map = outputs if isinstance(outputs, (tuple, list)) else (outputs, None)
            block_outputs.append(x)
        x = self.norm(x)
        super().__init__(inputs=images, outputs=x, dtype=dtype, **kwargs)
        self.image_shape = image_shape
        attach_features(self, block_outputs, [grid_shape] * depth, [1] * depth)

        # === Config ===
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = float(mlp_ratio)
        self.refiner_blocks = refiner_blocks
        self.refiner_expansion_ratio = refiner_expansion_ratio
        self.refiner_kernel_size = refiner_kernel_size
        self.stem_type = stem
        self.patch_size = patch_size
        self.qkv_bias = qkv_bias
        self.adjust_ratio = adjust_ratio
        self.mlp_scale_init = mlp_scale_init
        self.drop_path_rate = drop_path_rate
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.image_shape = image_shape
        self.remat = remat
        self.grid_shape = grid_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "embed_dim": self.embed_dim,
                "depth": self.depth,
                "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio,
                "refiner_blocks": self.refiner_blocks,
                "refiner_expansion_ratio": self.refiner_expansion_ratio,
                "refiner_kernel_size": self.refiner_kernel_size,
                "stem": self.stem_type,
                "patch_size": self.patch_size,
                "qkv_bias": self.qkv_bias,
                "adjust_ratio": self.adjust_ratio,
                "mlp_scale_init": self.mlp_scale_init,
                "drop_path_rate": self.drop_path_rate,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "image_shape": self.image_shape,
                "remat": self.remat,
            }
        )
        return config
