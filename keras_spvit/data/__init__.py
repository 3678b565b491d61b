"""tf.data input pipelines."""

from keras_spvit.data.digits import digits_dataset, load_digits

__all__ = ["digits_dataset", "load_digits"]
