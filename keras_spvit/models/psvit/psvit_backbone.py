import keras
import numpy as np

from keras_spvit.layers.attention_refiner import AttentionRefiner
from keras_spvit.layers.class_token import ClassToken
from keras_spvit.layers.conv_stem import ConvStem
from keras_spvit.layers.multi_head_self_attention import MultiHeadSelfAttention
from keras_spvit.layers.position_embedding import PositionEmbedding
from keras_spvit.layers.shared_attention import SharedAttention
from keras_spvit.layers.spatial_prior_attention import SpatialPriorAttention
from keras_spvit.layers.token_pooling import TokenPooling
from keras_spvit.layers.transformer_block import TransformerBlock
from keras_spvit.models.resizable_backbone import ResizableBackbone
from keras_spvit.models.arguments import check_image_shape
from keras_spvit.models.arguments import check_psvit_arguments
from keras_spvit.models.features import attach_features
from keras_spvit.models.naming import default_name
from keras_spvit.utils.validation import check_non_negative_int, check_positive_int, check_rate

LAYER_NORM_EPSILON = 1e-6  # DeiT's


def _per_stage(values, stages, name):
    values = tuple(values)
    if len(values) != stages:
        raise ValueError(
            f"`{name}` needs one value per stage ({stages} stages). Received: {name}={values}"
        )
    return tuple(check_positive_int(v, f"{name}[{i}]") for i, v in enumerate(values))


