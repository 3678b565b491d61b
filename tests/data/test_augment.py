"""Augmentations: crop sampling bounds, the eval transform, mixing, MixToken."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spvit.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TrainAugment,
    eval_transform,
    mix_token,
    normalize,
    random_resized_crop,
    sample_crop_box,
    sample_token_box,
)
from keras_spvit.data.train_augment import TFDataEqualization
from keras_spvit.data.transforms import taken_branch_only


def _boxes(height, width, scale, ratio, count=200):
    seeds = tf.data.Dataset.range(count).map(lambda i: tf.stack([tf.constant(7, tf.int64), i]))
    boxes = seeds.map(lambda seed: tf.stack(sample_crop_box(height, width, scale, ratio, seed)))
    return next(iter(boxes.batch(count))).numpy()


def test_crop_boxes_respect_scale_and_ratio_bounds():
    height, width, scale, ratio = 64, 96, (0.2, 0.4), (1.2, 1.8)
    top, left, h, w = _boxes(height, width, scale, ratio).T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    # Sides are rounded, so the exact area and aspect lie within half a pixel.
    area = height * width
    assert ((w + 0.5) * (h + 0.5) >= scale[0] * area).all()
    assert ((w - 0.5) * (h - 0.5) <= scale[1] * area).all()
    assert ((w + 0.5) / (h - 0.5) >= ratio[0]).all()
    assert ((w - 0.5) / (h + 0.5) <= ratio[1]).all()
    # Uniform area fraction, log-uniform aspect (every attempt fits here).
    assert abs(np.mean(w * h / area) - 0.3) < 0.02
    assert abs(np.mean(np.log(w / h)) - np.mean(np.log(ratio))) < 0.03
    # Placed uniformly, not centred.
    assert len(np.unique(top)) > 10 and len(np.unique(left)) > 10


def test_crop_fallback_is_central_and_clamped_to_ratio():
    # No attempt can fit a full-area crop this elongated: torchvision's fallback.
    assert set(map(tuple, _boxes(40, 40, (1.0, 1.0), (2.0, 3.0), 5))) == {(10, 0, 20, 40)}
    assert set(map(tuple, _boxes(20, 80, (1.0, 1.0), (0.5, 1.0), 5))) == {(0, 30, 20, 20)}


def _torchvision_box(height, width, scale, ratio, areas, log_ratios, offsets):
    """torchvision's `RandomResizedCrop.get_params`, written from its source in plain
    Python, fed the draws the code makes: the ten attempts' `uniform_(*scale)` area
    fractions and `uniform_(*log(ratio))` log aspects, and `offsets` in [0, 1) for
    `torch.randint`."""
    area = height * width
    for attempt in range(10):
        target_area = area * areas[attempt]
        aspect = math.exp(log_ratios[attempt])
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            # torch.randint(0, n + 1) from a uniform draw u: floor(u * (n + 1)).
            return (int(offsets[0] * (height - h + 1)), int(offsets[1] * (width - w + 1)), h, w)
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _uniform_draws(seed, scale, ratio):
    """The three uniform streams `sample_crop_box` draws from `seed`."""
    area_seed, ratio_seed, offset_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.constant(seed, tf.int64), 3))
    areas = tf.random.stateless_uniform((10,), area_seed, scale[0], scale[1], tf.float64)
    low, high = math.log(ratio[0]), math.log(ratio[1])
    logs = tf.random.stateless_uniform((10,), ratio_seed, low, high, tf.float64)
    offsets = tf.random.stateless_uniform((2,), offset_seed, dtype=tf.float64)
    return areas.numpy(), logs.numpy(), offsets.numpy()


@pytest.mark.parametrize("height, width, scale, ratio", [
    (30, 50, (0.08, 1.0), (3 / 4, 4 / 3)),
    (224, 300, (0.08, 1.0), (3 / 4, 4 / 3)),
    (37, 23, (0.5, 1.0), (0.9, 1.1)),
    (40, 40, (1.0, 1.0), (2.0, 3.0)),  # no attempt fits: the fallback
    (20, 80, (0.9, 1.0), (0.5, 1.0)),
])
def test_crop_box_is_torchvisions_given_the_same_draws(height, width, scale, ratio):
    for i in range(40):
        seed = (11, i)
        expected = _torchvision_box(height, width, scale, ratio,
                                    *_uniform_draws(seed, scale, ratio))
        got = tuple(int(v) for v in sample_crop_box(height, width, scale, ratio,
                                                    tf.constant(seed, tf.int64)))
        assert got == expected, (seed, got, expected)


def _bilinear_upscale(image, out_h, out_w):
    """Bilinear resize from its definition (half-pixel centres, edge samples repeated)."""
    in_h, in_w = image.shape[:2]
    out = np.empty((out_h, out_w, image.shape[2]))
    for y in range(out_h):
        sy = min(max((y + 0.5) * in_h / out_h - 0.5, 0.0), in_h - 1)
        y0 = int(math.floor(sy))
        y1, fy = min(y0 + 1, in_h - 1), sy - y0
        for x in range(out_w):
            sx = min(max((x + 0.5) * in_w / out_w - 0.5, 0.0), in_w - 1)
            x0 = int(math.floor(sx))
            x1, fx = min(x0 + 1, in_w - 1), sx - x0
            out[y, x] = ((1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x1])
                         + fy * ((1 - fx) * image[y1, x0] + fx * image[y1, x1]))
    return out


def test_random_resized_crop_is_the_box_resized_bilinearly_by_definition():
    # Output 64 > every crop side of a 30 x 50 image: an upscale, where the
    # antialiased resize is plain bilinear interpolation.
    pixels = np.random.default_rng(0).integers(0, 256, (30, 50, 3))
    image = tf.constant(pixels, tf.uint8)
    for i in range(3):
        seed = (5, i)
        top, left, h, w = _torchvision_box(30, 50, (0.08, 1.0), (3 / 4, 4 / 3),
                                           *_uniform_draws(seed, (0.08, 1.0), (3 / 4, 4 / 3)))
        crop = random_resized_crop(image, 64, interpolation="bilinear",
                                   seed=tf.constant(seed, tf.int64)).numpy()
        expected = _bilinear_upscale(pixels[top:top + h, left:left + w] / 255.0, 64, 64)
        np.testing.assert_allclose(crop, expected, rtol=0, atol=1e-5)


def test_flip_probability_one_is_the_mirror_of_the_unflipped_crop():
    image = tf.constant(np.random.default_rng(4).integers(0, 256, (30, 50, 3)), tf.uint8)
    flipped = TrainAugment(hflip=1.0)
    plain = TrainAugment(hflip=0.0)
    for i in range(4):
        seed = tf.constant([2, i], tf.int64)
        np.testing.assert_array_equal(flipped(image, 16, seed).numpy(),
                                      plain(image, 16, seed).numpy()[:, ::-1])


def _timm_erasing_box(height, width, areas, logs, offsets):
    """timm's `RandomErasing._erase` for one box, in plain Python, fed its draws:
    `random.uniform(min_area, max_area)` and `random.uniform(*log_aspect_ratio)` per
    attempt, `offsets` in [0, 1) for `random.randint`."""
    for attempt in range(10):
        target_area = areas[attempt] * height * width
        aspect = math.exp(logs[attempt])
        h = int(round(math.sqrt(target_area * aspect)))
        w = int(round(math.sqrt(target_area / aspect)))
        if w < width and h < height:
            # random.randint(0, n) (inclusive) from a uniform draw u: floor(u * (n + 1)).
            return int(offsets[0] * (height - h + 1)), int(offsets[1] * (width - w + 1)), h, w
    return None


def test_erasing_probability_one_erases_exactly_timms_box():
    # The pipeline's erase (normalised image, const mode: zeros) against timm's box
    # drawn in plain Python from the same uniform numbers.
    augment = TrainAugment(random_erasing=1.0, erasing_mode="const")
    image = np.random.default_rng(6).normal(size=(24, 40, 3)).astype("float32") + 5.0
    split = tf.random.experimental.stateless_split
    erased_boxes = 0
    for i in range(6):
        seed = tf.constant([9, i], tf.int64)
        out = augment.erase(tf.constant(image), seed).numpy()
        # erase() derives its stream as fold_in(seed, 2) (seeds are int64); random_erasing
        # splits it (gate, box, value) and the box seed (count, area, aspect, offset).
        stream = tf.cast(tf.random.experimental.stateless_fold_in(seed, 2), tf.int64)
        _, area_seed, aspect_seed, offset_seed = tf.unstack(split(split(stream, 3)[1], 4))
        areas = tf.random.stateless_uniform((1, 10), area_seed, 0.02, 1 / 3, tf.float64)
        logs = tf.random.stateless_uniform((1, 10), aspect_seed, math.log(0.3),
                                           math.log(1 / 0.3), tf.float64)
        offsets = tf.random.stateless_uniform((1, 2), offset_seed, dtype=tf.float64)
        box = _timm_erasing_box(24, 40, areas.numpy()[0], logs.numpy()[0], offsets.numpy()[0])
        expected = image.copy()
        if box is not None:
            top, left, h, w = box
            expected[top:top + h, left:left + w] = 0.0
            erased_boxes += 1
        np.testing.assert_array_equal(out, expected)
    assert erased_boxes >= 4  # most draws fit at this size


def test_random_resized_crop_is_the_sampled_box_resized():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (30, 50, 3)), tf.uint8)
    seed = tf.constant([3, 4], tf.int64)
    crop = random_resized_crop(image, 16, seed=seed)
    assert crop.shape == (16, 16, 3) and crop.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(crop)) and float(tf.reduce_max(crop)) <= 1.0
    top, left, h, w = (int(v) for v in sample_crop_box(30, 50, seed=seed))
    box = tf.cast(image[top : top + h, left : left + w], tf.float32) / 255.0
    expected = tf.clip_by_value(tf.image.resize(box, (16, 16), "bicubic", antialias=True), 0, 1)
    np.testing.assert_allclose(crop.numpy(), expected.numpy(), atol=1e-6)
    np.testing.assert_array_equal(crop.numpy(), random_resized_crop(image, 16, seed=seed).numpy())
    other = random_resized_crop(image, 16, seed=tf.constant([3, 5], tf.int64))
    assert not np.array_equal(crop.numpy(), other.numpy())


@pytest.mark.parametrize("shape, top, left", [((32, 41), 2, 6), ((41, 32), 6, 2), ((32, 43), 2, 8)])
def test_eval_transform_is_a_center_crop_when_resizing_is_identity(shape, top, left):
    # size 28 / crop_pct 0.875 = 32 = the shorter side, so only the crop acts;
    # offsets 6.5 and 7.5 round half to even (6, 8), as torchvision's round().
    image = np.random.default_rng(1).random((*shape, 3)).astype("float32")
    out = eval_transform(image, 28, crop_pct=0.875).numpy()
    crop = image[top : top + 28, left : left + 28]
    expected = (crop - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_eval_transform_resizes_the_shorter_side():
    # 375 x 500 -> shorter side int(224 / 0.875) = 256, longer int(256 * 500 / 375) = 341.
    # Crop offsets round((256 - 224) / 2) = 16 and round((341 - 224) / 2) = 58.
    image = np.zeros((375, 500, 3), "uint8")
    image[:, 100:] = 255
    out = eval_transform(image, 224, mean=None).numpy()
    # White from column 100 * 341 / 500 - 58 = 10.2 (a square resize would give 35.2).
    assert out.shape == (224, 224, 3)
    assert out[:, :8].max() < 0.01 and out[:, 13:].min() > 0.99
    with pytest.raises(ValueError, match="crop_pct=1.5"):
        eval_transform(image, 224, crop_pct=1.5)


def test_normalize_uses_imagenet_statistics_on_unit_pixels():
    out = normalize(tf.constant([[[0.485, 0.456, 0.406]], [[1.0, 1.0, 1.0]]]))
    np.testing.assert_allclose(out[0, 0].numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(
        out[1, 0].numpy(), (1 - np.array(IMAGENET_MEAN)) / IMAGENET_STD, rtol=1e-6
    )
    np.testing.assert_allclose(normalize(np.full((1, 1, 3), 255, "uint8")).numpy(), out[1:].numpy())


@pytest.mark.parametrize(
    "spec", [(17, 9, 3), (None, None, 3), (None, 9, 3), (4, 17, 9, 3), (None, 17, 9, 3)]
)
def test_normalize_is_the_ieee_per_channel_formula_whatever_is_known_of_the_shape(spec):
    # Rows of width x channels (static width) or a run-time broadcast
    # (dynamic width), eagerly, in a `tf.function` and in `tf.data`: the values of
    # `(x - mean) / std` per channel, bit for bit (numpy's float32 IEEE ops).
    x = np.random.default_rng(0).uniform(0, 1, [4, 17, 9, 3][-len(spec):]).astype("float32")
    expected = (x - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    np.testing.assert_array_equal(normalize(x).numpy(), expected)
    traced = tf.function(normalize, input_signature=[tf.TensorSpec(spec, tf.float32)])
    np.testing.assert_array_equal(traced(x).numpy(), expected)
    mapped = tf.data.Dataset.from_tensors(x).map(lambda t: traced(t))
    np.testing.assert_array_equal(next(iter(mapped)).numpy(), expected)


def _lowering(graph):
    # Whether TensorFlow lowers each If / Case / While op of a graph and
    # of the functions it calls (the branches of nested control flow).
    found = []
    for op in graph.get_operations():
        if op.type in ("If", "StatelessIf", "Case", "StatelessCase", "While", "StatelessWhile"):
            attr = op.node_def.attr.get("_lower_using_switch_merge")  # absent: not lowered
            found.append((op.type, bool(attr is not None and attr.b)))
    for function in getattr(graph, "_functions", {}).values():
        if hasattr(function, "graph"):
            found += _lowering(function.graph)
    return found


def test_taken_branch_only_keeps_control_flow_functional_and_restores_tensorflows_switch():
    def branchy(x, i):
        x = tf.cond(i > 0, lambda: x + 1.0, lambda: x)
        return tf.switch_case(i, [lambda: x, lambda: x * 2.0, lambda: x - 1.0])

    signature = [tf.TensorSpec((3,), tf.float32), tf.TensorSpec((), tf.int32)]
    lowered = tf.function(branchy, input_signature=signature).get_concrete_function()
    kept = tf.function(taken_branch_only(branchy), input_signature=signature)
    kept = kept.get_concrete_function()
    assert {value for _, value in _lowering(lowered.graph)} == {True}
    assert len(_lowering(kept.graph)) == 2 and {v for _, v in _lowering(kept.graph)} == {False}
    # The values are the same; the switch is TensorFlow's again afterwards,
    # also when the function raises.
    x = tf.constant([1.0, 2.0, 3.0])
    for i in range(3):
        np.testing.assert_array_equal(kept(x, i).numpy(), lowered(x, i).numpy())
    with pytest.raises(ZeroDivisionError):
        taken_branch_only(lambda: 1 / 0)()
    again = tf.function(branchy, input_signature=signature).get_concrete_function()
    assert {value for _, value in _lowering(again.graph)} == {True}


def test_training_augmentation_traces_every_branch_functional():
    # RandAugment's switch per operation (unrolled: no loop, whose condition
    # and body calls cost per image), the flip's and erasing's conds: none
    # lowered to Switch / Merge in the function `tf.data` instantiates.
    augment = TrainAugment(randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.25)

    def example(image, seed):
        return augment.erase(normalize(augment(image, 32, seed)), seed)

    def pipeline_example(image, seed):  # what the pipelines run
        return augment.erase(augment.normalized(image, 32, seed), seed)

    for fn in (example, pipeline_example):
        traced = tf.function(fn).get_concrete_function(
            tf.TensorSpec((40, 60, 3), tf.uint8), tf.TensorSpec((2,), tf.int64)
        )
        found = _lowering(traced.graph)
        assert {kind.replace("Stateless", "") for kind, _ in found} == {"If", "Case"}
        assert {value for _, value in found} == {False}


def _constant_batch(batch=6, size=32):
    values = (np.arange(batch, dtype="float32") + 1) / 10
    images = np.broadcast_to(values[:, None, None, None], (batch, size, size, 3)).copy()
    return values, images, np.arange(batch, dtype="int32")


def _mix(augment, images, labels, num_classes, draws=1):
    """`draws` batches mixed by `augment` in tf.data: arrays (draws, batch, ...)."""
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(draws).enumerate()
    dataset = dataset.map(lambda i, batch: augment.mix_batch(*batch, num_classes, tf.stack([i, i])))
    mixed, soft = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.stack(mixed), np.stack(soft)


def test_mixup_gives_convex_mixes_matching_the_labels():
    values, images, labels = _constant_batch()
    (mixed,), (soft,) = _mix(TrainAugment(mixup_alpha=0.8, seed=1), images, labels, 6)
    assert soft.dtype == np.float32 and soft.shape == (6, 6)
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
    assert ((soft > 1e-6).sum(1) <= 2).all() and (soft >= 0).all()
    # Each image is the same convex combination of the originals as its label.
    np.testing.assert_allclose(mixed[:, 0, 0, 0], soft @ values, atol=1e-5)
    assert np.ptp(mixed, axis=(1, 2, 3)).max() < 1e-6
    assert not np.allclose(mixed, images)


def test_cutmix_pastes_a_box_weighted_by_its_area():
    values, images, labels = _constant_batch()
    (mixed,), (soft,) = _mix(TrainAugment(cutmix_alpha=1.0, seed=2), images, labels, 6)
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
    for i in range(6):
        classes = np.flatnonzero(soft[i] > 1e-6)
        assert set(np.unique(mixed[i])) <= set(values[classes])
        for k in classes:
            share = np.mean(np.isclose(mixed[i, ..., 0], values[k]))
            assert abs(share - soft[i, k]) < 0.1  # pixel grid vs continuous box
    assert not np.allclose(mixed, images)


def test_label_smoothing_and_mixing_keep_distributions():
    _, images, labels = _constant_batch()
    augment = TrainAugment(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, seed=3)
    assert augment.needs_one_hot and augment.mixes
    _, soft = _mix(augment, images, labels, 6, draws=4)
    np.testing.assert_allclose(soft.sum(-1), 1.0, atol=1e-5)
    assert soft.min() >= 0.1 / 6 - 1e-6
    smooth_only = TrainAugment(label_smoothing=0.1)
    (mixed,), (soft,) = _mix(smooth_only, images, labels, 6)
    np.testing.assert_array_equal(mixed, images)
    np.testing.assert_allclose(np.diag(soft), 0.9 + 0.1 / 6, rtol=1e-6)


def test_train_augment_runs_in_tf_data_and_validates():
    augment = TrainAugment(
        color_jitter=0.4, randaugment="rand-m9-n1", random_erasing=1.0, seed=0, hflip=1.0
    )
    images = np.random.default_rng(2).integers(0, 256, (3, 20, 24, 3)).astype("uint8")
    dataset = tf.data.Dataset.from_tensor_slices(images).map(
        lambda x: augment(x, 16, tf.constant([1, 2], tf.int64))
    )
    out = np.stack([x.numpy() for x in dataset])
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    with pytest.raises(ValueError, match="hflip=1.5"):
        TrainAugment(hflip=1.5)
    with pytest.raises(ValueError, match="cutmix_alpha=2"):
        TrainAugment(cutmix_alpha=2)
    with pytest.raises(ValueError, match="interpolation='cubic'"):
        TrainAugment(interpolation="cubic")


def test_tf_equalization_matches_keras_equalization():
    image = np.random.default_rng(3).random((1, 8, 8, 3)).astype("float32")
    ours = TFDataEqualization(value_range=(0, 1), bins=16)
    theirs = keras.layers.Equalization(value_range=(0, 1), bins=16)
    dataset = tf.data.Dataset.from_tensors(image).map(lambda x: (ours(x), theirs(x)))
    a, b = next(iter(dataset))
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_mix_token_pastes_a_patch_aligned_box_from_the_reversed_batch():
    batch, size, patch, classes = 4, 32, 8, 5
    rng = np.random.default_rng(4)
    images = rng.random((batch, size, size, 3)).astype("float32")
    labels = np.array([0, 1, 2, 3])
    hard = rng.integers(0, classes, (batch, 4, 4)).astype("int32")
    soft = rng.random((batch, 4, 4, classes)).astype("float32")
    boxes = 0
    for seed in range(12):
        seed = tf.constant([seed, 9], tf.int64)
        (top, left, bottom, right), lam = sample_token_box(4, 4, 1.0, seed)
        top, left, bottom, right = int(top), int(left), int(bottom), int(right)
        mixed, mixed_labels, mixed_hard = (
            t.numpy()
            for t in mix_token(
                images, labels, hard, patch_size=patch, seed=seed, num_classes=classes
            )
        )
        _, _, mixed_soft = mix_token(
            images, labels, soft, patch_size=patch, seed=seed, num_classes=classes
        )
        inside = np.zeros((size, size), bool)
        inside[top * patch : bottom * patch, left * patch : right * patch] = True
        np.testing.assert_array_equal(mixed[:, inside], images[::-1][:, inside])
        np.testing.assert_array_equal(mixed[:, ~inside], images[:, ~inside])
        # lam is the exact share of pixels left unchanged.
        changed = (mixed != images).any(-1)
        assert math.isclose(float(lam), 1 - inside.mean(), abs_tol=1e-6)
        assert math.isclose(float(lam), 1 - changed[0].mean(), abs_tol=1e-6)
        one_hot = np.eye(classes)[labels]
        np.testing.assert_allclose(
            mixed_labels, lam * one_hot + (1 - lam) * one_hot[::-1], atol=1e-6
        )
        tokens = np.zeros((4, 4), bool)
        tokens[top:bottom, left:right] = True
        np.testing.assert_array_equal(mixed_hard, np.where(tokens, hard[::-1], hard))
        np.testing.assert_array_equal(mixed_soft, np.where(tokens[..., None], soft[::-1], soft))
        boxes += inside.any()
    assert boxes >= 6  # most draws cut a non-empty box
    with pytest.raises(ValueError, match="patch_size=5"):
        mix_token(images, labels, patch_size=5, seed=0, num_classes=classes)
    with pytest.raises(ValueError, match="dense_labels.shape"):
        mix_token(images, labels, hard[:, :2], patch_size=patch, seed=0, num_classes=classes)
