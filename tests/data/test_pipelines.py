"""Pipelines: TFDS offline, image folders, arrays; labels, seeds, sharding, fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_spvit.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TrainAugment,
    array_dataset,
    eval_transform,
    image_folder_dataset,
    list_image_folder,
    tfds_dataset,
)

Policy = tf.data.experimental.AutoShardPolicy


def _policy(dataset):
    return dataset.options().experimental_distribute.auto_shard_policy


def _arrays(count=10, height=20, width=24):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    return images, np.arange(count) % 3


# === Arrays ===


def test_array_training_batches_are_normalised_and_sparse():
    images, labels = _arrays()
    train = array_dataset(images, labels, image_size=16, batch_size=4, training=True, seed=0)
    batches = list(train)
    assert len(batches) == 2  # 10 // 4, the partial batch is dropped
    x, y = batches[0]
    assert x.shape == (4, 16, 16, 3) and x.dtype == tf.float32
    assert y.shape == (4,) and y.dtype == tf.int32
    low = (0 - np.array(IMAGENET_MEAN)) / IMAGENET_STD
    high = (1 - np.array(IMAGENET_MEAN)) / IMAGENET_STD
    assert (x.numpy() >= low - 1e-5).all() and (x.numpy() <= high + 1e-5).all()
    assert _policy(train) == Policy.DATA


def test_array_evaluation_is_ordered_eval_transform():
    images, labels = _arrays()
    val = array_dataset(images, labels, image_size=16, batch_size=4, training=False, cache=True)
    batches = list(val)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)
    np.testing.assert_allclose(
        batches[0][0][1].numpy(), eval_transform(images[1], 16).numpy(), atol=1e-6
    )


def test_same_seed_same_epoch_and_epochs_differ():
    images, labels = _arrays()

    def epoch(dataset):
        return np.concatenate([x.numpy() for x, _ in dataset])

    first = array_dataset(images, labels, image_size=16, batch_size=2, training=True, seed=5)
    again = array_dataset(images, labels, image_size=16, batch_size=2, training=True, seed=5)
    other = array_dataset(images, labels, image_size=16, batch_size=2, training=True, seed=6)
    one = epoch(first)
    np.testing.assert_array_equal(one, epoch(again))
    assert not np.array_equal(one, epoch(first))  # next epoch
    assert not np.array_equal(one, epoch(other))


@pytest.mark.parametrize("augment", [None, TrainAugment(mixup_alpha=0.8, seed=0)],
                         ids=["examples", "batches"])
def test_an_iterator_draws_the_same_seeds_whatever_other_iterators_read(augment):
    # Keras `fit` makes two iterators per run (a peek at one batch, then the
    # epochs): the second must not depend on what the first read, nor on when.
    images, labels = _arrays(12)

    def pipeline():
        return array_dataset(images, labels, image_size=16, batch_size=2, training=True,
                             augment=augment, num_classes=3, seed=5)

    reference = pipeline()
    first, second = list(reference), list(reference)  # one iteration after the other
    dataset = pipeline()
    one, two = iter(dataset), iter(dataset)
    alternating = [(next(one), next(two)) for _ in range(len(first))]  # both live, interleaved
    for (a, b), x, y in zip(alternating, first, second):
        np.testing.assert_array_equal(a[0].numpy(), x[0].numpy())
        np.testing.assert_array_equal(b[0].numpy(), y[0].numpy())
        np.testing.assert_array_equal(b[1].numpy(), y[1].numpy())
    assert not np.array_equal(first[0][0].numpy(), second[0][0].numpy())  # epochs differ


def test_mixing_and_smoothing_make_one_hot_labels():
    images, labels = _arrays()
    augment = TrainAugment(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, seed=0)
    train = array_dataset(
        images, labels, image_size=16, batch_size=4, training=True, augment=augment, num_classes=3
    )
    for _, y in train:
        assert y.shape == (4, 3) and y.dtype == tf.float32
        np.testing.assert_allclose(y.numpy().sum(1), 1.0, atol=1e-5)
        assert y.numpy().min() >= 0.1 / 3 - 1e-6
    # The same augment on the evaluation split: one-hot without smoothing.
    val = array_dataset(
        images, labels, image_size=16, batch_size=4, training=False, augment=augment, num_classes=3
    )
    _, y = next(iter(val))
    np.testing.assert_array_equal(y.numpy(), np.eye(3)[labels[:4]])
    with pytest.raises(ValueError, match="num_classes=None"):
        array_dataset(images, labels, image_size=16, batch_size=4, training=True, augment=augment)


@pytest.mark.parametrize("recipe", ["spvit", "digits"])
def test_pipelines_run_the_package_functions_unconverted_by_autograph(monkeypatch, recipe):
    # tf.data converts every map function with AutoGraph, recursively: converting the
    # package's augmentation took ~15 s of a pipeline's build on a 2-core CPU
    # (`taken_branch_only`); none of it needs converting (explicit tf.cond and loops).
    from keras_spvit.training.recipes import get_recipe

    converted = autograph_conversions(monkeypatch)
    images, labels = _arrays(count=8)
    for training in (True, False):
        dataset = array_dataset(images, labels, image_size=16, batch_size=4, training=training,
                                num_classes=3, seed=0,
                                augment=TrainAugment.from_recipe(get_recipe(recipe), 0))
        next(iter(dataset))
    ours = sorted({m for m in converted if m.startswith("keras_spvit")})
    assert ours == [], ours


def autograph_conversions(monkeypatch):
    """The modules of the functions AutoGraph converts from now on (a list that grows)."""
    from tensorflow.python.autograph.impl import api

    converted, original = [], api.converted_call

    def recording(f, *args, **kwargs):
        converted.append(getattr(f, "__module__", None) or "")
        return original(f, *args, **kwargs)

    monkeypatch.setattr(api, "converted_call", recording)
    return converted


def test_the_prediction_pipeline_is_not_converted_either(monkeypatch):
    from keras_spvit.cli.common import Preprocessing
    from keras_spvit.cli.predict import preprocessed_batches

    converted = autograph_conversions(monkeypatch)
    images = [np.zeros((20, 24, 3), np.uint8), np.full((9, 7, 3), 200, np.uint8)]
    preprocessing = Preprocessing((16, 16), 1.0, (0.5,) * 3, (0.5,) * 3)
    batch = next(iter(preprocessed_batches(images, preprocessing, 2)))
    assert tuple(batch.shape) == (2, 16, 16, 3)
    assert sorted({m for m in converted if m.startswith("keras_spvit")}) == []


def test_array_inputs_are_checked():
    images, labels = _arrays()
    kwargs = {"image_size": 16, "batch_size": 4, "training": False}
    with pytest.raises(ValueError, match="max=2.0"):
        array_dataset(images / 127.5, labels, **kwargs)
    with pytest.raises(ValueError, match="dtype=int64"):
        array_dataset(images.astype("int64"), labels, **kwargs)
    with pytest.raises(ValueError, match=r"labels.shape=\(9,\)"):
        array_dataset(images, labels[:9], **kwargs)
    with pytest.raises(ValueError, match="batch_size=16"):
        array_dataset(images, labels, image_size=16, batch_size=16, training=True)
    grey = array_dataset(images[..., 0] / 255.0, labels, **kwargs)
    x, _ = next(iter(grey))
    assert x.shape == (4, 16, 16, 3)


def test_input_context_shards_examples_and_batches_per_replica():
    images, labels = _arrays()
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2
    )
    val = array_dataset(
        images, labels, image_size=16, batch_size=4, training=False, input_context=context
    )
    np.testing.assert_array_equal(np.concatenate([y for _, y in val]), labels[1::2])
    assert max(len(y) for _, y in val) == 2
    assert _policy(val) == Policy.OFF


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="pure tf.data (no Keras layer): backend-independent, run once")
def test_rand_augment_per_batch_gives_the_per_example_batches():
    # The batched path (crop and draws per example, RandAugment, normalise and
    # erasing per batch) yields exactly the per-example pipeline's batches,
    # also under an input context (this worker's share).
    images, labels = _arrays(count=12, height=28, width=30)
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2
    )

    def batches(batch_rand_augment, input_context=None):
        augment = TrainAugment(randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.5,
                               batch_rand_augment=batch_rand_augment)
        train = array_dataset(images, labels, image_size=16, batch_size=4, training=True,
                              augment=augment, seed=2, input_context=input_context)
        return [(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y)) for x, y in train]

    for input_context in (None, context):
        per_example, per_batch = batches(False, input_context), batches(True, input_context)
        assert len(per_batch) == len(per_example) == 3
        for (x, y), (bx, by) in zip(per_example, per_batch):
            np.testing.assert_array_equal(bx, x)
            np.testing.assert_array_equal(by, y)
            assert bx.shape == ((4 if input_context is None else 2), 16, 16, 3)


def test_pipeline_trains_a_model_on_this_backend():
    images, labels = _arrays(count=8)
    augment = TrainAugment(mixup_alpha=0.8, label_smoothing=0.1, seed=0)
    train = array_dataset(
        images, labels, image_size=16, batch_size=4, training=True, augment=augment, num_classes=3
    )
    model = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)]
    )
    model.compile("sgd", keras.losses.CategoricalCrossentropy(from_logits=True))
    history = model.fit(train, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


# === Image folders ===


def _write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    encode = tf.io.encode_jpeg if path.suffix.lower() in (".jpg", ".jpeg") else tf.io.encode_png
    path.write_bytes(encode(image).numpy())


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(1)

    def rgb(height, width):
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)

    _write(tmp_path / "b_cat" / "2.png", rgb(20, 30))
    _write(tmp_path / "b_cat" / "1.JPG", rgb(18, 18))
    _write(tmp_path / "b_cat" / "nested" / "0.png", rgb(24, 20))
    _write(tmp_path / "a_dog" / "grey.png", np.full((20, 20, 1), 200, np.uint8))
    _write(tmp_path / "C_upper" / "alpha.png", rng.integers(0, 256, (20, 20, 4), dtype=np.uint8))
    _write(tmp_path / ".hidden" / "x.png", rgb(20, 20))
    (tmp_path / "b_cat" / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_classes_sort_by_name(folder):
    paths, labels, names = list_image_folder(folder)
    assert names == ["C_upper", "a_dog", "b_cat"]  # code-point order, as torchvision
    assert labels == [0, 1, 2, 2, 2]
    assert [p.split("b_cat")[-1] for p in paths[2:]] == ["/1.JPG", "/2.png", "/nested/0.png"]
    _, labels, names = list_image_folder(folder, class_names=["b_cat", "a_dog"])
    assert names == ["b_cat", "a_dog"] and labels == [0, 0, 0, 1]


def test_image_folder_dataset_decodes_every_format(folder):
    val = image_folder_dataset(
        folder,
        image_size=16,
        batch_size=8,
        training=False,
        crop_pct=1.0,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    assert val.class_names == ["C_upper", "a_dog", "b_cat"]
    assert _policy(val) == Policy.DATA
    x, y = next(iter(val))
    assert x.shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(y.numpy(), [0, 1, 2, 2, 2])
    np.testing.assert_allclose(x[1].numpy(), 200 / 255, atol=1e-5)  # grey -> RGB
    train = image_folder_dataset(folder, image_size=16, batch_size=2, training=True, seed=0)
    assert [tuple(x.shape) for x, _ in train] == [(2, 16, 16, 3)] * 2


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        image_folder_dataset(tmp_path / "missing", image_size=16, batch_size=2, training=False)
    with pytest.raises(ValueError, match="No class folders"):
        list_image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "readme.txt").write_text("")
    with pytest.raises(ValueError, match="empty_class.*has no images"):
        list_image_folder(tmp_path)
    with pytest.raises(ValueError, match="'nope'"):
        list_image_folder(tmp_path, class_names=["nope"])


# === TFDS ===


class KerasSpvitTinyGrey(tfds.core.GeneratorBasedBuilder):
    """Grey images of varying size in three classes, written by the tests."""

    VERSION = tfds.core.Version("1.0.0")
    # No checksums file beside this module to look for (locating one in a
    # package needs `importlib_resources`, which TFDS does not install).
    code_path = None

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 1)),
                    "label": tfds.features.ClassLabel(names=["ant", "bee", "cat"]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(12), "test": self._generate_examples(5)}

    def _generate_examples(self, count):
        rng = np.random.default_rng(count)
        for i in range(count):
            image = rng.integers(0, 256, (18 + i, 20, 1), dtype=np.uint8)
            yield i, {"image": image, "label": i % 3}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = KerasSpvitTinyGrey(data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3))
    return str(data_dir)


def test_tfds_split_loads_offline(tfds_dir):
    name = "keras_spvit_tiny_grey"
    train = tfds_dataset(
        name,
        "train",
        image_size=16,
        batch_size=4,
        training=True,
        data_dir=tfds_dir,
        download=False,
        seed=0,
    )
    assert train.class_names == ["ant", "bee", "cat"]
    assert _policy(train) == Policy.DATA  # training: its seed stream is a second source
    batches = list(train)
    assert len(batches) == 3
    assert batches[0][0].shape == (4, 16, 16, 3) and batches[0][1].dtype == tf.int32
    val = tfds_dataset(
        name,
        "test[:4]",
        image_size=16,
        batch_size=8,
        training=False,
        data_dir=tfds_dir,
        download=False,
        augment=TrainAugment(label_smoothing=0.1),
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    x, y = next(iter(val))
    assert x.shape == (4, 16, 16, 3) and y.shape == (4, 3)  # num_classes from the label feature
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # grey -> RGB
    assert _policy(val) == Policy.FILE  # three files
    with pytest.raises(ValueError, match="Received: shard_policy='file'"):
        tfds_dataset(name, "train", image_size=16, batch_size=4, training=True,
                     data_dir=tfds_dir, download=False, shard_policy="file")


class KerasSpvitTinyGreyIds(KerasSpvitTinyGrey):
    """The same layout, each image one grey level, 10 * i + 5: its id survives any
    crop, flip and resize (a constant image stays constant)."""

    def _generate_examples(self, count):
        for key, example in super()._generate_examples(count):
            yield key, {**example, "image": np.full_like(example["image"], 10 * key + 5)}


def _ids(dataset):
    """The example ids of a pipeline normalised with mean 0, std 1: sorted."""
    ids = []
    for images, _ in dataset:
        levels = keras.ops.convert_to_numpy(images).reshape(len(images), -1) * 255.0
        assert np.ptp(levels, axis=1).max() < 0.05  # constant images stayed constant
        ids.extend(int(round((level - 5) / 10)) for level in levels[:, 0])
    return sorted(ids)


def test_tfds_shards_by_elements_are_disjoint_and_cover_the_split(tmp_path):
    # What tf.distribute does to a pipeline given to `fit` on several workers:
    # training pipelines are sharded by batches (DATA: every worker builds the
    # same pipeline and keeps its share), evaluation ones by file (FILE walks
    # the pipeline back to the TFRecord files).
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    KerasSpvitTinyGreyIds(data_dir=str(tmp_path)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=3))
    kwargs = {"image_size": 16, "data_dir": str(tmp_path), "download": False, "seed": 0,
              "mean": (0, 0, 0), "std": (1, 1, 1)}
    name = "keras_spvit_tiny_grey_ids"
    assert _ids(tfds_dataset(name, "train", batch_size=2, training=False, **kwargs)) == list(
        range(12))
    for pipelines in (2, 3):
        for training in (True, False):
            shards = [
                _ids(_AutoShardDataset(tfds_dataset(name, "train", batch_size=2,
                                                    training=training, **kwargs), pipelines, i))
                for i in range(pipelines)
            ]
            assert all(shards), shards  # every worker reads something
            assert sorted(sum(shards, [])) == list(range(12)), shards  # disjoint, all covered
    # The per-worker input context (each worker its own files).
    shards = []
    for worker in range(3):
        context = tf.distribute.InputContext(
            num_input_pipelines=3, input_pipeline_id=worker, num_replicas_in_sync=3)
        shards.append(_ids(tfds_dataset(name, "train", batch_size=3, training=False,
                                        input_context=context, **kwargs)))
    assert all(shards) and sorted(sum(shards, [])) == list(range(12)), shards


class KerasSpvitTinyGreyCorrupt(KerasSpvitTinyGrey):
    """The same, with random bytes in place of train example 5's PNG."""

    def _generate_examples(self, count):
        for key, example in super()._generate_examples(count):
            if count == 12 and key == 5:
                example = {**example, "image": np.random.default_rng(5).bytes(300)}
            yield key, example


