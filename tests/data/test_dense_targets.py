"""Dense token-labeling targets: roi_align, the release's targets, joint augmentation, pipeline."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_spvit.data.datasets import array_dataset
from keras_spvit.data.dense_targets import (
    compact_entries,
    max_samples_per_bin,
    roi_align,
    token_label_targets,
)
from keras_spvit.data.mix_token import mix_token
from keras_spvit.data.rand_augment import RandAugment
from keras_spvit.data.train_augment import TrainAugment, _fold
from keras_spvit.training.losses import TokenLabelCrossEntropy

TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.data only: the backend does not matter"
)


# === Independent reference: torchvision's roi_align from its definition ===


def _bilinear(image, y, x):
    height, width = image.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(image.shape[2:])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * image[y_low, x_low]
        + hy * lx * image[y_low, x_high]
        + ly * hx * image[y_high, x_low]
        + ly * lx * image[y_high, x_high]
    )


def roi_align_reference(image, box, output_size):
    """One `(h, w, c)` map, box `(x1, y1, x2, y2)`, aligned=False, sampling_ratio=-1."""
    x1, y1, x2, y2 = (float(v) for v in box)
    out_h, out_w = output_size
    roi_w, roi_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    bin_h, bin_w = roi_h / out_h, roi_w / out_w
    grid_h, grid_w = math.ceil(roi_h / out_h), math.ceil(roi_w / out_w)
    out = np.zeros((out_h, out_w) + image.shape[2:])
    for ph in range(out_h):
        for pw in range(out_w):
            total = 0.0
            for iy in range(grid_h):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                    total = total + _bilinear(image, y, x)
            out[ph, pw] = total / max(grid_h * grid_w, 1)
    return out


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def release_reference(scores, ids, box, num_classes, grid, smoothing, box_order):
    """The release's `get_labelmaps_with_coords`, channels-last, in float64."""
    h, w, _ = scores.shape
    dense = np.zeros((h, w, num_classes))
    for y in range(h):
        for x in range(w):
            dense[y, x, ids[y, x]] = scores[y, x]
    top, left, height, width = box
    if box_order == "release":  # (i, j, i + h, j + w) * W - 0.5 read as (x1, y1, x2, y2)
        roi = np.array([top, left, top + height, left + width]) * w - 0.5
    else:
        roi = np.array([left * w, top * h, (left + width) * w, (top + height) * h]) - 0.5
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    tokens = softmax(roi_align_reference(dense, roi, (grid, grid))) * on + off
    image = softmax(roi_align_reference(dense, roi, (1, 1))[0, 0]) * on + off
    return image, tokens


def teacher_record(seed, h=6, w=6, k=3, num_classes=12, scale=4.0):
    rng = np.random.default_rng(seed)
    scores = (rng.normal(size=(h, w, k)) * scale).astype("float32")
    ids = np.stack([rng.permutation(num_classes)[:k] for _ in range(h * w)]).reshape(h, w, k)
    return scores, ids.astype("int32")


# === roi_align ===

BOXES = [
    [-0.5, -0.5, 8.5, 6.5],  # the whole map
    [1.2, 0.3, 6.7, 5.9],
    [2.3, 1.1, 2.9, 1.4],  # smaller than a bin (roi clamped to 1)
    [-3.0, -2.0, 4.0, 12.0],  # partly outside, top and left
    [5.0, 4.5, 30.0, 20.0],  # partly outside, bottom and right; many samples per bin
    [-9.0, -9.0, -4.0, -2.0],  # wholly outside: zeros
    [8.7, 6.9, 9.6, 7.2],  # beyond the last row / column
]


@pytest.mark.parametrize("output_size", [(4, 3), (1, 1), (7, 9)])
def test_roi_align_matches_torchvision_definition(output_size):
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(len(BOXES), 7, 9, 3)) * 3
    out = roi_align(maps, np.array(BOXES), output_size).numpy()
    expected = np.stack(
        [roi_align_reference(maps[i], BOXES[i], output_size) for i in range(len(BOXES))]
    )
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    assert np.all(out[5] == 0)


def test_roi_align_rejects_bad_boxes():
    with pytest.raises(ValueError, match="boxes.shape"):
        roi_align(np.zeros((1, 4, 4, 1)), np.zeros((1, 3)), 2)


# === The release's targets ===

TARGET_BOXES = [
    (0.0, 0.0, 1.0, 1.0),
    (0.1, 0.3, 0.6, 0.45),  # non-square crop
    (0.52, 0.05, 0.31, 0.9),
    (0.9, 0.9, 0.1, 0.1),  # a small crop: boxes smaller than a bin
]


@pytest.mark.parametrize("box_order", ["release", "consistent"])
@pytest.mark.parametrize("box", TARGET_BOXES)
def test_dense_targets_match_the_release(box, box_order):
    scores, ids = teacher_record(1)
    cls, tokens = token_label_targets(
        scores, ids, box, num_classes=12, grid=4, smoothing=0.1, box_order=box_order,
        target_format="dense",
    )
    expected_cls, expected_tokens = release_reference(scores, ids, box, 12, 4, 0.1, box_order)
    np.testing.assert_allclose(cls.numpy(), expected_cls, rtol=0, atol=1e-6)
    np.testing.assert_allclose(tokens.numpy(), expected_tokens, rtol=0, atol=1e-6)
    # As the release: smoothed, not renormalised.
    np.testing.assert_allclose(tokens.numpy().sum(-1), 1 + 0.1 / 12, atol=1e-6)


def test_box_orders_differ_on_a_non_square_crop_and_agree_transposed():
    scores, ids = teacher_record(2)
    box = (0.1, 0.3, 0.6, 0.45)
    release = token_label_targets(scores, ids, box, num_classes=12, grid=4,
                                  box_order="release", target_format="dense")[1].numpy()
    consistent = token_label_targets(scores, ids, box, num_classes=12, grid=4,
                                     box_order="consistent", target_format="dense")[1].numpy()
    assert np.abs(release - consistent).max() > 1e-2
    # The release's box is the consistent box of the transposed map, output transposed.
    transposed = token_label_targets(
        scores.transpose(1, 0, 2), ids.transpose(1, 0, 2), box, num_classes=12, grid=4,
        box_order="consistent", target_format="dense",
    )[1].numpy()
    np.testing.assert_allclose(release, transposed.transpose(1, 0, 2), atol=1e-6)


def expand_compact(packed, num_classes):
    """`(..., M + 1, 2)` -> `(..., num_classes)`: class id -1 adds to every class."""
    values, ids = packed[..., 0], packed[..., 1].astype(int)
    dense = np.zeros(packed.shape[:-2] + (num_classes,))
    for index in np.ndindex(*packed.shape[:-2]):
        for value, class_id in zip(values[index], ids[index]):
            if class_id < 0:
                dense[index] += value
            else:
                dense[index + (class_id,)] += value
    return dense


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_compact_targets_are_the_dense_ones_and_give_their_loss(smoothing):
    num_classes, grid, k = 12, 4, 3
    records = [teacher_record(seed) for seed in range(len(TARGET_BOXES))]
    dense, compact = [], []
    for (scores, ids), box in zip(records, TARGET_BOXES):
        for box_order in ("release", "consistent"):
            args = dict(num_classes=num_classes, grid=grid, smoothing=smoothing, box_order=box_order)
            dense.append(token_label_targets(scores, ids, box, target_format="dense", **args)[1])
            compact.append(token_label_targets(scores, ids, box, **args)[1])
    dense, compact = np.stack(dense), np.stack(compact)
    entries = compact_entries((6, 6), k, grid)
    assert entries == (max_samples_per_bin((6, 6), grid) + 1) ** 2 * k + 1 == 28
    assert compact.shape == (len(dense), grid, grid, entries, 2)
    ids = compact[..., 1].astype(int)
    assert np.all(ids[..., 0] == -1) and np.all(ids[..., 1:] >= 0)
    for index in np.ndindex(*ids.shape[:-1]):  # duplicated classes merged: each id once
        used = ids[index][1:][compact[index][1:, 0] != 0]
        assert len(set(used.tolist())) == len(used)
    np.testing.assert_allclose(expand_compact(compact, num_classes), dense, atol=1e-6)

    logits = np.random.default_rng(5).normal(size=(len(dense), grid * grid, num_classes)) * 3
    loss = TokenLabelCrossEntropy()
    expected = float(keras.ops.convert_to_numpy(loss(dense, logits.astype("float32"))))
    got = float(keras.ops.convert_to_numpy(loss(compact, logits.astype("float32"))))
    assert got == pytest.approx(expected, abs=1e-6)
    # Independent float64 loss of the dense targets.
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    reference = -(dense.reshape(len(dense), -1, num_classes) * log_p).sum(-1).mean()
    assert got == pytest.approx(reference, abs=1e-5)


