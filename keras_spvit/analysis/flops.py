"""Multiply-accumulate counts of keras_spvit models, per image.

How it counts: every matmul and convolution, from the shapes each layer was
built with (`get_build_config`), one MAC per multiply-add, batch size 1:

- `Dense`: tokens x inputs x units; `Conv2D`: output pixels x kernel area x
  input channels x filters; `DepthwiseConv2D`: output pixels x kernel area x
  channels. (The stem's patch projection counts as its convolution, though
  it runs as one matmul.)
- Attention products: `q k^T` and `weights v`, tokens^2 x width each
  (`SharedAttention` only the latter); the spatial prior's MLP over its
  distinct offsets.
- Not counted, as in fvcore / ptflops conventions: normalisation, softmax,
  activations, additions, pooling without weights.

GFLOPs are about twice the MACs.
"""

import math

import keras

from keras_spvit.layers.multi_head_self_attention import MultiHeadSelfAttention
from keras_spvit.layers.shared_attention import SharedAttention
from keras_spvit.layers.spatial_prior_attention import SpatialPriorAttention


def _tokens(shape):
    return math.prod(int(s) for s in shape[1:-1])


def _layer_macs(layer):
    config = layer.get_build_config() if layer.built else None
    if not config or "input_shape" not in config:
        return 0
    shape = config["input_shape"]
    if isinstance(layer, keras.layers.Dense):
        return _tokens(shape) * int(shape[-1]) * layer.units
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        out = layer.compute_output_shape(shape)
        return _tokens(out) * math.prod(layer.kernel_size) * int(shape[-1]) * layer.depth_multiplier
    if isinstance(layer, keras.layers.Conv2D):
        out = layer.compute_output_shape(shape)
        return _tokens(out) * math.prod(layer.kernel_size) * int(shape[-1]) * layer.filters
    if isinstance(layer, (MultiHeadSelfAttention, SpatialPriorAttention)):
        macs = 2 * int(shape[1]) ** 2 * int(shape[-1])
        if isinstance(layer, SpatialPriorAttention):
            macs += len(layer.offsets) * 3 * int(shape[-1])
        return macs
    if isinstance(layer, SharedAttention):
        return int(shape[1]) ** 2 * int(shape[-1])
    return 0


def count_macs(model):
    """Multiply-accumulates of one forward pass on one image.

    Args:
        model: any keras_spvit model, backbone or built layer.

    Returns:
        int, MACs per image (see the module docstring for what counts).

    Example:

    >>> count_macs(keras_spvit.SPViT_S()) / 1e9  # GMACs
    """
    return sum(_layer_macs(layer) for layer in model._flatten_layers(include_self=True))