@keras.saving.register_keras_serializable(package="keras_spvit")
class PSViTBackbone(ResizableBackbone):
    """PSViT backbone: stages separated by token pooling, attention shared within stages.

    A reconstruction from the paper's abstract (Chen et al., 2021, "PSViT:
    Better Vision Transformer via Token Pooling and Attention Sharing"); no
    code is public, so every open choice is an argument. Stage `s` has
    `stage_depths[s]` blocks of width `stage_dims[s]` and `stage_heads[s]`
    heads; between stages a `TokenPooling` halves the grid (`"2d"`) or the
    sequence (`"1d"`) and changes the width. A layer in `shared_layers`
    computes no queries or keys: it applies the previous layer's map to its
    own values (`SharedAttention`, refined by an `AttentionRefiner` when
    `refine_shared`). Sharing across a pooling step is rejected. Layers in
    `spatial_prior_layers` use SP-ViT's spatial-prior attention on the grid
    of their stage; they must come before the class token enters
    (`class_token_block`).

    Layer indices count over all stages. The output is the final
    LayerNorm's `(batch, 1 + tokens, stage_dims[-1])`, class token first.
    `from_preset(preset, image_shape=...)` loads a preset at any resolution
    (see `ResizableBackbone`).

    Args:
        stage_depths: required. Blocks per stage, e.g. `(4, 4, 4)`.
        stage_dims: required. Width per stage.
        stage_heads: required. Heads per stage.
        pooling_mode: `"2d"` or `"1d"`.
        pooling: `"conv"`, `"avg"` or `"max"` (see `TokenPooling`).
        shared_layers: indices of layers that share the previous layer's map.
        refine_shared: bool. Refine shared maps with an `AttentionRefiner`.
        spatial_prior_layers: indices of layers with spatial-prior attention.
        class_token_block: int. Index of the block the class token enters
            before (0: before the position embedding, which then covers it).
        mlp_ratio: float.
        stem: `"patch"` (DeiT), `"4_2"`, `"4_2_128"` or `"refiner"`.
        patch_size: int. Stem stride.
        qkv_bias: bool.
        drop_path_rate: float in `[0, 1)`.
        layer_norm_epsilon: float.
        image_shape: `(height, width, channels)`.
        remat: bool. Rematerialise every transformer block in training
            (`TransformerBlock(remat=True)`): activation memory of about one
            block instead of all, for about one more forward pass per step.
        dtype: optional dtype policy.
        **kwargs: standard `keras_hub.models.Backbone` arguments; `name`
            defaults to `"psvit_backbone"`.

    Arguments are checked before anything is built: a `ValueError` names
    the argument at fault (see `keras_spvit.models.arguments`).

    Example:

    >>> backbone = PSViTBackbone(
    ...     stage_depths=(2, 2), stage_dims=(32, 64), stage_heads=(1, 2),
    ...     shared_layers=[1, 3], patch_size=8, image_shape=(32, 32, 3),
    ... )
    >>> backbone(np.zeros((2, 32, 32, 3), "float32")).shape
    (2, 5, 64)
    """

    family = "psvit"

    def __init__(
        self,
        stage_depths=None,
        stage_dims=None,
        stage_heads=None,
        pooling_mode="2d",
        pooling="conv",
        shared_layers=(),
        refine_shared=False,
        spatial_prior_layers=(),
        class_token_block=0,
        mlp_ratio=4.0,
        stem="patch",
        patch_size=16,
        qkv_bias=True,
        drop_path_rate=0.0,
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        image_shape=(224, 224, 3),
        remat=False,
        dtype=None,
        **kwargs,
    ):
        check_psvit_arguments(
            stage_depths, stage_dims, stage_heads, pooling_mode, pooling, shared_layers,
            spatial_prior_layers, class_token_block, mlp_ratio, stem, patch_size,
            drop_path_rate, layer_norm_epsilon, image_shape,
        )
        kwargs["name"] = default_name(kwargs.get("name"), self.family, "backbone")
        stages = len(tuple(stage_depths))
        stage_depths = _per_stage(stage_depths, stages, "stage_depths")
        stage_dims = _per_stage(stage_dims, stages, "stage_dims")
        stage_heads = _per_stage(stage_heads, stages, "stage_heads")
        for dim, heads in zip(stage_dims, stage_heads):
            if dim % heads:
                raise ValueError(
                    "Each stage's width must be divisible by its heads. Received: "
                    f"stage_dims={stage_dims}, stage_heads={stage_heads}"
                )
        depth = sum(stage_depths)
        stage_of = np.repeat(np.arange(stages), stage_depths)
        first_of_stage = set(np.cumsum((0,) + stage_depths[:-1]).tolist())
        shared_layers = sorted({int(i) for i in shared_layers})
        spatial_prior_layers = sorted({int(i) for i in spatial_prior_layers})
        for i in shared_layers:
            if not 0 <= i < depth or i in first_of_stage:
                raise ValueError(
                    f"Layer {i} cannot share attention: "
                    + ("it does not exist." if not 0 <= i < depth else
                       "it is the first layer of its stage, and sharing across a "
                       "pooling step is not possible (the token count changes).")
                    + f" Received: shared_layers={shared_layers}, stage_depths={stage_depths}"
                )
        class_token_block = check_non_negative_int(class_token_block, "class_token_block")
        if class_token_block >= depth:
            raise ValueError(
                f"`class_token_block` must be < the number of layers ({depth}). "
                f"Received: class_token_block={class_token_block}"
            )
        if class_token_block in shared_layers and class_token_block > 0:
            raise ValueError(
                f"Layer {class_token_block} cannot share attention: the class token "
                "enters just before it, so its token count differs from the previous "
                f"layer's. Received: shared_layers={shared_layers}, "
                f"class_token_block={class_token_block}"
            )
        for i in spatial_prior_layers:
            if not 0 <= i < class_token_block or i in shared_layers:
                raise ValueError(
                    f"Layer {i} cannot use spatial-prior attention: such layers act on "
                    "patch tokens only (before `class_token_block`) and compute their "
                    f"own map. Received: spatial_prior_layers={spatial_prior_layers}, "
                    f"class_token_block={class_token_block}, shared_layers={shared_layers}"
                )
        drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        image_shape = check_image_shape(image_shape, patch_size)

        # === Layers ===
        self.stem = ConvStem(stage_dims[0], stem=stem, patch_size=patch_size, name="stem", dtype=dtype)
        self.class_token = ClassToken(name="class_token", dtype=dtype)
        self.position_embedding = PositionEmbedding(name="pos_embed", dtype=dtype)
        grid = (image_shape[0] // patch_size, image_shape[1] // patch_size)
        rates = np.linspace(0.0, drop_path_rate, depth)
        self.transformer_blocks, self.poolings = [], []
        for i in range(depth):
            stage = int(stage_of[i])
            if i in first_of_stage and i > 0:
                pool = TokenPooling(
                    pooling_mode, pooling, output_dim=stage_dims[stage], grid_shape=grid,
                    num_prefix_tokens=int(i > class_token_block), name=f"pool_{stage}",
                    dtype=dtype,
                )
                pool.build((None, int(i > class_token_block) + grid[0] * grid[1], stage_dims[stage - 1]))
                grid = pool.output_grid_shape
                self.poolings.append(pool)
            hands_on = i + 1 in shared_layers
            common = dict(name="attn", dtype=dtype)
            heads = stage_heads[stage]
            if i in shared_layers:
                refiner = AttentionRefiner(name="refiner", dtype=dtype) if refine_shared else None
                attention = SharedAttention(
                    heads, qkv_bias=qkv_bias, refiner=refiner, output_attention_map=hands_on,
                    **common,
                )
            elif i in spatial_prior_layers:
                attention = SpatialPriorAttention(
                    heads, grid_shape=grid, qkv_bias=qkv_bias, output_attention_map=hands_on,
                    **common,
                )
            else:
                attention = MultiHeadSelfAttention(
                    heads, qkv_bias=qkv_bias, output_attention_map=hands_on, **common
                )
            self.transformer_blocks.append(
                TransformerBlock(
                    attention, mlp_ratio=mlp_ratio, drop_path_rate=float(rates[i]),
                    layer_norm_epsilon=layer_norm_epsilon, name=f"block_{i}", dtype=dtype,
                    remat=remat,
                )
            )
        self.norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="norm", dtype=dtype
        )

        # === Functional Model ===
        images = keras.Input(shape=image_shape, name="images")
        x = self.stem(images)
        rows, cols = image_shape[0] // patch_size, image_shape[1] // patch_size
        x = keras.layers.Reshape((rows * cols, stage_dims[0]), name="patch_tokens", dtype=dtype)(x)
        if class_token_block == 0:
            x = self.class_token(x)
        x = self.position_embedding(x)
        pools = iter(self.poolings)
        attention_map = None
        block_outputs, block_grids, grid = [], [], (rows, cols)
        for i, block in enumerate(self.transformer_blocks):
            if i in first_of_stage and i > 0:
                pool = next(pools)
                x = pool(x)
                grid = pool.output_grid_shape
            if i == class_token_block and i > 0:
                x = self.class_token(x)
            outputs = block(x) if i not in shared_layers else block(x, attention_map=attention_map)
            x, attention_map = outputs if isinstance(outputs, (tuple, list)) else (outputs, None)
            block_outputs.append(x)
            block_grids.append(grid)
        x = self.norm(x)
        super().__init__(inputs=images, outputs=x, dtype=dtype, **kwargs)
        self.image_shape = image_shape
        attach_features(
            self, block_outputs, block_grids, [int(i >= class_token_block) for i in range(depth)]
        )

        # === Config ===
        self.stage_depths = stage_depths
        self.stage_dims = stage_dims
        self.stage_heads = stage_heads
        self.pooling_mode = pooling_mode
        self.pooling = pooling
        self.shared_layers = shared_layers
        self.refine_shared = bool(refine_shared)
        self.spatial_prior_layers = spatial_prior_layers
        self.class_token_block = class_token_block
        self.mlp_ratio = float(mlp_ratio)
        self.stem_type = stem
        self.patch_size = patch_size
        self.qkv_bias = qkv_bias
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.image_shape = image_shape
        self.remat = remat

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "stage_depths": self.stage_depths,
                "stage_dims": self.stage_dims,
                "stage_heads": self.stage_heads,
                "pooling_mode": self.pooling_mode,
                "pooling": self.pooling,
                "shared_layers": self.shared_layers,
                "refine_shared": self.refine_shared,
                "spatial_prior_layers": self.spatial_prior_layers,
                "class_token_block": self.class_token_block,
                "mlp_ratio": self.mlp_ratio,
                "stem": self.stem_type,
                "patch_size": self.patch_size,
                "qkv_bias": self.qkv_bias,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "image_shape": self.image_shape,
                "remat": self.remat,
            }
        )
        return config