def test_mix_token_carries_compact_targets():
    num_classes, grid = 12, 4
    compact, dense = [], []
    for seed, box in enumerate(TARGET_BOXES):
        scores, ids = teacher_record(seed + 10)
        args = dict(num_classes=num_classes, grid=grid, smoothing=0.1)
        compact.append(token_label_targets(scores, ids, box, **args)[1])
        dense.append(token_label_targets(scores, ids, box, target_format="dense", **args)[1])
    images = tf.random.uniform((len(compact), 16, 16, 3), seed=1)
    labels = tf.one_hot([0, 1, 2, 3], num_classes)
    _, _, mixed_compact = mix_token(images, labels, tf.stack(compact), patch_size=4, seed=0)
    _, _, mixed_dense = mix_token(images, labels, tf.stack(dense), patch_size=4, seed=0)
    np.testing.assert_allclose(
        expand_compact(mixed_compact.numpy(), num_classes), mixed_dense.numpy(), atol=1e-6
    )
    assert not np.allclose(mixed_dense.numpy(), np.stack(dense))  # the box took tokens


def test_bad_target_arguments_are_named():
    scores, ids = teacher_record(0)
    with pytest.raises(ValueError, match="box_order='xy'"):
        token_label_targets(scores, ids, (0, 0, 1, 1), num_classes=12, grid=4, box_order="xy")
    with pytest.raises(ValueError, match="target_format='sparse'"):
        token_label_targets(scores, ids, (0, 0, 1, 1), num_classes=12, grid=4,
                            target_format="sparse")
    with pytest.raises(ValueError, match="smoothing=1.0"):
        token_label_targets(scores, ids, (0, 0, 1, 1), num_classes=12, grid=4, smoothing=1.0)


# === Joint augmentation ===


def marked_region(cell=(1, 1), cells=4, size=32):
    """A black image with one bright cell and a one-hot map marking that cell."""
    step = size // cells
    image = np.zeros((size, size, 3), np.uint8)
    image[cell[0] * step:(cell[0] + 1) * step, cell[1] * step:(cell[1] + 1) * step] = 255
    label_map = np.zeros((cells, cells, 2), np.float32)
    label_map[cell] = (1.0, 7.0)  # a score and a class id ride together
    return image, label_map


def marked_cells(label_map):
    return [tuple(c) for c in np.argwhere(label_map[..., 0] == 1.0)]


