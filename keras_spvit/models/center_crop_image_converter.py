import numbers

import keras
import numpy as np
from keras import ops
from keras_hub.layers import ImageConverter
from keras_hub.src.utils.tensor_utils import in_tf_function

from keras_spvit.models.image_inputs import check_converter_images
from keras_spvit.models.naming import default_name
from keras_spvit.utils.preprocessing import (
    center_crop_offset,
    eval_resized_shape,
    eval_resized_shape_tf,
)
from keras_spvit.utils.validation import check_crop_pct


@keras.saving.register_keras_serializable(package="keras_spvit")
class CenterCropImageConverter(ImageConverter):
    """timm's evaluation transform as a keras-hub `ImageConverter`.

    With `crop_pct` set, images are resized so that their shorter side is
    `floor(size / crop_pct)` (aspect ratio kept; for a non-square
    `image_size` each side is scaled by `1 / crop_pct`), then the central
    `image_size` window is cut out. This is the transform the released
    SP-ViT / LV-ViT / Refiner models were evaluated with (bicubic, crop_pct
    0.9 or 1.0 by variant). Pixel values in `[0, 255]` are then normalised
    with `mean` and `std`, given for pixels in `[0, 1]` as in timm, i.e.
    `(x / 255 - mean) / std`.

    With `crop_pct=None` it behaves like keras-hub's `ImageConverter`
    (resize to `image_size`, cropping to its aspect ratio).

    Images are `(batch, height, width, channels)` or one `(height, width,
    channels)` image, channels last (grey images may have 1 channel); any
    other shape, e.g. `(batch, 8, 8)` without a channel axis, raises a
    one-line `ValueError` naming the shape.

    Resizing runs on the active backend (TensorFlow inside `tf.data`). The
    bicubic kernels differ slightly between backends and from PIL's, so
    preprocessed images agree across backends to interpolation accuracy, not
    bit for bit; the model weights and outputs do not depend on it.

    Each model family has a subclass naming its backbone
    (`SPViTImageConverter`, `RefinedViTImageConverter`,
    `PSViTImageConverter`), so `keras_hub.layers.ImageConverter.from_preset`
    finds it.

    Args:
        image_size: `(height, width)` of the output, or `None` (no resize).
        crop_pct: float in `(0, 1]`, or `None`. Fraction of the resized
            image kept by the center crop (see above).
        mean: per-channel means for `[0, 1]` pixels, or `None`.
        std: per-channel standard deviations for `[0, 1]` pixels, or `None`.
            `mean` and `std` go together and exclude `scale` / `offset`.
        scale: as in `ImageConverter`, when `mean` / `std` are not given.
        offset: as in `ImageConverter`, when `mean` / `std` are not given.
        interpolation: resize interpolation (`"bicubic"`).
        antialias: bool. Antialias when downsampling, as PIL does (`True`).
        **kwargs: other `keras_hub.layers.ImageConverter` arguments.

    Example:

    >>> converter = CenterCropImageConverter(
    ...     image_size=(224, 224), crop_pct=0.9,
    ...     mean=IMAGENET_MEAN, std=IMAGENET_STD,
    ... )
    >>> converter(np.zeros((2, 300, 400, 3), "uint8")).shape
    (2, 224, 224, 3)
    """

    def __init__(
        self,
        image_size=None,
        crop_pct=None,
        mean=None,
        std=None,
        scale=None,
        offset=None,
        interpolation="bicubic",
        antialias=True,
        **kwargs,
    ):
        if crop_pct is not None:
            crop_pct = check_crop_pct(crop_pct)
            if image_size is None:
                raise ValueError(
                    "`crop_pct` needs an `image_size` to crop to. Received: "
                    f"crop_pct={crop_pct}, image_size=None"
                )
        if (mean is None) != (std is None):
            raise ValueError(
                f"Pass both `mean` and `std`, or neither. Received: mean={mean!r}, std={std!r}"
            )
        if mean is not None:
            if scale is not None or offset is not None:
                raise ValueError(
                    "Pass either `mean` / `std` or `scale` / `offset`, not both. "
                    f"Received: mean={mean!r}, std={std!r}, scale={scale!r}, offset={offset!r}"
                )
            mean = _per_channel(mean, "mean")
            std = _per_channel(std, "std")
            if min(std) <= 0:
                raise ValueError(f"Expected positive values for `std`. Received: std={std!r}")
            scale = [1.0 / (255.0 * s) for s in std]
            offset = [-m / s for m, s in zip(mean, std)]
        family = getattr(type(self).backbone_cls, "family", None)
        kwargs["name"] = default_name(kwargs.get("name"), family, "image_converter")
        super().__init__(
            image_size=image_size,
            scale=scale,
            offset=offset,
            interpolation=interpolation,
            antialias=antialias,
            **kwargs,
        )
        self.crop_pct = crop_pct
        self.mean = mean
        self.std = std

    def check_images(self, images):
        """Raises a one-line `ValueError` naming the shape if `images` cannot be converted.

        Args:
            images: a batch `(batch, height, width, channels)` or one image
                (channels last unless `data_format="channels_first"`);
                objects without a shape pass unchecked.

        Example:

        >>> SPViTImageConverter(image_size=(32, 32)).check_images(np.zeros((5, 8, 8)))
        Traceback (most recent call last):
        ValueError: SPViTImageConverter takes images shaped (batch, height, width, 3) ...
        """
        if isinstance(images, dict):
            return
        channels = len(self.mean) if self.mean is not None else _channels(self.scale)
        check_converter_images(
            images, type(self).__name__, channels, self.data_format == "channels_first"
        )

    def __call__(self, *args, **kwargs):
        # Checked before Keras' call machinery, which would wrap the message.
        if args and not isinstance(args[0], tuple):
            self.check_images(args[0])
        return super().__call__(*args, **kwargs)

    def _call_python(self, inputs):
        if self.crop_pct is None or self.image_size is None:
            return super()._call_python(inputs)
        if isinstance(inputs, dict):
            raise TypeError(
                f"{type(self).__name__} with `crop_pct` takes images only, not "
                "bounding boxes. Received a dict."
            )
        if isinstance(inputs, (list, tuple)):
            inputs = np.asarray(inputs)
        if in_tf_function():
            x = self._resize_and_crop_tf(inputs)
        else:
            x = self._resize_and_crop(ops.convert_to_tensor(inputs))
        if self.scale is not None:
            scale = self._expand_non_channel_dims(self.scale, x)
            x, scale = self._convert_types(x, scale, self.compute_dtype)
            x = x * scale
        if self.offset is not None:
            offset = self._expand_non_channel_dims(self.offset, x)
            x, offset = self._convert_types(x, offset, x.dtype)
            x = x + offset
        return x

    def _spatial_axes(self, rank):
        if self.data_format == "channels_first":
            return rank - 2, rank - 1
        return rank - 3, rank - 2

    def _resize_and_crop(self, images):
        rank = len(images.shape)
        h_axis, w_axis = self._spatial_axes(rank)
        height, width = int(images.shape[h_axis]), int(images.shape[w_axis])
        new_h, new_w = eval_resized_shape(height, width, self.image_size, self.crop_pct)
        images = ops.cast(images, self.compute_dtype)
        images = ops.image.resize(
            images,
            (new_h, new_w),
            interpolation=self.interpolation,
            antialias=self.antialias,
            data_format=self.data_format,
        )
        target_h, target_w = self.image_size
        top = center_crop_offset(new_h, target_h)
        left = center_crop_offset(new_w, target_w)
        index = [slice(None)] * rank
        index[h_axis] = slice(top, top + target_h)
        index[w_axis] = slice(left, left + target_w)
        return images[tuple(index)]

    def _resize_and_crop_tf(self, images):
        """The same inside `tf.data` / `tf.function`, where sizes may be dynamic."""
        import tensorflow as tf

        images = tf.convert_to_tensor(images)
        channels_first = self.data_format == "channels_first"
        if channels_first:
            perm = [0, 2, 3, 1] if images.shape.rank == 4 else [1, 2, 0]
            images = tf.transpose(images, perm)
        shape = tf.shape(images)
        new_h, new_w = tf.unstack(
            eval_resized_shape_tf(shape[-3], shape[-2], self.image_size, self.crop_pct)
        )
        target_h, target_w = self.image_size
        images = tf.image.resize(
            tf.cast(images, "float32"),
            tf.cast(tf.stack([new_h, new_w]), "int32"),
            method=self.interpolation,
            antialias=self.antialias,
        )
        top = tf.cast(center_crop_offset(new_h, target_h), "int32")
        left = tf.cast(center_crop_offset(new_w, target_w), "int32")
        images = images[..., top : top + target_h, left : left + target_w, :]
        images = tf.cast(images, self.compute_dtype)
        if channels_first:
            perm = [0, 3, 1, 2] if images.shape.rank == 4 else [2, 0, 1]
            images = tf.transpose(images, perm)
        return images

    def get_config(self):
        config = super().get_config()
        config.update({"crop_pct": self.crop_pct, "mean": self.mean, "std": self.std})
        if self.mean is not None:
            # Derived from mean / std; saving both would over-specify.
            config.update({"scale": None, "offset": None})
        return config


def _channels(scale):
    """Channels a per-channel `scale` list implies, or `None` for a scalar / no scale."""
    if scale is None or np.ndim(scale) == 0 or len(scale) == 1:
        return None
    return len(scale)


def _per_channel(values, name):
    if isinstance(values, numbers.Real):
        values = (values,)
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected a number or a list of numbers for `{name}`. Received: {name}={values!r}"
        ) from None
    if not values:
        raise ValueError(f"Expected at least one value for `{name}`. Received: {name}={values!r}")
    return values
