"""Every block's attention map, for any keras_spvit model."""

import weakref

import keras
import numpy as np

from keras_spvit.layers.transformer_block import TransformerBlock
from keras_spvit.models.image_inputs import check_model_images
from keras_spvit.utils.validation import check_positive_int

# backbone -> the functional model returning its maps (built once per backbone).
_EXTRACTORS = weakref.WeakKeyDictionary()


class _WithScores(keras.layers.Layer):
    """Runs a block with `return_attention_scores=True`.

    A layer of its own because a Keras functional graph expects a layer to
    return the same number of outputs at every call; the block's weights are
    the block's.
    """

    def __init__(self, block, **kwargs):
        super().__init__(name=f"{block.name}_with_scores", dtype=block.dtype_policy, **kwargs)
        self.block = block

    def call(self, inputs, attention_map=None, training=None):
        extra = {} if attention_map is None else {"attention_map": attention_map}
        return self.block(inputs, training=training, return_attention_scores=True, **extra)


def _extractor(backbone):
    extractor = _EXTRACTORS.get(backbone)
    if extractor is not None:
        return extractor
    maps = {}

    def call_function(layer, *args, **kwargs):
        # Each block runs as in the backbone's graph, with its attention
        # scores appended to the outputs it already had.
        if not isinstance(layer, TransformerBlock):
            return layer(*args, **kwargs)
        outputs = _WithScores(layer)(*args, **kwargs)
        *kept, maps[layer.name] = outputs
        return kept[0] if len(kept) == 1 else tuple(kept)

    inputs = keras.Input(shape=backbone.input.shape[1:], dtype=backbone.input.dtype,
                         name="images")
    # Same layers and weights (no copy), the graph re-run with `call_function`.
    keras.models.clone_model(
        backbone, input_tensors=inputs, clone_function=lambda layer: layer,
        call_function=call_function,
    )
    if not maps:
        raise ValueError(
            f"{backbone.name!r} has no TransformerBlock: it has no attention maps to return."
        )
    extractor = keras.Model(inputs, maps, name=f"{backbone.name}_attention_maps")
    _EXTRACTORS[backbone] = extractor
    return extractor


def attention_maps(model, images, preprocess=False, batch_size=32):
    """The attention map every block applies, for a batch of images.

    Works for every family (SP-ViT, LV-ViT, Refined-ViT, PSViT) from a
    backbone or an image classifier: each `TransformerBlock` runs as in the
    model, and the map its attention layer applies to the values (what the
    layer returns with `return_attention_scores=True`) is collected. For
    softmax attention (SP-ViT / LV-ViT, spatial-prior or not, PSViT's
    fresh and shared maps) each row sums to 1. Refined-ViT's maps are what
    it applies: a fresh softmax plus `head_dim**-0.5` times the previous
    map, or a refined map `refiner(M) * head_dim**-0.5`, whose rows do not
    sum to 1. Tokens are the block's own: patches only in spatial-prior
    blocks, class token first once it has entered, fewer after PSViT's
    pooling.

    Args:
        model: a keras_spvit backbone or image classifier.
        images: array `(batch, height, width, channels)`: normalised images,
            as calling the model takes them; with `preprocess=True`, images
            as `predict` takes them (e.g. uint8), run through the
            classifier's preprocessor first.
        preprocess: bool. Run `model.preprocessor` on `images` first.
        batch_size: int. Images per forward pass.

    Returns:
        A dict `{block_name: float32 numpy array (batch, heads, tokens, tokens)}`
        in block order (`"block_0"`, `"block_1"`, ...).

    Example:

    >>> model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits")
    >>> images, _ = keras_spvit.data.digits_split("test")
    >>> maps = keras_spvit.attention_maps(model, images[:4], preprocess=True)
    >>> maps["block_0"].shape, maps["block_3"].shape  # 2 priors blocks, then the class token
    ((4, 2, 64, 64), (4, 2, 65, 65))
    """

    check_positive_int(batch_size, "batch_size")
    backbone = getattr(model, "backbone", model)
    if not isinstance(backbone, keras.Model) or not hasattr(backbone, "image_shape"):
        raise ValueError(
            "Expected a keras_spvit backbone or image classifier for `model`. "
            f"Received: model={model!r}"
        )
    if preprocess:
        preprocessor = getattr(model, "preprocessor", None)
        if preprocessor is None:
            raise ValueError(
                f"preprocess=True needs a model with a preprocessor; {model.name!r} has none."
            )
        if hasattr(model, "check_inputs"):
            model.check_inputs(images)
        images = preprocessor(images)
        images = images[0] if isinstance(images, tuple) else images
    check_model_images(images, backbone.image_shape, f"attention_maps on {backbone.name!r}")
    extractor = _extractor(backbone)
    total = int(keras.ops.shape(images)[0])
    chunks = []
    for start in range(0, total, batch_size):
        out = extractor(images[start : start + batch_size], training=False)
        chunks.append({k: keras.ops.convert_to_numpy(v) for k, v in out.items()})
    names = [layer.name for layer in backbone.layers if isinstance(layer, TransformerBlock)]
    return {
        name: np.concatenate([c[name] for c in chunks]).astype("float32")
        for name in names if name in chunks[0]
    } if chunks else {}
