"""Exporting a classifier for serving: raw uint8 images in, class probabilities out.

The artifact carries the evaluation preprocessing (timm's resize of the
shorter side to `floor(size / crop_pct)`, central crop, normalisation), so a
server feeds it decoded images of any size. The resize is written as two
matrix products whose weights are computed in the graph from the image size:
the same antialiased kernels as `tf.image.resize(..., antialias=True)`
(TensorFlow's `ScaleAndTranslate`, which neither LiteRT nor ONNX has), with
only the crop's rows and columns computed. Every op is a LiteRT builtin and has
an ONNX counterpart, so the three formats run the same graph.

The model part is traced by Keras' `ExportArchive` (TensorFlow backend; JAX
through `jax2tf` for SavedModel); the preprocessing and the top-k are
TensorFlow ops around it. `keras-spvit export` runs under TensorFlow.
"""

import os
import shutil
import tempfile

# Imports nothing heavy at the top: `keras-spvit export --help` reads FORMATS
# before any backend starts (TensorFlow loads inside the functions).

FORMATS = ("saved_model", "litert", "onnx")
QUANTIZE_MODES = ("int8",)
# What Keras' `model.quantize` leaves alone (said by `--quantize` and export).
KERAS_QUANTIZE_KEEPS = "heads, convolutions, norms and spatial priors stay float"
# How `export(quantize="int8")` quantizes, per format (said by `keras-spvit export`).
QUANTIZE_ROUTES = {
    "saved_model": f"Keras' model.quantize on a copy; {KERAS_QUANTIZE_KEEPS}",
    "litert": "LiteRT converter's dynamic-range quantization",
    "onnx": "onnxruntime's quantize_dynamic, int8 weights in 7 bits (reduce_range)",
}
_EXTENSIONS = {"litert": ".tflite", "onnx": ".onnx"}
_KERNELS = ("bicubic", "bilinear")


