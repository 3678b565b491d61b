import keras
import numpy as np

from keras_spvit.layers.attention_refiner import AttentionRefiner
from keras_spvit.layers.class_token import ClassToken
from keras_spvit.layers.conv_stem import ConvStem
from keras_spvit.layers.multi_head_self_attention import MultiHeadSelfAttention
from keras_spvit.layers.pos_cnn import PosCNN
from keras_spvit.layers.position_embedding import PositionEmbedding
from keras_spvit.layers.spatial_prior_attention import SpatialPriorAttention
from keras_spvit.layers.transformer_block import LAYER_NORM_EPSILON, TransformerBlock
from keras_spvit.models.resizable_backbone import ResizableBackbone
from keras_spvit.models.arguments import check_image_shape, check_spvit_arguments
from keras_spvit.models.features import attach_features
from keras_spvit.models.naming import default_name


@keras.saving.register_keras_serializable(package="keras_spvit")
class SPViTBackbone(ResizableBackbone):
    """SP-ViT / LV-ViT backbone: stem, spatial-prior and vanilla blocks, norm.

    Blocks `0 .. spatial_prior_blocks - 1` use `SpatialPriorAttention` on the
    patch tokens; the others use `MultiHeadSelfAttention`. The class token
    enters just before block `class_token_block` (by default the first vanilla
    block) with no position embedding; with `class_token_block=0` it enters
    before the position embedding, which then covers it (LV-ViT). Every block
    is followed by a `PosCNN` on the patch grid.

    The output is the final LayerNorm's `(batch, 1 + rows * cols, embed_dim)`
    sequence, class token first. Any image height and width divisible by the
    stem stride work, square or not.
    `from_preset(preset, image_shape=...)` loads a preset at any resolution
    (see `ResizableBackbone`).

    Args:
        embed_dim: int, required. Token width; divisible by `num_heads`.
        depth: int, required. Number of transformer blocks.
        num_heads: int, required. Attention heads per block.
        mlp_ratio: float. MLP hidden width is `int(embed_dim * mlp_ratio)`.
        spatial_prior_blocks: int in `[0, depth)`. Number of leading blocks
            with spatial-prior attention (K in the paper).
        class_token_block: optional int in `[spatial_prior_blocks, depth)`.
            Index of the block the class token enters before. Defaults to
            `spatial_prior_blocks`. The released SP-ViT-L uses
            `spatial_prior_blocks=0, class_token_block=22`.
        stem: `"4_2"`, `"4_2_128"` or `"patch"` (see `ConvStem`).
        patch_size: int. Stem stride (16 for the convolutional stems).
        skip_lam: float. Residual branches are divided by it.
        drop_path_rate: float in `[0, 1)`. Stochastic depth, linearly
            increasing from 0 over the blocks to this value.
        dropout: float in `[0, 1)`. Dropout in the MLPs and after attention.
        attention_dropout: float in `[0, 1)`. Dropout on attention weights.
        qkv_bias: bool. Whether the attention projections have biases.
        refiner_blocks: block indices whose attention refines its own map
            with an `AttentionRefiner` before applying it (Refiner's idea on
            spatial-prior or vanilla attention; not in the release).
        refiner_expansion_ratio: int. Maps per head in those refiners.
        refiner_kernel_size: odd int. Their depthwise kernel size.
        layer_norm_epsilon: float. Epsilon of every LayerNorm.
        image_shape: `(height, width, channels)` of the channels-last,
            normalised input images.
        remat: bool. Rematerialise every transformer block in training
            (`TransformerBlock(remat=True)`): activation memory of about one
            block instead of all, for about one more forward pass per step.
        dtype: optional dtype policy, e.g. `"mixed_bfloat16"`.
        **kwargs: standard `keras_hub.models.Backbone` arguments; `name`
            defaults to `"spvit_backbone"`.

    Arguments are checked before anything is built: a `ValueError` names
    the argument at fault (see `keras_spvit.models.arguments`).

    Example:

    >>> backbone = SPViTBackbone(
    ...     embed_dim=64, depth=4, num_heads=2, spatial_prior_blocks=2,
    ...     image_shape=(64, 64, 3),
    ... )
    >>> backbone(np.zeros((2, 64, 64, 3), "float32")).shape
    (2, 17, 64)
    """

    family = "spvit"

    def __init__(
        self,
        embed_dim=None,
        depth=None,
        num_heads=None,
        mlp_ratio=3.0,
        spatial_prior_blocks=0,
        class_token_block=None,
        stem="4_2",
        patch_size=16,
        skip_lam=1.0,
        drop_path_rate=0.0,
        dropout=0.0,
        attention_dropout=0.0,
        qkv_bias=False,
        refiner_blocks=(),
        refiner_expansion_ratio=3,
        refiner_kernel_size=3,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        image_shape=(224, 224, 3),
        remat=False,
        dtype=None,
        **kwargs,
    ):
        check_spvit_arguments(
            embed_dim, depth, num_heads, mlp_ratio, spatial_prior_blocks, class_token_block,
            stem, patch_size, skip_lam, drop_path_rate, dropout, attention_dropout,
            refiner_blocks, refiner_expansion_ratio, refiner_kernel_size, layer_norm_epsilon,
            image_shape,
        )
        kwargs["name"] = default_name(kwargs.get("name"), self.family, "backbone")
        embed_dim, depth, num_heads = int(embed_dim), int(depth), int(num_heads)
        spatial_prior_blocks = int(spatial_prior_blocks)
        if class_token_block is None:
            class_token_block = spatial_prior_blocks
        class_token_block = int(class_token_block)
        drop_path_rate = float(drop_path_rate)
        image_shape = check_image_shape(image_shape, patch_size)
        refiner_blocks = sorted({int(i) for i in refiner_blocks})

        # === Layers ===
        self.stem = ConvStem(embed_dim, stem=stem, patch_size=patch_size, name="stem", dtype=dtype)
        grid_shape = (image_shape[0] // patch_size, image_shape[1] // patch_size)
        self.class_token = ClassToken(name="class_token", dtype=dtype)
        self.position_embedding = PositionEmbedding(name="pos_embed", dtype=dtype)
        rates = np.linspace(0.0, drop_path_rate, depth)
        self.transformer_blocks = []
        self.pos_cnns = []
        for i in range(depth):
            attention_kwargs = dict(
                num_heads=num_heads,
                qkv_bias=qkv_bias,
                attention_dropout=attention_dropout,
                dropout=dropout,
                name="attn",
                dtype=dtype,
            )
            if i in refiner_blocks:
                attention_kwargs["refiner"] = AttentionRefiner(
                    refiner_expansion_ratio, refiner_kernel_size, name="refiner", dtype=dtype
                )
            if i < spatial_prior_blocks:
                attention = SpatialPriorAttention(grid_shape=grid_shape, **attention_kwargs)
            else:
                attention = MultiHeadSelfAttention(**attention_kwargs)
            self.transformer_blocks.append(
                TransformerBlock(
                    attention,
                    mlp_ratio=mlp_ratio,
                    skip_lam=skip_lam,
                    drop_path_rate=float(rates[i]),
                    dropout=dropout,
                    layer_norm_epsilon=layer_norm_epsilon,
                    remat=remat,
                    name=f"block_{i}",
                    dtype=dtype,
                )
            )
            self.pos_cnns.append(
                PosCNN(
                    grid_shape=grid_shape,
                    num_prefix_tokens=int(i >= class_token_block),
                    name=f"pos_cnn_{i}",
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
        if class_token_block == 0:
            x = self.class_token(x)
        x = self.position_embedding(x)
        block_outputs = []
        for i in range(depth):
            if i == class_token_block and i > 0:
                x = self.class_token(x)
            x = self.pos_cnns[i](self.transformer_blocks[i](x))
            block_outputs.append(x)
        x = self.norm(x)
        super().__init__(inputs=images, outputs=x, dtype=dtype, **kwargs)
        self.image_shape = image_shape
        attach_features(
            self, block_outputs, [grid_shape] * depth,
            [int(i >= class_token_block) for i in range(depth)],
        )

        # === Config ===
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = float(mlp_ratio)
        self.spatial_prior_blocks = spatial_prior_blocks
        self.class_token_block = class_token_block
        self.stem_type = stem
        self.patch_size = patch_size
        self.skip_lam = float(skip_lam)
        self.drop_path_rate = drop_path_rate
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.qkv_bias = qkv_bias
        self.refiner_blocks = refiner_blocks
        self.refiner_expansion_ratio = refiner_expansion_ratio
        self.refiner_kernel_size = refiner_kernel_size
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
                "spatial_prior_blocks": self.spatial_prior_blocks,
                "class_token_block": self.class_token_block,
                "stem": self.stem_type,
                "patch_size": self.patch_size,
                "skip_lam": self.skip_lam,
                "drop_path_rate": self.drop_path_rate,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "qkv_bias": self.qkv_bias,
                "refiner_blocks": self.refiner_blocks,
                "refiner_expansion_ratio": self.refiner_expansion_ratio,
                "refiner_kernel_size": self.refiner_kernel_size,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "image_shape": self.image_shape,
                "remat": self.remat,
            }
        )
        return config
