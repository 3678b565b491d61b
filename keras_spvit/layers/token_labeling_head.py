import keras
from keras import ops

from keras_spvit.layers.initializers import dense_kwargs
from keras_spvit.utils.validation import check_non_negative_int, check_positive_int


@keras.saving.register_keras_serializable(package="keras_spvit")
class TokenLabelingHead(keras.layers.Layer):
    """LV-ViT's token-labeling head: a class head plus a dense aux head.

    `head` classifies the class token and `aux_head` every patch token. The
    prediction is `head(cls) + aux_weight * max over tokens of aux_head(patches)`,
    a per-class max, as in the released models' inference. Logits are float32
    under any dtype policy.

    Args:
        num_classes: int. Number of classes.
        aux_weight: float. Weight of the pooled aux logits in the prediction
            (0.5 in the release).
        return_dense: bool. If `True`, the layer returns a dict with
            `"logits"`, `"class_logits"` `(batch, classes)` and `"aux_logits"`
            `(batch, patches, classes)`, so a token-label loss can use both
            heads; if `False`, only the combined logits.
        num_prefix_tokens: int. Class token(s) at the front of the sequence;
            the first one feeds `head`, the rest are ignored.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, num_prefix_tokens + patches, dim)` features.

    Example:

    >>> head = TokenLabelingHead(num_classes=10)
    >>> head(np.zeros((2, 17, 64), "float32")).shape
    (2, 10)
    """

    def __init__(
        self, num_classes, aux_weight=0.5, return_dense=False, num_prefix_tokens=1, **kwargs
    ):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.aux_weight = float(aux_weight)
        self.return_dense = bool(return_dense)
        self.num_prefix_tokens = check_non_negative_int(
            num_prefix_tokens, "num_prefix_tokens"
        )
        if self.num_prefix_tokens < 1:
            raise ValueError(
                "TokenLabelingHead needs a class token at the front of the "
                f"sequence. Received: num_prefix_tokens={num_prefix_tokens}"
            )

    def build(self, input_shape):
        dense = dict(dtype=self.dtype_policy, **dense_kwargs())
        self.head = keras.layers.Dense(self.num_classes, name="head", **dense)
        self.head.build((input_shape[0], input_shape[-1]))
        self.aux_head = keras.layers.Dense(self.num_classes, name="aux_head", **dense)
        tokens = input_shape[1]
        patches = None if tokens is None else tokens - self.num_prefix_tokens
        self.aux_head.build((input_shape[0], patches, input_shape[-1]))

    def call(self, inputs):
        class_logits = ops.cast(self.head(inputs[:, 0]), "float32")
        aux_logits = ops.cast(
            self.aux_head(inputs[:, self.num_prefix_tokens :]), "float32"
        )
        logits = class_logits + self.aux_weight * ops.max(aux_logits, axis=1)
        if self.return_dense:
            return {
                "logits": logits,
                "class_logits": class_logits,
                "aux_logits": aux_logits,
            }
        return logits

    def compute_output_spec(self, inputs):
        # The logits are float32 under any policy; Keras' default spec would
        # give them the compute dtype.
        shapes = self.compute_output_shape(tuple(inputs.shape))
        return keras.tree.map_shape_structure(
            lambda shape: keras.KerasTensor(shape, dtype="float32"), shapes
        )

    def compute_output_shape(self, input_shape):
        batch, tokens = input_shape[0], input_shape[1]
        logits = (batch, self.num_classes)
        if not self.return_dense:
            return logits
        patches = None if tokens is None else tokens - self.num_prefix_tokens
        return {
            "logits": logits,
            "class_logits": logits,
            "aux_logits": (batch, patches, self.num_classes),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "aux_weight": self.aux_weight,
                "return_dense": self.return_dense,
                "num_prefix_tokens": self.num_prefix_tokens,
            }
        )
        return config