def export(
    model,
    path,
    format="saved_model",
    *,
    image_size=None,
    crop_pct=None,
    mean=None,
    std=None,
    interpolation=None,
    class_names=None,
    top_k=5,
    quantize=None,
):
    """Writes `model` with its preprocessing as a serving artifact.

    The artifact's `serve` signature takes `images`, a uint8 batch
    `(batch, height, width, channels)` of any height and width (one size per
    call), and returns `probabilities` `(batch, classes)` float32,
    `top_classes` / `top_probabilities` `(batch, k)` and, when `class_names`
    are given, `top_names` (strings).

    Preprocessing comes from the model's keras-hub image converter
    (`model.preprocessor.image_converter`, as presets and classifiers built
    by `keras_spvit` carry); any argument given here overrides it, and a
    model without a converter needs `image_size`, `crop_pct`, `mean`, `std`.

    Args:
        model: a Keras classifier taking normalised images `(batch, h, w, c)`
            and returning logits (or a dict with `"logits"`).
        path: output: a directory (`"saved_model"`), a `.tflite` file
            (`"litert"`) or an `.onnx` file (`"onnx"`).
        format: one of `"saved_model"`, `"litert"`, `"onnx"`. LiteRT uses
            TensorFlow's converter; ONNX needs `tf2onnx` (and `onnxruntime` to
            run it): `pip install "keras_spvit[export]"`.
        image_size: `(height, width)` the model takes.
        crop_pct: float in (0, 1]: the central fraction kept.
        mean, std: per-channel statistics for pixels in [0, 1].
        interpolation: `"bicubic"` or `"bilinear"` (antialiased).
        class_names: optional list of names, one per class.
        top_k: int >= 1, the number of top classes returned (capped at the
            class count).
        quantize: `None` (float) or `"int8"`: int8 weights by each format's
            own route: SavedModel holds a copy of the model quantized by Keras'
            `model.quantize("int8")` (`model` itself is left float); LiteRT uses
            its converter's dynamic-range quantization and ONNX onnxruntime's
            `quantize_dynamic` (int8 weights with 7-bit range, which CPUs
            without VNNI need to not saturate; activations quantized per call,
            the runtimes' int8 kernels). A model already quantized by Keras
            exports as SavedModel only (the LiteRT and ONNX converters have no
            int8 batched matmul): export the float model with `quantize`.

    Returns:
        `path`.

    Example:

    >>> model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits")
    >>> keras_spvit.export(model, "digits.tflite", format="litert")
    'digits.tflite'
    """
    import keras

    if format not in FORMATS:
        raise ValueError(f"Expected `format` in {FORMATS}. Received: format={format!r}")
    extension = _EXTENSIONS.get(format)
    if extension and not str(path).endswith(extension):
        raise ValueError(
            f"A {format} artifact is one file ending in {extension!r}. Received: path={path!r}"
        )
    if keras.backend.backend() not in ("tensorflow", "jax"):
        raise ValueError(
            f"Exporting needs the TensorFlow or JAX backend; this process runs "
            f"{keras.backend.backend()!r}. Run with KERAS_BACKEND=tensorflow (the weights are "
            "the same on every backend)."
        )
    if keras.backend.backend() == "jax" and format != "saved_model":
        raise ValueError(
            f"{format} export runs under the TensorFlow backend (under JAX the traced model "
            "keeps its random-state variables, which LiteRT and ONNX cannot hold). Run with "
            "KERAS_BACKEND=tensorflow, or export format='saved_model'."
        )
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"Expected an int >= 1 for `top_k`. Received: top_k={top_k!r}")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"Expected `quantize` in {QUANTIZE_MODES} or None. Received: quantize={quantize!r}"
        )
    quantized = _quantization_modes(model)
    if quantized and format != "saved_model":
        raise ValueError(
            f"The model is already quantized ({', '.join(quantized)}, by Keras' "
            f"model.quantize), which the {format} converter cannot take (no int8 batched "
            f"matmul). Export the float model with quantize='int8': {format}'s own int8."
        )
    if quantized and quantize:
        raise ValueError(f"The model is already quantized ({', '.join(quantized)}); "
                         "export it without `quantize`.")
    settings = serving_preprocessing(
        model, image_size=image_size, crop_pct=crop_pct, mean=mean, std=std,
        interpolation=interpolation,
    )
    classes = int(_logits(model.output).shape[-1]) if hasattr(model, "output") else None
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if classes is not None and len(class_names) != classes:
            raise ValueError(
                f"`class_names` has {len(class_names)} names; the model predicts {classes} "
                "classes."
            )
    if format == "onnx":
        _require("tf2onnx", "ONNX export")
        if quantize:
            _require("onnxruntime", "int8 ONNX export")
    path = str(path)
    if format == "saved_model":
        if quantize:
            model = _quantized_copy(model, quantize)
        _write_saved_model(model, path, settings, class_names, top_k)
        return path
    workdir = tempfile.mkdtemp(prefix="keras_spvit_export_")
    try:
        saved = os.path.join(workdir, "saved_model")
        serve = _write_saved_model(model, saved, settings, class_names, top_k)
        if format == "litert":
            _write_litert(saved, path, quantize)
        else:
            _write_onnx(serve, path, quantize, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return path


def serving_preprocessing(model, **overrides):
    """The evaluation preprocessing `export` bakes in, as a dict.

    Args:
        model: a classifier, with or without a keras-hub image converter.
        **overrides: `image_size`, `crop_pct`, `mean`, `std`, `interpolation`;
            `None` values are taken from the converter.

    Returns:
        dict with `image_size`, `crop_pct`, `scale`, `offset` (per channel:
        `x * scale + offset` on [0, 255] pixels), `interpolation`, `channels`.

    Example:

    >>> serving_preprocessing(model)["image_size"]
    (224, 224)
    """
    converter = getattr(getattr(model, "preprocessor", None), "image_converter", None)
    settings = {}
    for key in ("image_size", "crop_pct", "mean", "std", "interpolation"):
        value = overrides.get(key)
        if value is None and converter is not None:
            value = getattr(converter, key, None)
        settings[key] = value
    if converter is not None and overrides.get("mean") is None and settings["mean"] is None:
        # A converter given scale / offset directly.
        settings["scale"] = converter.scale
        settings["offset"] = converter.offset
    missing = [k for k in ("image_size", "crop_pct") if settings[k] is None]
    if settings["mean"] is None and settings.get("scale") is None:
        missing += ["mean", "std"]
    if missing:
        raise ValueError(
            "The model has no image converter to take the preprocessing from; pass "
            + ", ".join(f"`{k}`" for k in missing)
            + " (the values it was trained with)."
        )
    if converter is not None and not getattr(converter, "antialias", True):
        raise ValueError(
            "Export reproduces antialiased resizing only; the model's converter has "
            "antialias=False."
        )
    interpolation = settings["interpolation"] or "bicubic"
    if interpolation not in _KERNELS:
        raise ValueError(
            f"Expected `interpolation` in {_KERNELS}. Received: interpolation={interpolation!r}"
        )
    crop_pct = settings["crop_pct"]
    if isinstance(crop_pct, bool) or not 0.0 < float(crop_pct) <= 1.0:
        raise ValueError(f"Expected a float in (0, 1] for `crop_pct`. Received: {crop_pct!r}")
    size = tuple(int(s) for s in settings["image_size"])
    channels = int(model.input_shape[-1]) if hasattr(model, "input_shape") else 3
    if settings["mean"] is not None:
        mean = _per_channel(settings["mean"], channels, "mean")
        std = _per_channel(settings["std"], channels, "std")
        scale = [1.0 / (255.0 * s) for s in std]
        offset = [-m / s for m, s in zip(mean, std)]
    else:
        scale = _per_channel(settings["scale"] if settings["scale"] is not None else 1.0,
                             channels, "scale")
        offset = _per_channel(settings["offset"] if settings["offset"] is not None else 0.0,
                              channels, "offset")
    return {
        "image_size": size,
        "crop_pct": float(crop_pct),
        "scale": scale,
        "offset": offset,
        "interpolation": interpolation,
        "channels": channels,
    }


def preprocess(images, settings):
    """uint8 images `(batch, h, w, c)` -> the model's input, in TensorFlow ops.

    Equal to `tf.image.resize(..., antialias=True)` to the shorter side
    `floor(size / crop_pct)`, the central crop and `x * scale + offset`
    (float rounding: about 2e-4 on the 0-255 scale).

    Args:
        images: uint8 tensor `(batch, height, width, channels)`.
        settings: a dict from `serving_preprocessing`.

    Example:

    >>> preprocess(tf.zeros((1, 300, 400, 3), tf.uint8), settings).shape
    TensorShape([1, 224, 224, 3])
    """
    import tensorflow as tf

    from keras_spvit.utils.preprocessing import eval_resize_size

    target_h, target_w = settings["image_size"]
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    size = eval_resize_size((target_h, target_w), settings["crop_pct"])
    if isinstance(size, tuple):
        new_h, new_w = tf.constant(size[0]), tf.constant(size[1])
    else:
        # `eval_resized_shape_tf` in int32: the same values (torchvision's
        # int(short * long / short_before) is exact in integers), and float64
        # ops are not LiteRT builtins.
        new_h = tf.where(height <= width, size, (size * height) // width)
        new_w = tf.where(height <= width, (size * width) // height, size)
    kernel = settings["interpolation"]
    rows = _resize_weights(height, new_h, _round_half_even(new_h - target_h), target_h,
                           kernel)
    cols = _resize_weights(width, new_w, _round_half_even(new_w - target_w), target_w,
                           kernel)
    x = tf.cast(images, tf.float32)
    x = tf.einsum("yh,bhwc->bywc", rows, x)
    x = tf.einsum("xw,bywc->byxc", cols, x)
    return x * tf.constant(settings["scale"], tf.float32) + tf.constant(
        settings["offset"], tf.float32
    )


def _round_half_even(difference):
    """`round(difference / 2)` with Python's (and tf.round's) ties to even."""
    half = difference // 2
    return half + (difference % 2) * (half % 2)


def _resize_weights(in_size, out_size, start, count, kernel):
    """Rows `[start, start + count)` of the `(out_size, in_size)` matrix of an
    antialiased resize, as TensorFlow's ScaleAndTranslate computes them: output
    pixel x samples at `(x + 0.5) * in / out`; the kernel widens by `in / out`
    when downsampling; each row is normalised to sum 1."""
    import tensorflow as tf

    in_f = tf.cast(in_size, tf.float32)
    inverse_scale = 1.0 / (tf.cast(out_size, tf.float32) / in_f)
    kernel_scale = tf.maximum(inverse_scale, 1.0)
    sample = (tf.cast(tf.range(count) + start, tf.float32) + 0.5) * inverse_scale
    source = tf.cast(tf.range(in_size), tf.float32)
    distance = tf.abs(source[None, :] + 0.5 - sample[:, None]) / kernel_scale
    if kernel == "bicubic":
        # Keys' cubic, a = -0.5.
        weights = tf.where(
            distance < 1.0,
            (1.5 * distance - 2.5) * distance * distance + 1.0,
            tf.where(distance < 2.0, ((-0.5 * distance + 2.5) * distance - 4.0) * distance + 2.0,
                     tf.zeros_like(distance)),
        )
    else:
        weights = tf.maximum(1.0 - distance, 0.0)
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def _logits(outputs):
    return outputs["logits"] if isinstance(outputs, dict) else outputs


def _per_channel(values, channels, name):
    values = [float(v) for v in (values if hasattr(values, "__len__") else [values])]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(
            f"Expected 1 or {channels} values for `{name}` (the model takes {channels} "
            f"channels). Received: {name}={values!r}"
        )
    return values


def _write_saved_model(model, path, settings, class_names, top_k):
    import tensorflow as tf
    from keras.export import ExportArchive

    height, width = settings["image_size"]
    channels = settings["channels"]
    archive = ExportArchive()
    model_fn = archive.track_and_add_endpoint(
        "logits", model,
        input_signature=[tf.TensorSpec((None, height, width, channels), tf.float32)],
    )

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, channels), tf.uint8,
                                                name="images")])
    def serve(images):
        logits = _logits(model_fn(preprocess(images, settings)))
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        k = min(top_k, int(probabilities.shape[-1]))
        top = tf.math.top_k(probabilities, k=k)
        outputs = {
            "probabilities": probabilities,
            "top_classes": top.indices,
            "top_probabilities": top.values,
        }
        if class_names is not None:
            # Built inside the function: a captured constant would become an
            # ONNX graph input.
            outputs["top_names"] = tf.gather(tf.constant(class_names), top.indices)
        return outputs

    archive.add_endpoint("serve", serve)
    if os.path.exists(path):
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    archive.write_out(path, verbose=False)
    return serve


