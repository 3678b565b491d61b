import keras
from keras import ops

from keras_spvit.utils.validation import check_rate


@keras.saving.register_keras_serializable(package="keras_spvit")
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops a whole residual branch per sample.

    During training each sample's input is zeroed with probability `rate` and
    the survivors are scaled by `1 / (1 - rate)`, so the expected output equals
    the input. At inference the layer is the identity. Random state lives in a
    `keras.random.SeedGenerator`, so the layer is safe under `jit_compile` on
    every backend.

    The noise, the keep rate and the rescaling are float32 under any dtype
    policy: in bfloat16 the keep rate 0.9 would round to 0.8984 and bias
    every kept branch by 0.2%. Inputs are rescaled in float32 and rounded
    once to their dtype.

    Args:
        rate: float in `[0, 1)`. Probability of dropping a sample's branch.
        seed: optional int, the seed of the layer's random generator.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: a tensor whose first axis is the batch.
        training: bool. Drops only when `True`.

    Example:

    >>> layer = DropPath(rate=0.1, seed=0)
    >>> y = layer(np.ones((4, 5, 8), "float32"), training=True)
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate(rate, "rate")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        # No weights depend on the input shape (as Keras' Dropout): built at
        # once, so `model.quantize()` works where the layer is never called
        # (rate 0 skips it).
        self.built = True

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = ops.convert_to_tensor(1.0 - self.rate, "float32")
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        noise = keras.random.uniform(shape, dtype="float32", seed=self.seed_generator)
        scale = ops.floor(noise + keep) / keep
        if inputs.dtype == scale.dtype:
            return inputs * scale
        return ops.cast(ops.cast(inputs, "float32") * scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config