def test_flip_moves_image_and_map_together():
    augment = TrainAugment(hflip=1.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    image, label_map = marked_region(cell=(1, 0))
    out, moved, box = augment.with_label_map(image, label_map, 32, seed=[0, 1])
    np.testing.assert_allclose(box.numpy(), [0, 0, 1, 1])
    assert marked_cells(moved.numpy()) == [(1, 3)]
    assert moved.numpy()[1, 3, 1] == 7.0
    assert out.numpy()[12, 28].min() > 0.99 and out.numpy()[12, 4].max() < 0.01


@pytest.mark.parametrize("negate", [False, True])
@pytest.mark.parametrize("operation", ["TranslateXRel", "TranslateYRel"])
def test_translate_moves_image_and_map_together(operation, negate):
    rand_augment = RandAugment("rand-m9-n1-p1.0-mstd0")
    augment = TrainAugment(hflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0), randaugment=rand_augment)

    def draws(i):  # RandAugment draws from fold(seed, 1)
        ops, _, _, negated, _ = rand_augment.sample(_fold([0, i], 1))
        return rand_augment.transforms[int(ops[0])], bool(negated[0])

    seed = next([0, i] for i in range(500) if draws(i) == (operation, negate))
    # 8 x 8 map cells of 4 px; the region is cell (3, 3); 0.405 of the side is 3.24 cells.
    image, label_map = marked_region(cell=(3, 3), cells=8)
    out, moved, _ = augment.with_label_map(image, label_map, 32, seed=seed)
    cells = marked_cells(moved.numpy())
    assert len(cells) == 1
    (row, col), = cells
    if operation == "TranslateXRel":
        assert row == 3 and col in (0, 6)
    else:
        assert col == 3 and row in (0, 6)
    assert moved.numpy()[row, col, 1] == 7.0
    # The marked cell's centre shows the bright region in the image, which left its place.
    assert out.numpy()[row * 4 + 2, col * 4 + 2].min() > 0.9
    assert out.numpy()[14, 14].max() < 0.1


# === Pipeline ===

NUM_CLASSES, MAP, K, GRID = 5, (4, 4), 3, 8


class DictTokenLabels:
    """A dict-backed `token_labels`: keys -> records through a hash table."""

    grid, k, num_classes = MAP, K, NUM_CLASSES

    def __init__(self, records):
        self.records = records
        keys = sorted(records)
        self.scores = tf.constant(np.stack([records[key][0] for key in keys] + [np.zeros(MAP + (K,))]),
                                  tf.float32)
        self.ids = tf.constant(np.stack([records[key][1] for key in keys] + [np.zeros(MAP + (K,))]),
                               tf.int32)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.range(len(keys))), len(keys)
        )

    def lookup(self, key):
        row = self.table.lookup(key)
        return tf.gather(self.scores, row), tf.gather(self.ids, row), row < len(self.records)


def toy_data(count=12, skip=()):
    rng = np.random.default_rng(0)
    images = np.stack([np.full((32, 32, 3), 10 * i, np.uint8) for i in range(count)])
    labels = np.arange(count) % NUM_CLASSES
    records = {}
    for i in range(count):
        if i not in skip:
            scores = (rng.normal(size=MAP + (K,)) * 3).astype("float32")
            ids = np.stack([rng.permutation(NUM_CLASSES)[:K] for _ in range(16)]).reshape(MAP + (K,))
            records[str(i)] = (scores, ids.astype("int32"))
    return images, labels, DictTokenLabels(records)


def token_pipeline(token_labels, images, labels, **options):
    return array_dataset(
        images, labels, image_size=32, batch_size=4, training=True, token_labels=token_labels,
        token_grid=GRID, seed=0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **options,
    )


@TF_ONLY
def test_pipeline_batches_the_release_targets_of_each_key():
    images, labels, token_labels = toy_data()
    # Identity augmentation: the box is the whole image, so the targets are the record's.
    augment = TrainAugment(hflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0), label_smoothing=0.1)
    dataset = token_pipeline(token_labels, images, labels, augment=augment, box_order="consistent")
    seen = []
    for batch_images, targets in dataset:
        assert set(targets) == {"labels", "token_labels"}
        assert targets["token_labels"].shape == (4, GRID, GRID, compact_entries(MAP, K, GRID), 2)
        for image, cls, tokens in zip(batch_images.numpy(), targets["labels"].numpy(),
                                      targets["token_labels"].numpy()):
            index = int(round(image[0, 0, 0] * 255 / 10))
            seen.append(index)
            scores, ids = token_labels.records[str(index)]
            expected_cls, expected_tokens = release_reference(
                scores, ids, (0, 0, 1, 1), NUM_CLASSES, GRID, 0.1, "consistent"
            )
            np.testing.assert_allclose(cls, expected_cls, atol=1e-6)
            np.testing.assert_allclose(expand_compact(tokens, NUM_CLASSES), expected_tokens,
                                       atol=1e-6)
    assert sorted(seen) == list(range(12))


