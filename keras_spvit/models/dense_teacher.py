"""A classifier's logits at every position of its last feature map.

Token labeling (LV-ViT, SP-ViT) labels each location of a training image
with a teacher's class scores there: the teacher's final classifier is
applied before pooling, at every position (the release turns its Linear
into a 1x1 convolution). `dense_teacher(model)` builds that model from a
trained classifier, reusing its layers and weights.
"""

import keras
from keras import ops

from keras_spvit.models.token_labeling_image_classifier import (
    TokenLabelingImageClassifier,
)

_POOLINGS = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)
# Layers allowed between the pooling and the final Dense: dropout is off at
# inference; a norm over channels is applied at every position.
_PASS = (keras.layers.Dropout,)
_PER_CHANNEL = (keras.layers.LayerNormalization, keras.layers.BatchNormalization)
SUPPORTED = (
    "keras_spvit classifiers (SP-ViT, LV-ViT, Refined-ViT, PSViT), keras-hub image "
    "classifiers of the base layout (backbone with a spatial map -> pooler -> dropout -> "
    "dense: ResNet, EfficientNet, DenseNet, CSPNet, Xception, MiT) and functional Keras "
    "models ending in GlobalAveragePooling2D/GlobalMaxPooling2D [-> Dropout/norm] -> Dense"
)


def _producer(tensor):
    """`(layer, input tensors)` of the node that produced a functional tensor."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, []
    layer, node_index = history[0], history[1]
    node = layer._inbound_nodes[node_index]
    return layer, list(node.input_tensors)


def _unsupported(model, why):
    return ValueError(
        f"dense_teacher cannot find a per-location classifier in {model.name!r} "
        f"({type(model).__name__}): {why}. Supported: {SUPPORTED}."
    )


def token_grid(backbone):
    """`(h, w)` of the patch tokens a keras_spvit backbone outputs.

    PSViT's token pooling shrinks the grid stage by stage: its last pooling's
    output grid is the one the final tokens lie on.

    Args:
        backbone: a keras_spvit backbone (SP-ViT, Refined-ViT, PSViT).

    Example:

    >>> token_grid(SPViT_Tiny(image_shape=(32, 32, 3)).backbone)  # patch 4 -> 8x8
    (8, 8)
    """
    poolings = getattr(backbone, "poolings", None)
    if poolings:
        return tuple(poolings[-1].output_grid_shape)
    grid = getattr(backbone, "grid_shape", None)
    if grid is not None:
        return tuple(grid)
    height, width = backbone.image_shape[:2]
    return (height // backbone.patch_size, width // backbone.patch_size)


def _token_teacher(model):
    head = model.head
    dense = getattr(head, "aux_head", None) or head.head
    grid = token_grid(model.backbone)
    prefix = int(getattr(head, "num_prefix_tokens", 1))
    images = keras.Input(shape=tuple(model.backbone.image_shape), name="images")
    tokens = model.backbone(images)
    patches = tokens[:, prefix:]
    logits = ops.cast(dense(patches), "float32")
    logits = keras.layers.Reshape(grid + (logits.shape[-1],), name="token_logits")(logits)
    return keras.Model(images, logits, name=f"{model.name}_dense_teacher")


def _per_location_norm(norm, x):
    """A channel norm built for pooled `(batch, c)` vectors, applied to `(batch, h, w, c)`.

    The layer itself refuses 4-D inputs (its input spec): its inference math
    is applied with its own weights.
    """
    x = ops.cast(x, "float32")
    if isinstance(norm, keras.layers.BatchNormalization):
        scale = ops.rsqrt(ops.cast(norm.moving_variance, "float32") + norm.epsilon)
        if norm.scale:
            scale = scale * ops.cast(norm.gamma, "float32")
        x = (x - ops.cast(norm.moving_mean, "float32")) * scale
        return x + ops.cast(norm.beta, "float32") if norm.center else x
    if getattr(norm, "rms_scaling", False):
        raise ValueError(f"dense_teacher: {norm.name!r} uses rms_scaling, which is not "
                         f"supported. Supported: {SUPPORTED}.")
    mean = ops.mean(x, axis=-1, keepdims=True)
    variance = ops.var(x, axis=-1, keepdims=True)
    x = (x - mean) * ops.rsqrt(variance + norm.epsilon)
    if norm.scale:
        x = x * ops.cast(norm.gamma, "float32")
    return x + ops.cast(norm.beta, "float32") if norm.center else x


def _pooled_teacher(model):
    outputs = model.outputs
    if len(outputs) != 1:
        raise _unsupported(model, f"it has {len(outputs)} outputs, expected one")
    dense, inputs = _producer(outputs[0])
    if not isinstance(dense, keras.layers.Dense):
        raise _unsupported(model, f"its output comes from {type(dense).__name__}, not a Dense")
    between = []
    layer = dense
    while True:
        if len(inputs) != 1:
            raise _unsupported(model, f"{layer.name!r} takes {len(inputs)} inputs")
        layer, next_inputs = _producer(inputs[0])
        if isinstance(layer, _POOLINGS):
            feature_map = next_inputs[0]
            break
        if layer is None or not isinstance(layer, _PASS + _PER_CHANNEL):
            what = "an input" if layer is None else f"{type(layer).__name__} {layer.name!r}"
            raise _unsupported(
                model, f"{what} stands between the final Dense and a global pooling")
        if isinstance(layer, _PER_CHANNEL):
            between.append(layer)
        inputs = next_inputs
    if len(feature_map.shape) != 4:
        raise _unsupported(model, f"the pooled feature map has shape {feature_map.shape}")
    features = keras.Model(model.inputs, feature_map)
    images = keras.Input(shape=tuple(model.inputs[0].shape[1:]), name="images")
    x = features(images)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        x = ops.transpose(x, (0, 2, 3, 1))
    for norm in reversed(between):
        x = _per_location_norm(norm, x)
    # The Dense's activation (a softmax output) is left out: logits are kept.
    logits = ops.matmul(ops.cast(x, dense.compute_dtype), dense.kernel)
    if dense.use_bias:
        logits = logits + dense.bias
    logits = ops.cast(logits, "float32")
    return keras.Model(images, logits, name=f"{model.name}_dense_teacher")


def dense_teacher(model):
    """A model `images -> (batch, h, w, classes)`: `model`'s logits at every location.

    The classifier's final dense layer is applied at each position of the
    last feature map instead of after pooling (the released token-labeling
    trick: the Linear as a 1x1 convolution). For average pooling the mean of
    the per-location logits over positions is the model's own logits.

    - keras_spvit classifiers: the patch tokens after the final norm go
      through the aux (token-labeling) head, as the release does, on the
      backbone's token grid.
    - keras-hub image classifiers of the base layout and functional Keras
      models: the final `Dense` must follow a `GlobalAveragePooling2D` or
      `GlobalMaxPooling2D`, with only dropout or per-channel norms between
      (applied at each position). A softmax on the Dense is dropped: the
      result is logits.

    The returned model takes the same inputs as `model` (normalised
    images, without `model`'s preprocessor) and returns float32 logits.

    Args:
        model: a trained classifier (see above).

    Returns:
        A `keras.Model` sharing `model`'s layers and weights.

    Example:

    >>> teacher = dense_teacher(keras_hub.models.ImageClassifier.from_preset(
    ...     "resnet_50_imagenet"))
    >>> teacher(np.zeros((1, 224, 224, 3), "float32")).shape
    (1, 7, 7, 1000)
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"dense_teacher takes a keras.Model. Received: {type(model).__name__}. "
            f"Supported: {SUPPORTED}.")
    if isinstance(model, TokenLabelingImageClassifier):
        return _token_teacher(model)
    try:
        model.outputs
    except (AttributeError, ValueError):
        raise _unsupported(model, "it is not a functional model") from None
    if not model.outputs or not model.inputs:
        raise _unsupported(model, "it is not a functional model")
    return _pooled_teacher(model)
