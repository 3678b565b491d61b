import re
import warnings

import keras
from keras_hub.models import ImageClassifier
from keras_hub.src.models.task import Task

from keras_spvit.layers.token_labeling_head import TokenLabelingHead
from keras_spvit.models.center_crop_image_converter import CenterCropImageConverter
from keras_spvit.models.garbage_collection import collect_garbage_once
from keras_spvit.models.image_inputs import check_model_images, refuse_attention_scores
from keras_spvit.models.naming import default_name
from keras_spvit.models.preset_loading import task_from_preset


@keras.saving.register_keras_serializable(package="keras_spvit")
class TokenLabelingImageClassifier(ImageClassifier):
    """Image classifier with LV-ViT's token-labeling head, for any backbone
    whose output is `(batch, 1 + patches, dim)` with the class token first.

    Family classifiers (`SPViTImageClassifier`, `RefinedViTImageClassifier`)
    only name their backbone class.

    The prediction is `head(cls) + aux_weight * max over patches of
    aux_head(patches)`, as in the released models. With `return_dense=True`
    the model returns a dict with `"logits"`, `"class_logits"` and
    `"aux_logits"` (`(batch, patches, classes)`), so the token-labeling loss
    can be applied to both heads during training.

    Args:
        backbone: a backbone of the family.
        num_classes: int. Number of classes.
        preprocessor: optional `keras_hub` preprocessor (or `None`; inputs are
            then channels-last images already normalised). It runs in
            `predict` / `fit` / `evaluate` only; calling the model directly
            always takes normalised images.
        aux_weight: float. Weight of the pooled aux logits (0.5 released).
        return_dense: bool. Return both heads' logits (see above).
        head_dtype: optional dtype policy of the heads; defaults to the
            backbone's. Logits are float32 either way.
        **kwargs: standard `keras_hub.models.Task` arguments; `name`
            defaults to the family's, e.g. `"spvit_image_classifier"` (the
            builders name it after themselves: `"spvit_tiny"`).

    Example:

    >>> backbone = SPViTBackbone(
    ...     embed_dim=64, depth=4, num_heads=2, spatial_prior_blocks=2,
    ...     image_shape=(64, 64, 3),
    ... )
    >>> classifier = SPViTImageClassifier(backbone, num_classes=10)  # a subclass
    >>> classifier.predict(np.zeros((2, 64, 64, 3), "float32")).shape
    (2, 10)
    """

    backbone_cls = None
    preprocessor_cls = None

    def __init__(
        self,
        backbone,
        num_classes,
        preprocessor=None,
        aux_weight=0.5,
        return_dense=False,
        head_dtype=None,
        **kwargs,
    ):
        head_dtype = head_dtype or backbone.dtype_policy
        kwargs["name"] = default_name(
            kwargs.get("name"), getattr(backbone, "family", None), "image_classifier"
        )

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.head = TokenLabelingHead(
            num_classes,
            aux_weight=aux_weight,
            return_dense=return_dense,
            dtype=head_dtype,
            name="token_labeling_head",
        )

        # === Functional Model ===
        # `Task.__init__` compiles with defaults that depend on the outputs.
        self.return_dense = return_dense
        inputs = self.backbone.input
        outputs = self.head(self.backbone(inputs))
        Task.__init__(self, inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.aux_weight = aux_weight
        self.head_dtype = head_dtype

    def __call__(self, *args, **kwargs):
        refuse_attention_scores(kwargs, f"Calling {self.name!r}")
        if args:
            check_model_images(
                args[0], self.backbone.image_shape,
                f"{self.name!r} called directly (its preprocessor runs in predict/fit/evaluate)",
            )
        return super().__call__(*args, **kwargs)

    def quantize(self, mode=None, config=None, filters=None, **kwargs):
        """Keras' `Model.quantize` on the backbone; preprocessor and heads stay as they are.

        The preprocessor holds no weights to quantize, and its layers (e.g.
        the converter's `Resizing`) are built only when images first go
        through it: Keras would refuse them as unbuilt. The heads keep their
        `head_dtype` (a small share of the compute; the classifier's config
        records that dtype, so quantized heads would not reload). `filters`
        keeps Keras' meaning (regex, list of regexes or callable) for the
        backbone's layers.

        Args:
            mode: as in `keras.Model.quantize` (`"int8"`, `"float8"`, ...).
            config: as in `keras.Model.quantize`.
            filters: as in `keras.Model.quantize`.
            **kwargs: as in `keras.Model.quantize`.

        Example:

        >>> model = SPViTImageClassifier.from_preset("spvit_tiny_digits")
        >>> model.quantize("int8")
        """
        skipped = {id(layer) for layer in self.head._flatten_layers()}
        if self.preprocessor is not None:
            skipped |= {id(layer) for layer in self.preprocessor._flatten_layers()}

        def quantizable(layer):
            # Only layers that implement quantization (Dense, EinsumDense, ...):
            # Keras warns once per other layer otherwise.
            if id(layer) in skipped or type(layer).quantize is keras.layers.Layer.quantize:
                return False
            if filters is None:
                return True
            if isinstance(filters, str):
                return bool(re.search(filters, layer.name))
            if isinstance(filters, (list, tuple)):
                return any(re.search(pattern, layer.name) for pattern in filters)
            return filters(layer)

        with collect_garbage_once():  # Keras collects once per quantized Dense otherwise
            return super().quantize(mode, config=config, filters=quantizable, **kwargs)

    def check_inputs(self, x):
        """Raises a one-line `ValueError` if `x` cannot reach the model.

        With a keras_spvit preprocessor, `x` must be images it converts
        (`(batch, height, width, channels)`); without one, normalised
        images shaped `(batch,) + backbone.image_shape`. Datasets and other
        inputs without a shape pass unchecked.

        Args:
            x: the inputs of `predict` / `fit` / `evaluate`.

        Example:

        >>> model.check_inputs(np.zeros((5, 8, 8), "uint8"))
        Traceback (most recent call last):
        ValueError: SPViTImageConverter takes images shaped (batch, height, width, 3) ...
        """
        if self.preprocessor is None:
            check_model_images(
                x, self.backbone.image_shape, f"{self.name!r} (no preprocessor attached)"
            )
            return
        converter = getattr(self.preprocessor, "image_converter", None)
        if isinstance(converter, CenterCropImageConverter):
            converter.check_images(x)

    def predict(self, x, *args, **kwargs):
        """Keras' `predict`; the inputs' shape is checked first (see `check_inputs`).

        `return_attention_scores` is refused with a pointer to
        `keras_spvit.attention_maps(model, images)`.
        """
        refuse_attention_scores(kwargs, f"{self.name}.predict()")
        self.check_inputs(x)
        return super().predict(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        """Keras' `evaluate`; the inputs' shape is checked first (see `check_inputs`)."""
        self.check_inputs(x)
        return super().evaluate(x, *args, **kwargs)

    def fit(self, x=None, *args, **kwargs):
        """Keras' `fit`; the inputs' shape is checked first (see `check_inputs`).

        On TensorFlow without a distribution strategy the optimizer's variables
        are created before the training step is traced, as Keras does under a
        strategy: created inside the first trace, they make TensorFlow trace the
        step a second time (half of a small model's first-epoch time). The same
        variables, the same values: only the trace is saved.
        """
        self.check_inputs(x)
        _build_optimizer_before_tracing(self)
        return super().fit(x, *args, **kwargs)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Instantiates a classifier from a preset, at any resolution and class count.

        keras-hub's `from_preset`, plus: `image_shape` builds the model for a
        new resolution with the position embedding resampled (bicubic, in
        numpy, identical on every backend); a `num_classes` other than the
        preset's keeps the backbone and starts fresh heads, with one warning
        saying so (the same `num_classes` keeps the trained heads). The
        preset's preprocessor is attached, its image size following
        `image_shape`.

        Args:
            preset: a registered preset name, a hub handle (`"hf://..."`,
                `"kaggle://..."`) or a local preset folder.
            load_weights: bool. Load the saved weights.
            **kwargs: classifier or backbone arguments to override, e.g.
                `num_classes`, `image_shape`, `dtype`, `return_dense`.

        Returns:
            The classifier.

        Example:

        >>> model = SPViTImageClassifier.from_preset(
        ...     "./spvit_s_224", image_shape=(384, 384, 3), num_classes=10
        ... )
        """
        return task_from_preset(cls, super().from_preset, preset, load_weights, **kwargs)

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """Like `ImageClassifier.compile`; dense models train `class_logits`.

        With `return_dense=True` the automatic loss is sparse cross-entropy on
        `"class_logits"` and no metric is added; pass `y` as a dict keyed by
        output name (add `metrics={"logits": ...}` with a `y["logits"]`). The token-label loss for `"aux_logits"` is passed as
        part of `loss`.
        """
        if getattr(self, "return_dense", False):
            if loss == "auto":
                loss = {
                    "class_logits": keras.losses.SparseCategoricalCrossentropy(
                        from_logits=True
                    )
                }
            if metrics == "auto":
                # Keras metrics need a target for every output they watch;
                # none is assumed for the dense outputs.
                metrics = None
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Recompiles a loaded classifier as it was saved (optimizer, loss, metrics).

        Keras skips this for a model whose `compile` is overridden (keras-hub's
        tasks and this one), so a `.keras` round trip came back compiled with
        the default Adam, unbuilt, and the trained optimizer's state was dropped
        with a warning. Here the saved optimizer is rebuilt, so Keras loads its
        state next and `fit` continues where it stopped. A configuration that
        cannot be rebuilt (an object not registered for serialization) leaves
        the classifier as Keras would, with a warning naming the reason.
        """
        try:
            config = keras.saving.deserialize_keras_object(config)
        except (TypeError, ValueError) as error:
            warnings.warn(
                f"{self.name}: the saved compile configuration could not be restored "
                f"({error}); call `compile()` after loading to train it further.",
                stacklevel=2,
            )
            return
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        config = Task.get_config(self)
        config.update(
            {
                "num_classes": self.num_classes,
                "aux_weight": self.aux_weight,
                "return_dense": self.return_dense,
                "head_dtype": keras.dtype_policies.serialize(self.head_dtype),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("head_dtype"), dict):
            config["head_dtype"] = keras.dtype_policies.deserialize(config["head_dtype"])
        return super().from_config(config)


def _build_optimizer_before_tracing(model):
    """Builds `model.optimizer` for its trainable variables where Keras' TensorFlow
    `fit` would build it inside its first `tf.function` trace (no strategy set)."""
    if keras.backend.backend() != "tensorflow":
        return
    if getattr(model, "_distribute_strategy", 0) is not None:  # Keras builds it itself
        return
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built and model.built:
        optimizer.build(model.trainable_variables)