@TF_ONLY
def test_pipeline_missing_labels_fail_by_name_or_train_on_the_image_label():
    images, labels, token_labels = toy_data(skip=(3,))
    with pytest.raises(tf.errors.InvalidArgumentError, match="No token label for key.*3"):
        for _ in token_pipeline(token_labels, images, labels):
            pass
    augment = TrainAugment(label_smoothing=0.1)
    dataset = token_pipeline(token_labels, images, labels, augment=augment,
                             allow_missing_labels=True, token_target_format="dense")
    found = 0
    for batch_images, targets in dataset:
        for image, cls, tokens in zip(batch_images.numpy(), targets["labels"].numpy(),
                                      targets["token_labels"].numpy()):
            if abs(image.mean() * 255 - 30) < 1:  # image 3 (its pixels are all 30)
                found += 1
                expected = np.full(NUM_CLASSES, 0.1 / NUM_CLASSES)
                expected[3] += 0.9
                np.testing.assert_allclose(cls, expected, atol=1e-7)
                np.testing.assert_allclose(tokens, np.broadcast_to(expected, tokens.shape),
                                           atol=1e-7)
    assert found == 1
    assert dataset.missing_token_labels.paths == ["3"]
    assert dataset.missing_token_labels.count == 1


@TF_ONLY
def test_pipeline_is_reproducible_and_checks_the_labels():
    images, labels, token_labels = toy_data()
    augment = TrainAugment(randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.25)

    def batches():
        return [
            (x.numpy(), y["labels"].numpy(), y["token_labels"].numpy())
            for x, y in token_pipeline(token_labels, images, labels, augment=augment)
        ]

    first, second = batches(), batches()
    for a, b in zip(first, second):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match="num_classes=7"):
        token_pipeline(token_labels, images, labels, num_classes=7)
    with pytest.raises(ValueError, match="token_grid=None"):
        array_dataset(images, labels, image_size=32, batch_size=4, training=True,
                      token_labels=token_labels)
    with pytest.raises(ValueError, match="MixUp / CutMix"):
        token_pipeline(token_labels, images, labels, augment=TrainAugment(mixup_alpha=0.8))


