"""Random erasing (timm's semantics) against timm's algorithm re-implemented in numpy.

Exact boxes cannot match across random generators, so the statistics of
boxes read back from erased images (many seeds, in one `tf.data` pass) are
compared with a numpy re-implementation of timm's `RandomErasing._erase`,
within 4 standard errors; seeds are fixed, so the test is deterministic.
"""

import math
import random

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spvit.data.random_erasing import random_erasing, sample_erasing_boxes
from keras_spvit.data.transforms import normalize

# Pure TensorFlow code (it runs inside tf.data whatever the Keras backend), so
# the results cannot depend on KERAS_BACKEND: the whole file runs on TensorFlow,
# and tests/data/test_train_augment.py runs it through the pipeline on every backend.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="pure TensorFlow, backend-independent: tested on TensorFlow; "
    "test_train_augment.py covers every backend",
)

FILL = -1.0  # never written by erasing with the values used below


# === Reference: timm's algorithm, written again in numpy ===


def timm_boxes(rng, height, width, probability=1.0, min_area=0.02, max_area=1 / 3,
               min_aspect=0.3, max_aspect=None, min_count=1, max_count=None):
    """The boxes timm's `_erase` paints, in painting order: [(top, left, h, w)].

    `rng` is a `random.Random`, the generator timm draws from.
    """
    max_aspect = max_aspect or 1 / min_aspect
    max_count = max_count or min_count
    if rng.random() > probability:
        return []
    count = rng.randint(min_count, max_count)
    boxes = []
    for _ in range(count):
        for _ in range(10):
            target = rng.uniform(min_area, max_area) * height * width / count
            aspect = math.exp(rng.uniform(math.log(min_aspect), math.log(max_aspect)))
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if w < width and h < height:
                boxes.append((rng.randint(0, height - h), rng.randint(0, width - w), h, w))
                break
    return boxes


def reference_stats(height, width, n=20_000, **kwargs):
    rng = random.Random(1234)
    rows = []
    for _ in range(n):
        boxes = timm_boxes(rng, height, width, **kwargs)
        painted = np.zeros((height, width), np.int32)
        for i, (top, left, h, w) in enumerate(boxes):
            painted[top:top + h, left:left + w] = i + 1
        visible = len(np.unique(painted[painted > 0]))
        first = boxes[0] if boxes else (np.nan,) * 4
        rows.append((len(boxes), (painted > 0).mean(), visible, *first))
    return np.array(rows, dtype=np.float64)


# === Helpers ===


def erase_many(shape, seeds, **kwargs):
    """Erases a FILL image once per seed in a parallel `tf.data.map`."""
    image = tf.fill(shape, FILL)
    data = tf.data.Dataset.from_tensor_slices(np.asarray(seeds, np.int64))
    data = data.map(lambda s: random_erasing(image, seed=s, **kwargs),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return np.concatenate(list(data.batch(512).as_numpy_iterator()))


def seeds(n, salt=0):
    return np.stack([np.full(n, salt), np.arange(n)], axis=1)


def bounding_box(mask):
    ys, xs = np.nonzero(mask)
    return ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1


def assert_close(value, reference, standard_error, what):
    assert abs(value - reference) <= 4 * standard_error, (what, value, reference, standard_error)


# === Boxes ===


@pytest.mark.parametrize("height, width, n", [(20, 30, 3000), (64, 48, 1000)])
def test_single_box_is_a_rectangle_with_timm_statistics(height, width, n):
    out = erase_many((height, width, 1), seeds(n), probability=1.0, mode="const",
                     mean=(2.0,), std=(1.0,))
    masks = out[..., 0] != FILL
    assert set(np.unique(out)) <= {FILL, 2.0}
    found = masks.any(axis=(1, 2))
    boxes = []
    for mask in masks[found]:
        top, left, h, w = bounding_box(mask)
        # One axis-aligned rectangle: the mask fills its bounding box.
        assert mask[top:top + h, left:left + w].all() and mask.sum() == h * w
        assert h < height and w < width
        # Sides are rounded from area in [0.02, 1/3] * H * W and h / w in [0.3, 1 / 0.3].
        assert (h - 0.5) * (w - 0.5) <= height * width / 3 + 1e-9
        assert (h + 0.5) * (w + 0.5) >= 0.02 * height * width - 1e-9
        assert 0.3 - 1e-9 <= (h + 0.5) / (w - 0.5) and (h - 0.5) / (w + 0.5) <= 1 / 0.3 + 1e-9
        boxes.append((top, left, h, w))
    boxes = np.array(boxes, np.float64)

    ref = reference_stats(height, width)
    ref_found = ref[:, 0] > 0
    p = ref_found.mean()
    assert_close(found.mean(), p, math.sqrt(max(p * (1 - p), 1e-4) / n), "share with a box")
    ref_boxes = ref[ref_found, 3:]
    names = ("top", "left", "height", "width")
    for i, name in enumerate(names):
        assert_close(boxes[:, i].mean(), ref_boxes[:, i].mean(),
                     ref_boxes[:, i].std() / math.sqrt(len(boxes)), name)
    area, ref_area = boxes[:, 2] * boxes[:, 3], ref_boxes[:, 2] * ref_boxes[:, 3]
    assert_close(area.mean(), ref_area.mean(), ref_area.std() / math.sqrt(len(boxes)), "area")


def test_a_small_image_often_finds_no_box_as_timm():
    # On 3 x 80 most attempts are too tall: timm gives up on many images.
    n = 2000
    out = erase_many((3, 80, 1), seeds(n, salt=5), probability=1.0, mode="const",
                     mean=(2.0,), std=(1.0,))
    found = (out != FILL).any(axis=(1, 2, 3))
    p = (reference_stats(3, 80)[:, 0] > 0).mean()
    assert 0.2 < p < 0.6
    assert_close(found.mean(), p, math.sqrt(p * (1 - p) / n), "share with a box")


def test_several_boxes_cover_as_timm():
    n, kwargs = 2000, dict(min_count=1, max_count=3)
    out = erase_many((32, 32, 1), seeds(n, salt=7), probability=1.0, mode="rand",
                     mean=(0.5,), std=(1.0,), **kwargs)
    masks = out[..., 0] != FILL
    ref = reference_stats(32, 32, **kwargs)
    assert_close(masks.mean(axis=(1, 2)).mean(), ref[:, 1].mean(),
                 ref[:, 1].std() / math.sqrt(n), "erased share")
    colours = [len(np.unique(image[mask])) for image, mask in zip(out[..., 0], masks)]
    # Each box has its own colour; later boxes may hide earlier ones, and the
    # last one painted is a whole rectangle.
    assert max(colours) == 3 and min(colours) >= 1
    assert_close(np.mean(colours), ref[:, 2].mean(), ref[:, 2].std() / math.sqrt(n), "boxes seen")
    for image, mask in zip(out[:200, ..., 0], masks[:200]):
        rectangles = 0
        for colour in np.unique(image[mask]):
            region = image == colour
            top, left, h, w = bounding_box(region)
            rectangles += region.sum() == h * w
        assert rectangles >= 1


def test_sample_erasing_boxes_counts_and_slots():
    n = 2000
    data = tf.data.Dataset.from_tensor_slices(seeds(n, salt=3)).map(
        lambda s: sample_erasing_boxes(224, 160, min_count=2, max_count=4, seed=s))
    counts, areas = [], []
    for top, left, h, w in data.as_numpy_iterator():
        active = (h > 0) & (w > 0)
        k = int(active.sum())
        # Slots are filled in order; a count of k leaves the others empty.
        assert active[:k].all() and not active[k:].any()
        assert ((top + h <= 224) & (left + w <= 160) & (top >= 0) & (left >= 0)).all()
        counts.append(k)
        areas.append((h * w)[0] * k / (224 * 160))
    assert set(counts) == {2, 3, 4}
    np.testing.assert_allclose(np.bincount(counts, minlength=5)[2:] / n, [1 / 3] * 3, atol=0.04)
    # The area share of one box times the count is uniform in [0.02, 1/3] (up to rounding).
    assert_close(np.mean(areas), (0.02 + 1 / 3) / 2, 0.0905 / math.sqrt(n) + 0.002, "area")


# === Values ===


def test_pixel_mode_is_standard_normal_after_normalising():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = erase_many((96, 96, 3), seeds(40, salt=11), probability=1.0, mode="pixel",
                     mean=mean, std=std)
    mask = (out != FILL).all(-1)
    assert ((out != FILL).any(-1) == mask).all()  # whole pixels, all channels
    values = out[mask]
    n = len(values)
    assert n > 10_000
    np.testing.assert_array_less(np.abs(values.mean(0) - mean), 4 * np.array(std) / math.sqrt(n))
    np.testing.assert_array_less(np.abs(values.std(0) - std), 4 * np.array(std) / math.sqrt(2 * n))
    z = normalize(values, mean, std).numpy()
    np.testing.assert_array_less(np.abs(z.mean(0)), 4 / math.sqrt(n))
    np.testing.assert_array_less(np.abs(z.std(0) - 1), 4 / math.sqrt(2 * n))
    # Per pixel, not per box: values are all different.
    assert len(np.unique(values[:, 0])) > 0.99 * n


def test_rand_mode_is_one_normal_colour_per_box():
    mean, std = (0.2, 0.5, 0.7), (0.1, 0.3, 0.5)
    out = erase_many((24, 24, 3), seeds(1500, salt=13), probability=1.0, mode="rand",
                     mean=mean, std=std)
    colours = []
    for image in out:
        mask = (image != FILL).all(-1)
        assert mask.any()
        values = image[mask]
        np.testing.assert_array_equal(values, np.broadcast_to(values[0], values.shape))
        colours.append(values[0])
    colours = np.array(colours)
    n = len(colours)
    np.testing.assert_array_less(np.abs(colours.mean(0) - mean), 4 * np.array(std) / math.sqrt(n))
    np.testing.assert_array_less(np.abs(colours.std(0) - std), 4 * np.array(std) / math.sqrt(2 * n))


def test_const_mode_is_zero_after_normalising_and_leaves_the_rest():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    image = tf.random.stateless_uniform((48, 64, 3), (0, 1))
    out = random_erasing(image, 1.0, mode="const", mean=mean, std=std, seed=4).numpy()
    changed = (out != image.numpy()).any(-1)
    assert changed.any()
    np.testing.assert_array_equal(out[changed], np.broadcast_to(np.float32(mean), out[changed].shape))
    np.testing.assert_array_equal(normalize(out, mean, std).numpy()[changed], 0.0)
    np.testing.assert_array_equal(out[~changed], image.numpy()[~changed])


# === Probability ===


def test_probability_one_always_zero_never():
    always = erase_many((64, 64, 3), seeds(300, salt=17), probability=1.0)
    assert (always != FILL).any(axis=(1, 2, 3)).all()
    never = erase_many((64, 64, 3), seeds(300, salt=17), probability=0.0)
    assert (never == FILL).all()


def test_probability_is_the_erased_share():
    n, p = 1500, 0.25
    out = erase_many((40, 40, 1), seeds(n, salt=19), probability=p, mode="const",
                     mean=(2.0,), std=(1.0,))
    share = (out != FILL).any(axis=(1, 2, 3)).mean()
    assert_close(share, p, math.sqrt(p * (1 - p) / n), "erased share")


# === Seeds and execution modes ===


def test_same_seed_same_result_different_seeds_differ():
    image = tf.random.stateless_uniform((56, 56, 3), (3, 4))
    a = random_erasing(image, 1.0, max_count=2, seed=tf.constant([5, 6])).numpy()
    b = random_erasing(image, 1.0, max_count=2, seed=tf.constant([5, 6])).numpy()
    c = random_erasing(image, 1.0, max_count=2, seed=tf.constant([5, 7])).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(random_erasing(image, 1.0, seed=9).numpy(),
                                  random_erasing(image, 1.0, seed=tf.constant([9, 0])).numpy())


@pytest.mark.parametrize("mode", ["pixel", "rand", "const"])
def test_parallel_tf_data_equals_eager(mode):
    images = tf.random.stateless_uniform((12, 40, 48, 3), (1, 2))
    kwargs = dict(probability=0.6, mode=mode, min_count=1, max_count=3)
    eager = [random_erasing(images[i], seed=tf.constant([7, i]), **kwargs).numpy()
             for i in range(12)]
    data = tf.data.Dataset.from_tensor_slices((images, tf.range(12, dtype=tf.int64)))
    data = data.map(lambda x, i: random_erasing(x, seed=tf.stack([tf.constant(7, tf.int64), i]),
                                                **kwargs),
                    num_parallel_calls=tf.data.AUTOTUNE)
    mapped = list(data.as_numpy_iterator())
    assert any(not np.array_equal(e, x) for e, x in zip(eager, images.numpy()))
    for e, m in zip(eager, mapped):
        np.testing.assert_array_equal(e, m)


def test_uint8_input_and_static_shape_in_graph():
    image = tf.fill((32, 32, 3), tf.constant(255, tf.uint8))

    @tf.function(input_signature=[tf.TensorSpec((2,), tf.int64)])
    def run(seed):
        return random_erasing(image, 0.5, seed=seed)

    out = run(tf.constant([0, 1], tf.int64))
    assert out.dtype == tf.float32 and out.shape == (32, 32, 3)
    outs = [run(tf.constant([0, i], tf.int64)).numpy() for i in range(20)]
    untouched = [np.array_equal(o, np.ones_like(o)) for o in outs]
    assert any(untouched) and not all(untouched)


# === Arguments ===


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(probability=1.5), "probability"),
        (dict(mode="noise"), "mode"),
        (dict(min_area=0.0), "min_area"),
        (dict(min_area=0.5, max_area=0.4), "max_area"),
        (dict(max_area=1.5), "max_area"),
        (dict(min_aspect=0.0), "min_aspect"),
        (dict(min_aspect=0.5, max_aspect=0.4), "max_aspect"),
        (dict(min_count=0), "min_count"),
        (dict(min_count=2, max_count=1), "max_count"),
        (dict(max_count=2.0), "max_count"),
        (dict(mean=(0.5, 0.5), std=(0.2, 0.2)), "mean"),
        (dict(mean=(0.5,) * 3, std=(0.2, 0.0, 0.2)), "std"),
        (dict(mean=(0.5,) * 3, std=(0.2,) * 2), "std"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        random_erasing(tf.zeros((16, 16, 3)), seed=0, **kwargs)


def test_bad_images_and_seeds_raise():
    with pytest.raises(ValueError, match="image.shape"):
        random_erasing(tf.zeros((2, 16, 16, 3)), seed=0)
    with pytest.raises(ValueError, match="dtype"):
        random_erasing(tf.zeros((16, 16, 3), tf.int32), seed=0)
    with pytest.raises(ValueError, match="seed"):
        random_erasing(tf.zeros((16, 16, 3)), 1.0, seed=tf.constant([1.0, 2.0]))
    with pytest.raises(ValueError, match="min_count"):
        sample_erasing_boxes(16, 16, min_count=0, seed=0)


def test_normalised_images_get_the_noise_itself():
    # mean 0 / std 1 (what `TrainAugment.erase` passes) skips the affine map
    # of the noise: the same boxes and draws as any mean and std, unscaled.
    image = tf.fill((40, 48, 3), 0.25)
    seed = tf.constant([3, 9])
    standard = random_erasing(image, 1.0, mean=(0.0,) * 3, std=(1.0,) * 3, seed=seed).numpy()
    scaled = random_erasing(image, 1.0, mean=(0.5,) * 3, std=(2.0,) * 3, seed=seed).numpy()
    erased = standard != 0.25
    assert erased.sum() > 100
    np.testing.assert_array_equal(erased, scaled != 0.25)
    np.testing.assert_allclose(scaled[erased], standard[erased] * 2.0 + 0.5, rtol=1e-6)


# === Where the boxes are written ===


@pytest.mark.parametrize("count", [1, 3])
def test_each_drawn_box_holds_its_noise_in_painting_order(count):
    # The erased image is the input with every slot's box (`sample_erasing_boxes`)
    # overwritten in slot order by that slot's noise: later boxes win overlaps,
    # empty slots write nothing.
    from keras_spvit.data.seeds import split_seed

    image = tf.random.stateless_uniform((40, 56, 3), (3, 1))
    for k in range(12):
        seed = tf.constant([k, 9], tf.int64)
        out = random_erasing(image, 1.0, mode="pixel", mean=(0.0,) * 3, std=(1.0,) * 3,
                             min_count=1, max_count=count, seed=seed).numpy()
        _, box_seed, value_seed = split_seed(seed, 3)
        boxes = sample_erasing_boxes(40, 56, max_count=count, seed=box_seed)
        expected = image.numpy().copy()
        for slot, slot_seed in enumerate(split_seed(value_seed, count)):
            top, left, h, w = (int(v[slot]) for v in boxes)
            expected[top:top + h, left:left + w] = tf.random.stateless_normal(
                (h, w, 3), slot_seed).numpy()
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("top, left, h, w", [
    (0, 0, 5, 7), (35, 49, 5, 7), (0, 0, 40, 56), (12, 20, 0, 0), (40, 56, 0, 0), (3, 56, 4, 0),
])
def test_write_box_at_edges_and_empty(top, left, h, w):
    from keras_spvit.data.random_erasing import _write_box

    image = tf.random.stateless_uniform((40, 56, 3), (5, 2))
    value = tf.fill((h, w, 3), -3.0)
    out = _write_box(image, value, tf.constant(top), tf.constant(left)).numpy()
    expected = image.numpy().copy()
    expected[top:top + h, left:left + w] = -3.0
    np.testing.assert_array_equal(out, expected)
