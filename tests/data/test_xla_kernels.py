"""keras_spvit/data/xla_kernels.py: the XLA-compiled kernels of the fast augmentation against
the TensorFlow kernels they replace, on the host CPU, the same in both RandAugment paths."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spvit.data import (
    rand_augment_colour,
    rand_augment_fast_geometry,
    xla_kernels,
)
from keras_spvit.data.rand_augment import RandAugment
from keras_spvit.data.rand_augment_geometry import _affine_matrix

# Pure TensorFlow (runs inside tf.data whatever the Keras backend): tested on TensorFlow.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="pure TensorFlow, backend-independent: tested on TensorFlow",
)

FILL = (7, 200, 33)


def _image(height=29, width=37, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (height, width, 3)), tf.float32)


def _f64(value):
    return tf.constant(value, tf.float64)


def _rotation_rows(degrees, height, width):
    matrix = _affine_matrix("Rotate", _f64(degrees), _f64(width), _f64(height))
    return rand_augment_fast_geometry._v3_rows(matrix), matrix


@pytest.mark.parametrize("degrees", [-27.3, 13.0, 30.0])
@pytest.mark.parametrize("shape", [(29, 37), (224, 224)])
def test_warp_equals_the_v3_warp_within_one_level(degrees, shape):
    # XLA's fused multiply-adds move a few values next to an integer by one level.
    image = _image(*shape, seed=1)
    rows, matrix = _rotation_rows(degrees, *shape)
    ours = xla_kernels.warp(image, rows, xla_kernels.fill_tensor(FILL)).numpy()
    v3 = rand_augment_fast_geometry._warp_image_fast(image, matrix, "bilinear", FILL).numpy()
    assert np.abs(ours - v3).max() <= 1.0
    assert (ours == v3).mean() > 0.99
    assert (ours == np.floor(ours)).all() and ours.min() >= 0 and ours.max() <= 255


def test_warp_brings_in_the_exact_fill_colour_outside():
    image = _image(40, 24, seed=2)
    rows, _ = _rotation_rows(30.0, 40, 24)
    out = xla_kernels.warp(image, rows, xla_kernels.fill_tensor(FILL)).numpy()
    assert out[0, 0].tolist() == list(FILL) and out[-1, -1].tolist() == list(FILL)


@pytest.mark.parametrize(
    "along_x, slope, offset", [(1.0, 0.27, -30.2), (0.0, -0.21, 4.7), (1.0, 0.0, 11.3),
                               (0.0, 0.0, -0.45), (1.0, 0.0, 500.0)]
)
def test_shift_gives_the_tensorflow_kernels_values(along_x, slope, offset):
    image = _image(seed=3)
    ours = xla_kernels.shift(
        image, _f64(along_x), _f64(slope), _f64(offset), xla_kernels.fill_tensor(FILL)
    )
    tf_kernel = rand_augment_fast_geometry._shift_images_fast(
        image[None], _f64([along_x]), _f64([slope]), _f64([offset]), FILL
    )[0]
    np.testing.assert_array_equal(ours.numpy(), tf_kernel.numpy())


@pytest.mark.parametrize("seed", [0, 4])
def test_auto_contrast_gives_the_tensorflow_kernels_values(seed):
    image = _image(seed=seed) * 0.5 + 40.0  # a narrow range: a real stretch
    ours = xla_kernels.auto_contrast(tf.floor(image))
    expected = rand_augment_colour._auto_contrast_batch(tf.floor(image)[None])[0]
    np.testing.assert_array_equal(ours.numpy(), expected.numpy())


def test_kernels_take_the_image_as_an_argument_and_run_on_the_cpu():
    # An image that XLA folds into the program as a constant (as
    # `tf.math.bincount`'s size makes it) means one compile per image.
    image = _image(seed=5)
    fill = xla_kernels.fill_tensor(FILL)
    rows, _ = _rotation_rows(10.0, 29, 37)
    calls = [
        (xla_kernels.warp, (image, rows, fill)),
        (xla_kernels.shift, (image, _f64(1.0), _f64(0.2), _f64(-3.0), fill)),
        (xla_kernels.auto_contrast, (image,)),
    ]
    for kernel, args in calls:
        hlo = kernel.compiled.experimental_get_compiler_ir(*args)(stage="hlo")
        entry = next(line for line in hlo.splitlines() if line.startswith("ENTRY"))
        assert "arg0" in entry and "f32[29,37,3]" in entry, (kernel.__name__, entry)
        assert kernel(*args).device.endswith("CPU:0")


def test_per_image_runs_the_kernel_on_every_image_of_a_batch():
    images = tf.stack([_image(seed=s) for s in range(3)])
    offsets = _f64([-2.5, 0.0, 7.25])
    fill = tf.broadcast_to(xla_kernels.fill_tensor(FILL), (3, 3))
    ones, zeros = _f64([1.0, 0.0, 1.0]), _f64([0.1, -0.2, 0.0])
    out = xla_kernels.per_image(xla_kernels.shift, images, ones, zeros, offsets, fill)
    for i in range(3):
        expected = xla_kernels.shift(images[i], ones[i], zeros[i], offsets[i], fill[i])
        np.testing.assert_array_equal(out[i].numpy(), expected.numpy())
    empty = xla_kernels.per_image(xla_kernels.auto_contrast, images[:0])
    assert empty.shape == (0, 29, 37, 3)


def test_the_batched_and_per_image_paths_run_the_same_compiled_geometry():
    # Every image rotates or shears (p1.0, three rounds): the compiled kernels
    # once per image in `apply_batch`, per call in `__call__`, the same bits.
    augment = RandAugment("rand-n3-m9-mstd0.5-p1.0", interpolation="bilinear")
    images = tf.random.stateless_uniform((6, 29, 37, 3), [1, 2])
    seeds = tf.constant([[9, s] for s in range(6)])
    draws = [tf.stack(d) for d in zip(*(augment.sample(s) for s in seeds))]
    ran = {augment.transforms[o] for o, a in zip(np.ravel(draws[0]), np.ravel(draws[1])) if a}
    assert ran & {"Rotate", "ShearX", "ShearY", "AutoContrast"}
    batch = augment.apply_batch(images, draws).numpy()
    for i in range(6):
        np.testing.assert_array_equal(batch[i], augment(images[i], seeds[i]).numpy())


def test_seeded_results_repeat_in_a_parallel_map():
    augment = RandAugment("rand-n3-m9-mstd0.5-p1.0")
    images = tf.random.stateless_uniform((8, 29, 37, 3), [3, 4])
    data = tf.data.Dataset.from_tensor_slices((images, tf.range(8)))

    def run():
        ds = data.map(lambda x, i: augment(x, tf.stack([i, 5])), num_parallel_calls=4)
        return np.stack(list(ds.as_numpy_iterator()))

    first = run()
    np.testing.assert_array_equal(first, run())
    np.testing.assert_array_equal(first[3], augment(images[3], tf.constant([3, 5])).numpy())
