"""Intermediate features of every backbone, for dense tasks (timm-like contract).

Every keras_spvit backbone records, while it builds its functional graph, the
output of each transformer block (`backbone.feature_info[i]` describes block
`i`: its grid, prefix tokens, channels and stride) and exposes keras-hub's
`pyramid_outputs` (`{"P4": map, ...}`: the last block at each stride as a
`(batch, rows, cols, channels)` map). `feature_extractor` turns chosen blocks
into a functional `keras.Model` sharing the backbone's layers and weights.
"""

import math

import keras

FORMATS = ("maps", "tokens")


@keras.saving.register_keras_serializable(package="keras_spvit")
class TokensToMap(keras.layers.Layer):
    """Drops the prefix (class) tokens and lays the patch tokens on their grid.

    Args:
        grid_shape: `(rows, cols)` of the patch grid.
        num_prefix_tokens: int. Tokens before the patch tokens (0 or 1).
        **kwargs: standard layer arguments.

    Example:

    >>> TokensToMap((2, 3), 1)(np.zeros((4, 7, 8))).shape
    (4, 2, 3, 8)
    """

    def __init__(self, grid_shape, num_prefix_tokens=0, **kwargs):
        super().__init__(**kwargs)
        self.grid_shape = tuple(int(n) for n in grid_shape)
        self.num_prefix_tokens = int(num_prefix_tokens)

    def call(self, tokens):
        rows, cols = self.grid_shape
        patches = tokens[:, self.num_prefix_tokens:, :]
        return keras.ops.reshape(patches, (-1, rows, cols, keras.ops.shape(tokens)[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.grid_shape, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {"grid_shape": self.grid_shape, "num_prefix_tokens": self.num_prefix_tokens}
        )
        return config


def _pyramid_key(stride):
    level = math.log2(stride)
    return f"P{int(level)}" if level == int(level) else f"stride_{stride}"


def attach_features(backbone, block_outputs, grids, prefix_tokens):
    """Records the blocks' outputs on a backbone built as a functional model.

    Called by each backbone right after `super().__init__(inputs, outputs)`:
    sets `feature_info` (one dict per block), the private symbolic block
    outputs `feature_extractor` reads, and keras-hub's `pyramid_outputs`.

    Args:
        backbone: the backbone being built.
        block_outputs: the symbolic `(batch, tokens, channels)` output of each
            block, in block order.
        grids: `(rows, cols)` of each block's patch tokens.
        prefix_tokens: number of tokens before the patch tokens (the class
            token once it has entered) in each block's output.

    Example:

    >>> attach_features(self, outputs, [grid] * depth, [0, 1, 1, 1])
    """

    image_rows = backbone.image_shape[0]
    info = []
    for i, (tensor, grid, prefix) in enumerate(zip(block_outputs, grids, prefix_tokens)):
        info.append(
            {
                "block": i,
                "name": f"block_{i}",
                "grid_shape": (int(grid[0]), int(grid[1])),
                "num_prefix_tokens": int(prefix),
                "channels": int(tensor.shape[-1]),
                "reduction": int(image_rows // grid[0]),
            }
        )
    backbone.feature_info = info
    backbone._feature_tensors = list(block_outputs)
    last_at_stride = {}
    for entry in info:
        last_at_stride[entry["reduction"]] = entry["block"]
    pyramid = {}
    for stride, i in sorted(last_at_stride.items()):
        entry = info[i]
        pyramid[_pyramid_key(stride)] = TokensToMap(
            entry["grid_shape"], entry["num_prefix_tokens"], name=f"pyramid_{entry['name']}",
            dtype=backbone.dtype_policy,
        )(block_outputs[i])
    backbone.pyramid_outputs = pyramid


def _check_blocks(backbone, blocks):
    depth = len(backbone.feature_info)
    if blocks is None:
        return [depth - 1]
    if not isinstance(blocks, (list, tuple)) or not blocks:
        raise ValueError(
            f"Expected a non-empty list of block indices for `blocks`. Received: blocks={blocks!r}"
        )
    checked = []
    for block in blocks:
        if isinstance(block, bool) or not isinstance(block, int) or not -depth <= block < depth:
            raise ValueError(
                f"Block indices must be ints in [-{depth}, {depth}) for {backbone.name!r} "
                f"({depth} blocks). Received: blocks={list(blocks)!r}"
            )
        checked.append(block % depth)
    if len(set(checked)) != len(checked):
        raise ValueError(f"Each block may appear once in `blocks`. Received: blocks={list(blocks)!r}")
    return checked


@keras.saving.register_keras_serializable(package="keras_spvit")
class FeatureExtractor(keras.Model):
    """A functional model returning chosen blocks' outputs of a backbone.

    It shares the backbone's layers and weights (no copy): training it, or a
    head on top of it, trains the backbone. The outputs are a list, one per
    entry of `blocks`, in that order; each is the block's output before the
    final norm (timm's `forward_intermediates` default). With a single
    block the model returns that tensor itself (Keras unwraps one-output
    functional models); `extractor.outputs` is always a list.

    Args:
        backbone: a keras_spvit backbone (`SPViTBackbone`,
            `RefinedViTBackbone`, `PSViTBackbone`).
        blocks: list of block indices (negative ones count from the end);
            defaults to the last block. PSViT's blocks are numbered across
            its stages.
        format: `"maps"` gives `(batch, rows, cols, channels)` on the block's
            patch grid (class token dropped; PSViT's grid shrinks after each
            pooling); `"tokens"` gives the block's `(batch, tokens, channels)`
            sequence unchanged (class token first once it has entered).
        **kwargs: standard `keras.Model` arguments; `name` defaults to
            `"<backbone name>_features"`.

    Example:

    >>> features = FeatureExtractor(backbone, blocks=[1, 3], format="maps")
    >>> [f.shape for f in features(np.zeros((2, 32, 48, 3), "float32"))]
    [(2, 2, 3, 64), (2, 2, 3, 64)]
    """

    def __init__(self, backbone, blocks=None, format="maps", **kwargs):
        if not isinstance(backbone, keras.Model) or not hasattr(backbone, "feature_info"):
            raise ValueError(
                f"Expected a keras_spvit backbone for `backbone`. Received: backbone={backbone!r}"
            )
        if format not in FORMATS:
            raise ValueError(f"Expected `format` to be one of {FORMATS}. Received: format={format!r}")
        blocks = _check_blocks(backbone, blocks)
        outputs = []
        for i in blocks:
            entry, tensor = backbone.feature_info[i], backbone._feature_tensors[i]
            if format == "maps":
                tensor = TokensToMap(
                    entry["grid_shape"], entry["num_prefix_tokens"], name=f"{entry['name']}_map",
                    dtype=backbone.dtype_policy,
                )(tensor)
            outputs.append(tensor)
        kwargs.setdefault("name", f"{backbone.name}_features")
        super().__init__(inputs=backbone.input, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.blocks = blocks
        self.format = format

    def get_config(self):
        return {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "blocks": list(self.blocks),
            "format": self.format,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def feature_extractor(model, blocks=None, format="maps"):
    """Chosen blocks' outputs of a backbone as a functional `keras.Model`.

    Put a segmentation or detection head on the returned model's outputs;
    it shares the backbone's weights. See `FeatureExtractor`.

    Args:
        model: a keras_spvit backbone or image classifier (its backbone is
            used).
        blocks: list of block indices, e.g. `[3, 7, 11]`; negative ones count
            from the end; defaults to the last block.
        format: `"maps"` (`(batch, rows, cols, channels)`, class token
            dropped) or `"tokens"` (the block's token sequence as it is).

    Returns:
        A `FeatureExtractor` whose outputs are a list in `blocks` order (the
        tensor itself for a single block).

    Example:

    >>> backbone = keras_spvit.SPViT_Tiny(image_shape=(224, 224, 3))
    >>> features = keras_spvit.feature_extractor(backbone, blocks=[3, 7, 11])
    >>> [f.shape for f in features(images)]  # 14 x 14 patch grid
    [(2, 14, 14, 192), (2, 14, 14, 192), (2, 14, 14, 192)]
    """

    backbone = getattr(model, "backbone", model)
    return FeatureExtractor(backbone, blocks=blocks, format=format)
