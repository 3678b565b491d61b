"""Official checkpoints to keras-hub preset folders, checked after writing.

`convert_checkpoint` builds a named variant from a checkpoint (no torch
needed; see `load_official_weights`), attaches the released evaluation
preprocessing, writes a preset with `save_to_preset` and runs two checks:

- round trip (always): the preset reloaded from disk reproduces the
  converted model's logits on a random input. This proves the folder holds
  what was converted, not that the conversion is right: a wrong mapping that
  loads (two same-shape weights swapped) passes it.
- reference (when `reference=` is given): the reloaded preset reproduces
  logits the official PyTorch code computed on the same checkpoint (an
  `.npz` with `input`, NCHW as PyTorch takes it, and `logits`). This is
  the check that is independent of the writer.

The `keras-spvit convert` command is a thin wrapper around it.

The written folder loads with `<Family>ImageClassifier.from_preset(folder)`
or `<Builder>(weights=folder)` on any backend, and publishes with
`keras_hub.upload_preset("hf://user/name", folder)` (or a `kaggle://`
handle).
"""

import os
from dataclasses import dataclass

import keras
import numpy as np

from keras_spvit.models.image_classifier_preprocessor import default_preprocessor
from keras_spvit.zoo import psvit, refined_vit, spvit
from keras_spvit.zoo.builders import build_variant
from keras_spvit.zoo.families import family_of_variant

# The builder module of each family (the families themselves are declared in
# `keras_spvit.zoo.families`).
_BUILDER_MODULES = {module.__name__.rsplit(".", 1)[-1]: module for module in (spvit, refined_vit, psvit)}
DEFAULT_TOLERANCE = 1e-5
# Against the official code the converted tiny fixtures differ by <= 5e-6
# (tests/cli/test_convert.py); float32 sums over a full-size network's
# longer reductions round differently, so the default allows 20x that.
DEFAULT_REFERENCE_TOLERANCE = 1e-4


def generic_builder(family):
    """The generic builder function of a family (`keras_spvit.SPViT`, ...).

    Example:

    >>> generic_builder(family_of_variant("spvit_s")).__name__
    'SPViT'
    """
    return getattr(_BUILDER_MODULES[family.name], family.generic)


class VerificationError(RuntimeError):
    """The written preset fails the round-trip or the reference check."""


def load_reference(reference):
    """Reads official-code inputs and logits for the reference check.

    Args:
        reference: path of an `.npz` with `input` (`(N, 3, H, W)`, the
            network input as the official PyTorch model takes it, already
            normalized) and `logits` (`(N, classes)`, that model's eval
            output on it), or a `(input, logits)` pair of arrays.

    Returns:
        `(images, logits)`: float32 NHWC images and float32 logits.

    Example:

    >>> images, logits = load_reference("spvit_s_224_reference.npz")  # doctest: +SKIP
    """
    if isinstance(reference, (tuple, list)):
        images, logits = reference
    else:
        with np.load(os.fspath(reference)) as arrays:
            missing = {"input", "logits"} - set(arrays.files)
            if missing:
                raise ValueError(
                    f"reference {os.fspath(reference)!r} lacks {sorted(missing)}. Expected an "
                    "npz with 'input' (N, 3, H, W) and 'logits' (N, classes)."
                )
            images, logits = arrays["input"], arrays["logits"]
    images, logits = np.asarray(images, "float32"), np.asarray(logits, "float32")
    if images.ndim != 4 or images.shape[1] != 3 or logits.shape[:1] != images.shape[:1]:
        raise ValueError(
            f"reference input {images.shape} / logits {logits.shape}. Expected input "
            "(N, 3, H, W) and logits (N, classes) with the same N."
        )
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1)), logits