def test_tiny_model_trains_on_token_label_batches():
    import keras_spvit
    from keras_spvit.training.losses import SoftTargetCrossEntropy
    from keras_spvit.training.trainer import for_model

    images, labels, token_labels = toy_data()
    augment = TrainAugment(randaugment="rand-m9-mstd0.5-inc1", label_smoothing=0.1)
    keras.utils.set_random_seed(0)
    model = keras_spvit.SPViT_Tiny(num_classes=NUM_CLASSES, return_dense=True)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss={"class_logits": SoftTargetCrossEntropy(), "aux_logits": TokenLabelCrossEntropy()},
        jit_compile=keras.backend.backend() == "jax",
    )
    dataset = for_model(token_pipeline(token_labels, images, labels, augment=augment), model)
    history = model.fit(dataset.take(2), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@TF_ONLY
def test_image_folder_keys_reach_the_labels(tmp_path):
    from keras_spvit.data.datasets import image_folder_dataset, image_folder_key

    images, _, _ = toy_data()
    rng = np.random.default_rng(3)
    records = {}
    for i in range(8):
        folder = tmp_path / f"c{i % 2}"
        folder.mkdir(exist_ok=True)
        tf.io.write_file(str(folder / f"img{i}.png"), tf.io.encode_png(images[i]))
        scores = (rng.normal(size=MAP + (K,)) * 3).astype("float32")
        ids = np.stack([rng.permutation(NUM_CLASSES)[:K] for _ in range(16)]).reshape(MAP + (K,))
        records[f"c{i % 2}/img{i}"] = (scores, ids.astype("int32"))
    assert image_folder_key(tmp_path / "c1" / "img3.png", tmp_path) == "c1/img3"
    augment = TrainAugment(hflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    dataset = image_folder_dataset(
        tmp_path, image_size=32, batch_size=4, training=True, num_classes=NUM_CLASSES,
        augment=augment, token_labels=DictTokenLabels(records), token_grid=GRID, seed=1,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), start=(0, 0),
    )
    for batch_images, targets in dataset.take(2):
        for image, cls in zip(batch_images.numpy(), targets["labels"].numpy()):
            index = int(round(image[0, 0, 0] * 255 / 10))
            scores, ids = records[f"c{index % 2}/img{index}"]
            expected = release_reference(scores, ids, (0, 0, 1, 1), NUM_CLASSES, GRID, 0.0,
                                         "release")[0]
            np.testing.assert_allclose(cls, expected, atol=1e-6)


@pytest.mark.parametrize("map_shape,grid", [((5, 7), (3, 4)), ((18, 18), (14, 14)), ((9, 9), (2, 2))])
def test_compact_targets_hold_every_support_on_random_crops(map_shape, grid):
    rng = np.random.default_rng(7)
    num_classes, k = 40, 4
    scores, ids = teacher_record(8, *map_shape, k=k, num_classes=num_classes)
    entries = compact_entries(map_shape, k, grid)
    for _ in range(6):
        height, width = rng.uniform(0.05, 1.0, 2)
        box = (rng.uniform(0, 1 - height), rng.uniform(0, 1 - width), height, width)
        for box_order in ("release", "consistent"):
            args = dict(num_classes=num_classes, grid=grid, smoothing=0.1, box_order=box_order)
            _, compact = token_label_targets(scores, ids, box, **args)
            _, dense = token_label_targets(scores, ids, box, target_format="dense", **args)
            assert compact.shape == grid + (entries, 2)
            np.testing.assert_allclose(expand_compact(compact.numpy(), num_classes), dense.numpy(),
                                       atol=1e-6)


@TF_ONLY
def test_tfds_records_are_keyed_by_tfds_id(tmp_path_factory):
    import tensorflow_datasets as tfds

    from keras_spvit.data.datasets import tfds_dataset
    from tests.data.test_pipelines import KerasSpvitTinyGrey

    data_dir = str(tmp_path_factory.mktemp("tfds_token_labels"))
    KerasSpvitTinyGrey(data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=3)
    )
    source = tfds.load("keras_spvit_tiny_grey", split="train", data_dir=data_dir,
                       read_config=tfds.ReadConfig(add_tfds_id=True))
    # One record per class, the same at every location: any crop box gives the same targets.
    per_label = [
        tuple(np.broadcast_to(a, MAP + (K,)) for a in teacher_record(20 + label, 1, 1, K, 3))
        for label in range(3)
    ]
    records = {
        element["tfds_id"].numpy().decode(): per_label[int(element["label"])] for element in source
    }
    assert len(records) == 12

    class Labels(DictTokenLabels):
        num_classes = 3

    augment = TrainAugment()
    options = dict(image_size=16, batch_size=4, training=True, data_dir=data_dir, download=False,
                   augment=augment, token_grid=4, seed=0)
    expected = [release_reference(*record, (0, 0, 1, 1), 3, 4, 0.0, "release")[0]
                for record in per_label]
    train = tfds_dataset("keras_spvit_tiny_grey", "train", token_labels=Labels(records), **options)
    rows = np.concatenate([targets["labels"].numpy() for _, targets in train])
    assert len(rows) == 12
    for row in rows:
        assert min(np.abs(row - e).max() for e in expected) < 1e-6
    missing = dict(list(records.items())[1:])
    first = list(records)[0]
    with pytest.raises(tf.errors.InvalidArgumentError, match=first):
        for _ in tfds_dataset("keras_spvit_tiny_grey", "train", token_labels=Labels(missing),
                              **options):
            pass
