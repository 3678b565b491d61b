import keras
from keras import ops

from keras_spvit.layers.initializers import truncated_normal


@keras.saving.register_keras_serializable(package="keras_spvit")
class ClassToken(keras.layers.Layer):
    """Prepends a learned class token to a token sequence.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, tokens, dim)` tensor.

    Returns:
        `(batch, tokens + 1, dim)`, the class token first.

    Example:

    >>> ClassToken()(np.zeros((2, 16, 64), "float32")).shape
    (2, 17, 64)
    """

    def build(self, input_shape):
        self.token = self.add_weight(
            shape=(1, 1, input_shape[-1]), initializer=truncated_normal(), name="token"
        )

    def call(self, inputs):
        batch = ops.shape(inputs)[0]
        token = ops.broadcast_to(
            ops.cast(self.token, inputs.dtype), (batch, 1, inputs.shape[-1])
        )
        return ops.concatenate([token, inputs], axis=1)

    def compute_output_shape(self, input_shape):
        batch, tokens, dim = input_shape
        return (batch, None if tokens is None else tokens + 1, dim)