@dataclass
class ConversionReport:
    """What `convert_checkpoint` wrote and how the check went.

    Attributes:
        preset_dir: the folder written.
        variant: the variant converted.
        model_class: the classifier class name.
        image_shape: the model's input shape.
        num_classes: classes of its heads.
        parameter_count: number of weights.
        crop_pct: the preprocessing's center-crop fraction (or `None`).
        max_abs_difference: largest |logit difference| between the
            converted model and the preset reloaded from disk (round trip).
        tolerance: the bound it had to meet.
        reference_difference: largest |logit difference| between the
            reloaded preset and the official code's logits, or `None` when
            no reference was given.
        reference_tolerance: the bound that one had to meet.
    """

    preset_dir: str
    variant: str
    model_class: str
    image_shape: tuple
    num_classes: int
    parameter_count: int
    crop_pct: float
    max_abs_difference: float
    tolerance: float
    reference_difference: float = None
    reference_tolerance: float = DEFAULT_REFERENCE_TOLERANCE

    @property
    def round_trip_ok(self):
        """The reloaded preset reproduces the converted model."""
        return self.max_abs_difference <= self.tolerance

    @property
    def reference_ok(self):
        """`None` without a reference, else whether the official logits are reproduced."""
        if self.reference_difference is None:
            return None
        return self.reference_difference <= self.reference_tolerance

    @property
    def verified(self):
        """Every check that ran passed (see `checked_against_reference`)."""
        return self.round_trip_ok and self.reference_ok is not False

    @property
    def checked_against_reference(self):
        """Whether the conversion was compared with the official code's logits."""
        return self.reference_difference is not None

    def __str__(self):
        height, width, channels = self.image_shape
        lines = [
            f"Wrote {self.model_class} preset ({self.variant}, {self.parameter_count:,} "
            f"parameters, {height}x{width}x{channels} input, {self.num_classes} classes, "
            f"crop_pct {self.crop_pct}) to {self.preset_dir}",
            f"Round trip: reloaded from disk, the preset reproduces the converted model's "
            f"logits on a random input: max |difference| {self.max_abs_difference:.3g} "
            f"(tolerance {self.tolerance:g}): {'ok' if self.round_trip_ok else 'FAILED'}.",
        ]
        if self.checked_against_reference:
            lines.append(
                f"Reference: the preset reproduces the official code's logits: max "
                f"|difference| {self.reference_difference:.3g} (tolerance "
                f"{self.reference_tolerance:g}): {'ok' if self.reference_ok else 'FAILED'}."
            )
        else:
            lines.append(
                "Reference: not checked (the mapping itself is unverified; pass --reference "
                "with the official code's logits to check it)."
            )
        if not self.verified:
            lines.append("Status: FAILED.")
        elif self.checked_against_reference:
            lines.append("Status: verified against the official code.")
        else:
            lines.append("Status: written and reloaded; not verified against the official code.")
        return "\n".join(lines)