def _quantization_modes(model):
    """The quantization modes of `model`'s layers (Keras' `model.quantize`), sorted."""
    modes = {getattr(layer.dtype_policy, "quantization_mode", None)
             for layer in getattr(model, "_flatten_layers", lambda: [])()}
    return sorted(mode for mode in modes if mode)


def _quantized_copy(model, mode):
    """A copy of `model` (same class, config and weights) quantized by Keras."""
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    copy.quantize(mode)
    return copy


def _write_litert(saved_model, path, quantize=None):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=["serve"])
    if quantize:
        # Dynamic-range quantization: int8 weights, activations quantized per call.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    flatbuffer = converter.convert()
    _write_atomically(path, flatbuffer)


def _write_onnx(serve, path, quantize=None, workdir=None):
    import numpy as np
    import tf2onnx

    def erfc(ctx, node, name, args):
        # TensorFlow's exact GELU uses Erfc, which ONNX lacks: 1 - Erf(x).
        erf = ctx.make_node("Erf", [node.input[0]])
        one = ctx.make_const(f"{name}/one", np.array(1.0, np.float32))
        node.type = "Sub"
        ctx.replace_inputs(node, [one.output[0], erf.output[0]])

    proto, _ = tf2onnx.convert.from_function(
        serve, input_signature=serve.input_signature, opset=17,
        custom_op_handlers={"Erfc": (erfc, [])},
    )
    if not quantize:
        _write_atomically(path, proto.SerializeToString())
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path = os.path.join(workdir, "float.onnx")
    int8_path = os.path.join(workdir, "int8.onnx")
    with open(float_path, "wb") as f:
        f.write(proto.SerializeToString())
    # 7-bit weights (`reduce_range`): onnxruntime's u8s8 kernels on CPUs without VNNI
    # (AVX2, AVX512 before VNNI) add pairs of products in saturating int16, which
    # 8-bit weights overflow. Measured on the digits preset, AVX2: max |p_int8 -
    # p_float| 0.112 with 8 bits (0.59 per channel, top-1 -3.4 points), 0.033 with 7
    # (what a VNNI CPU computes too: without saturation the integer sums are exact).
    quantize_dynamic(float_path, int8_path, weight_type=QuantType.QInt8, reduce_range=True)
    with open(int8_path, "rb") as f:
        _write_atomically(path, f.read())


def _write_atomically(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=folder, suffix=".partial")
    with os.fdopen(handle, "wb") as f:
        f.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(partial, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from a server user
    os.replace(partial, path)


def _require(module, what):
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"{what} needs the `{module}` package: pip install \"keras_spvit[export]\"."
        ) from None
