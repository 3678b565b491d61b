"""Initialisers shared by every layer, as in the released SP-ViT/LV-ViT code."""

import keras

# The released models draw Linear weights, the class token and position
# embeddings from a normal truncated at +-2 std with std 0.02, biases at zero.
TRUNCATED_NORMAL_STDDEV = 0.02


def truncated_normal():
    return keras.initializers.TruncatedNormal(stddev=TRUNCATED_NORMAL_STDDEV)


def dense_kwargs():
    return {"kernel_initializer": truncated_normal(), "bias_initializer": "zeros"}