def convert_checkpoint(
    checkpoint,
    out_dir,
    variant,
    num_classes=None,
    image_size=None,
    crop_pct=None,
    prefer_ema=False,
    overrides=None,
    overwrite=False,
    seed=0,
    tolerance=DEFAULT_TOLERANCE,
    reference=None,
    reference_tolerance=DEFAULT_REFERENCE_TOLERANCE,
):
    """Converts a checkpoint to a keras-hub preset folder and checks it.

    Args:
        checkpoint: an official PyTorch checkpoint (`.pth`, `.pth.tar`), or
            any other weights a builder takes (a `.weights.h5` file, a preset
            folder or handle), e.g. to change a preset's resolution.
        out_dir: the preset folder to write.
        variant: a variant name, e.g. `"spvit_s"`, `"lvvit_m"`,
            `"refined_vit_s"` (see `keras_spvit.zoo.families.variant_names()`).
        num_classes: optional int. Classes of the heads; defaults to the
            checkpoint's. Another count keeps the backbone only.
        image_size: optional int or `(height, width)`. Defaults to the
            checkpoint's resolution; another one resamples the position
            embedding.
        crop_pct: optional float. Center-crop fraction of the preprocessing;
            defaults to the variant's (0.9 when the table has none).
        prefer_ema: bool. Convert the checkpoint's EMA weights if it has them.
        overrides: optional dict of architecture arguments replacing the
            variant's (e.g. `{"stem": "4_2", "patch_size": 16}`).
        overwrite: bool. Replace the files of an existing preset in `out_dir`.
        seed: int. Seed of the random verification input.
        tolerance: float. Largest round-trip logit difference accepted.
        reference: optional path of an `.npz` (or an `(input, logits)` pair)
            holding the official PyTorch model's eval logits on the same
            checkpoint (see `load_reference`). Without it the conversion's
            mapping is not checked, only the written folder.
        reference_tolerance: float. Largest difference from the reference
            logits accepted.

    Returns:
        A `ConversionReport`.

    Raises:
        VerificationError: if the reloaded preset's logits differ by more
            than `tolerance` from the converted model's, or by more than
            `reference_tolerance` from the reference logits.

    Example:

    >>> report = convert_checkpoint("spvit_s_224.pth", "spvit_s_imagenet", "spvit_s")
    >>> print(report)  # doctest: +SKIP
    """
    family = family_of_variant(variant)
    generic, table = generic_builder(family), family.variants
    out_dir = os.fspath(out_dir)
    if reference is not None:
        reference = load_reference(reference)
    if os.path.exists(os.path.join(out_dir, "config.json")) and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a preset (config.json); pass overwrite=True "
            "(--overwrite) to replace it."
        )
    image_shape = None
    if image_size is not None:
        height, width = (image_size, image_size) if np.ndim(image_size) == 0 else image_size
        image_shape = (int(height), int(width), 3)
    if crop_pct is None:
        crop_pct = table[variant]["info"].get("crop_pct")
    model = build_variant(
        generic,
        table,
        variant,
        num_classes=num_classes,
        image_shape=image_shape,
        weights=checkpoint,
        crop_pct=crop_pct,
        prefer_ema=prefer_ema,
        **(overrides or {}),
    )
    if model.preprocessor is None:
        model.preprocessor = default_preprocessor(model, crop_pct)
    model.save_to_preset(out_dir)

    images = np.random.default_rng(seed).normal(size=(2,) + tuple(model.backbone.image_shape))
    images = images.astype("float32")
    expected = _logits(model(images))
    reloaded = type(model).from_preset(out_dir)
    actual = _logits(reloaded(images))
    reference_difference = None
    if reference is not None:
        reference_images, reference_logits = reference
        if reference_images.shape[1:] != tuple(model.backbone.image_shape):
            raise ValueError(
                f"reference input is {reference_images.shape[1]}x{reference_images.shape[2]}. "
                f"Expected the converted model's {model.backbone.image_shape[0]}x"
                f"{model.backbone.image_shape[1]}."
            )
        outputs = _logits(reloaded(reference_images))
        if outputs.shape != reference_logits.shape:
            raise ValueError(
                f"reference logits {reference_logits.shape}. Expected {outputs.shape} "
                "(the converted model's classes)."
            )
        reference_difference = float(np.max(np.abs(outputs - reference_logits)))
    converter = model.preprocessor.image_converter if model.preprocessor else None
    report = ConversionReport(
        preset_dir=out_dir,
        variant=variant,
        model_class=type(model).__name__,
        image_shape=tuple(model.backbone.image_shape),
        num_classes=model.num_classes,
        parameter_count=model.count_params(),
        crop_pct=getattr(converter, "crop_pct", None),
        max_abs_difference=float(np.max(np.abs(actual - expected))),
        tolerance=tolerance,
        reference_difference=reference_difference,
        reference_tolerance=reference_tolerance,
    )
    if not report.verified:
        raise VerificationError(str(report))
    return report


def _logits(outputs):
    if isinstance(outputs, dict):
        outputs = outputs["logits"]
    return keras.ops.convert_to_numpy(outputs)