def test_tfds_record_that_does_not_decode_is_named_by_its_tfds_id(tmp_path):
    builder = KerasSpvitTinyGreyCorrupt(data_dir=str(tmp_path))
    builder.download_and_prepare()
    kwargs = {"image_size": 16, "data_dir": str(tmp_path), "download": False, "seed": 0}
    name = "keras_spvit_tiny_grey_corrupt"
    # Training: the run goes on, the record is replaced in its batch and named.
    train = tfds_dataset(name, "train", batch_size=4, training=True, **kwargs)
    batches = list(train)
    assert len(batches) == 3 and all(x.shape == (4, 16, 16, 3) for x, _ in batches)
    # The corrupt record's id, read independently from the prepared files.
    raw = tfds.load(name, split="train", data_dir=str(tmp_path), download=False,
                    decoders={"image": tfds.decode.SkipDecoding()},
                    read_config=tfds.ReadConfig(add_tfds_id=True))
    corrupt = np.random.default_rng(5).bytes(300)
    (record,) = [r["tfds_id"].numpy().decode() for r in raw if r["image"].numpy() == corrupt]
    assert record.startswith(f"{name}-train.tfrecord-")
    assert train.decode_errors.paths == [record]
    # Its place holds another example of the batch, with that example's label.
    (x, y), index = next((b, i) for b in batches for i in range(4) if _has_duplicate(b[0], i))
    assert np.any(np.all(x == x[index], axis=(1, 2, 3)) & (y == y[index]))
    # Evaluation: the same record, named the same way.
    val = tfds_dataset(name, "train", batch_size=12, training=False, **kwargs)
    (x, y), = list(val)
    assert x.shape == (12, 16, 16, 3) and val.decode_errors.paths == [record]
    position = int(record.rsplit("__", 1)[1])  # evaluation reads in file order
    np.testing.assert_array_equal(x[position], x[0 if position else 1])
    # Strict: fails on it, naming it.
    strict = tfds_dataset(name, "train", batch_size=12, training=False, strict_data=True,
                          **kwargs)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"cannot decode {record}"):
        list(strict)


def _has_duplicate(images, i):
    same = np.all(images.numpy() == images.numpy()[i], axis=(1, 2, 3))
    return same.sum() > 1
