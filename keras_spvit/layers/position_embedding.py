import keras
from keras import ops

from keras_spvit.layers.initializers import truncated_normal


@keras.saving.register_keras_serializable(package="keras_spvit")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned absolute position embedding `(1, tokens, dim)`.

    The number of tokens is fixed at build time. To run a trained model at
    another resolution, resample the embedding with
    `keras_spvit.utils.resample.resample_position_embedding` when loading.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, tokens, dim)` tensor with a known token count.

    Example:

    >>> PositionEmbedding()(np.zeros((2, 16, 64), "float32")).shape
    (2, 16, 64)
    """

    def build(self, input_shape):
        if input_shape[1] is None:
            raise ValueError(
                f"{self.name} needs a known number of tokens. Received input "
                f"shape {tuple(input_shape)}."
            )
        self.embedding = self.add_weight(
            shape=(1, input_shape[1], input_shape[2]),
            initializer=truncated_normal(),
            name="embedding",
        )

    def call(self, inputs):
        return inputs + ops.cast(self.embedding, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape
