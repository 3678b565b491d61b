import keras
from keras_hub.models import Backbone

from keras_spvit.models.garbage_collection import collect_garbage_once
from keras_spvit.models.image_inputs import check_model_images, refuse_attention_scores
from keras_spvit.models.preset_loading import backbone_from_preset


class ResizableBackbone(Backbone):
    """Base of the keras_spvit backbones: a keras-hub `Backbone` whose presets
    load at any resolution.

    `from_preset(preset, image_shape=...)` builds the backbone for the new
    image shape and fills it with the preset's weights, the learned position
    embedding resampled to the new patch grid with PyTorch's bicubic kernel
    (in numpy, so identical on every backend). Spatial priors and PosCNNs
    carry over unchanged. Everything else is keras-hub's: `save_to_preset`,
    registered preset names, `hf://` and `kaggle://` handles, local folders.

    Subclasses need `image_shape`, `patch_size` and a `position_embedding`
    layer.

    Calling a backbone checks the images' shape (one line naming it) and
    refuses `return_attention_scores` (a `TypeError` pointing to
    `keras_spvit.attention_maps`, which returns every block's map).

    Example:

    >>> backbone = SPViTBackbone.from_preset("./spvit_s_224", image_shape=(384, 384, 3))
    """

    def __call__(self, *args, **kwargs):
        refuse_attention_scores(kwargs, f"Calling the backbone {self.name!r}")
        image_shape = getattr(self, "image_shape", None)
        if args and image_shape is not None:
            check_model_images(args[0], image_shape, f"The backbone {self.name!r}")
        return super().__call__(*args, **kwargs)

    def quantize(self, mode=None, config=None, filters=None, **kwargs):
        """Keras' `Model.quantize`, with one garbage collection at the end
        instead of one per quantized layer (see `collect_garbage_once`).

        Args:
            mode: as in `keras.Model.quantize` (`"int8"`, `"float8"`, ...).
            config: as in `keras.Model.quantize`.
            filters: as in `keras.Model.quantize`.
            **kwargs: as in `keras.Model.quantize`.

        Example:

        >>> backbone.quantize("int8")
        """
        with collect_garbage_once():
            return super().quantize(mode, config=config, filters=filters, **kwargs)

    def default_lora_layer_names(self):
        """The attention projections LoRA reaches by default: `qk`, `v`
        (spatial-prior attention), `qkv` (vanilla and shared attention) and
        `proj` (every attention's output projection).

        Example:

        >>> backbone.default_lora_layer_names()
        ['qk', 'v', 'qkv', 'proj']
        """
        return ["qk", "v", "qkv", "proj"]

    def enable_lora(self, rank, target_layer_names=None):
        """keras-hub's `Backbone.enable_lora`, on Dense layers only.

        Freezes every backbone weight (biases included: only the adapters
        train, so keras-hub's adapter file holds everything that changed) and
        adds rank-`rank` adapters to the Dense layers named in `target_layer_names` (default
        `default_lora_layer_names()`). Convolutions are left out even when
        their name matches (the stem's convolution is also called `proj`).
        `save_lora_weights` / `load_lora_weights` are keras-hub's; saving the
        model (`.keras`, presets) stores the kernels with the adapters merged.

        Args:
            rank: int >= 1, the rank of the adapters.
            target_layer_names: optional list of layer names.

        Example:

        >>> model = SPViTImageClassifier.from_preset("spvit_tiny_digits", num_classes=2)
        >>> model.backbone.enable_lora(4)   # then compile and fit: adapters and head train
        """
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"Expected an int >= 1 for `rank`. Received: rank={rank!r}")
        names = set(target_layer_names or self.default_lora_layer_names())
        self.trainable = True
        self._lora_enabled_layers = []
        self._lora_rank = rank
        for layer in self._flatten_layers(include_self=False):
            layer.trainable = False
        # Indexed as keras-hub's save/load_lora_weights index them.
        layers = [layer for layer in self._flatten_layers(include_self=False) if layer.weights]
        for index, layer in enumerate(layers):
            if layer.name in names and isinstance(layer, keras.layers.Dense):
                layer.trainable = True
                layer.enable_lora(rank)
                if layer.bias is not None:
                    # Only the adapters train: keras-hub's adapter file holds
                    # them alone, so a trained bias would be lost there.
                    layer.bias.trainable = False
                self._lora_enabled_layers.append(index)
        if not self._lora_enabled_layers:
            raise ValueError(
                f"No Dense layer of {self.name!r} is named in {sorted(names)}: nothing to adapt."
            )

    def merge_lora(self):
        """Folds the LoRA adapters into their kernels in float32 and removes them.

        Keras' own save of a LoRA layer merges in the compute dtype: under
        `mixed_bfloat16` every adapted kernel would be stored rounded to
        bfloat16. After this the backbone is a plain one (adapters gone, all
        weights frozen as LoRA left them); `keras-spvit train --lora` calls it
        before writing `model.keras`.

        Example:

        >>> model.backbone.enable_lora(4)
        >>> model.fit(...)
        >>> model.backbone.merge_lora()
        >>> model.save("merged.keras")
        """
        from keras import ops

        layers = [layer for layer in self._flatten_layers(include_self=False) if layer.weights]
        for index in getattr(self, "_lora_enabled_layers", []):
            layer = layers[index]
            delta = ops.matmul(ops.cast(layer.lora_kernel_a, "float32"),
                               ops.cast(layer.lora_kernel_b, "float32"))
            layer._kernel.assign(ops.add(ops.cast(layer._kernel, "float32"),
                                         (layer.lora_alpha / layer.lora_rank) * delta))
            layer.lora_kernel_b.assign(ops.zeros(layer.lora_kernel_b.shape, "float32"))
            layer.lora_enabled = False
        self._lora_enabled_layers = []

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Instantiates the backbone from a preset, at any resolution.

        Args:
            preset: a registered preset name, a hub handle (`"hf://..."`,
                `"kaggle://..."`) or a local preset folder.
            load_weights: bool. Load the saved weights (`True`) or keep a
                random initialization.
            **kwargs: backbone arguments to override, e.g. `image_shape`
                (the position embedding is resampled) or `dtype`.

        Returns:
            The backbone.

        Example:

        >>> backbone = SPViTBackbone.from_preset("./spvit_tiny_digits")
        """
        return backbone_from_preset(super().from_preset, preset, load_weights, **kwargs)
