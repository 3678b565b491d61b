"""The bundled digits: shipped, offline, split the same way every time, and
returned as the images a model's preprocessor takes."""

import numpy as np
import pytest

from keras_spvit.data import digits_dataset, digits_split, load_digits


def test_bundled_digits_are_the_uci_set():
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert images.max() == 16 and set(np.unique(labels)) == set(range(10))


def test_dataset_splits_are_disjoint_and_normalised():
    train = list(digits_dataset("train", image_size=16, batch_size=2000, shuffle=False))
    test = list(digits_dataset("test", image_size=16, batch_size=2000))
    (x_train, y_train), (x_test, y_test) = train[0], test[0]
    assert x_train.shape == (1438, 16, 16, 3) and x_test.shape == (359, 16, 16, 3)
    assert -1.0 <= float(np.min(x_train)) and float(np.max(x_train)) <= 1.0
    assert len(y_train) + len(y_test) == 1797


def test_train_and_test_splits_partition_the_uci_set():
    """Every UCI example in exactly one split, with its own label (a multiset
    comparison of the examples themselves: the set has duplicate images)."""
    from collections import Counter

    def examples(images, labels):
        return Counter((image.astype("uint8").tobytes(), int(label))
                       for image, label in zip(images, labels))

    everything = examples(*load_digits())
    train = examples(*digits_split("train", uci_levels=True))
    test = examples(*digits_split("test", uci_levels=True))
    assert train + test == everything
    assert sum(test.values()) == 359
    # Disjoint up to the set's own duplicates: an example in both splits
    # appears at least twice in the UCI set.
    for example in set(train) & set(test):
        assert everything[example] >= 2


@pytest.mark.parametrize("call", [digits_dataset, digits_split])
def test_bad_split_is_named(call):
    with pytest.raises(ValueError, match="split='val'"):
        call("val")


def test_digits_split_gives_ordinary_uint8_rgb_images():
    images, labels = digits_split("test")
    assert images.shape == (359, 8, 8, 3) and images.dtype == np.uint8
    assert labels.shape == (359,) and labels.dtype == np.int32
    assert (int(images.min()), int(images.max())) == (0, 255)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey as RGB
    # The 17 UCI grey levels map onto 0..255 evenly: level k -> round(k * 255 / 16).
    assert sorted(np.unique(images)) == [round(k * 255 / 16) for k in range(17)]


def test_splits_partition_the_set_with_the_uci_pixels():
    raw, raw_labels = load_digits()
    train_x, train_y = digits_split("train")
    test_x, test_y = digits_split("test")
    all_x, all_y = digits_split("all", channels=1)
    assert (len(train_y), len(test_y), all_x.shape) == (1438, 359, (1797, 8, 8, 1))
    np.testing.assert_array_equal(all_y, raw_labels)
    # An independent rescaling of the raw file: 16 -> 255, 8 -> 128 (127.5 rounds to even).
    np.testing.assert_array_equal(all_x[..., 0], (raw.astype(np.int64) * 255 + 8) // 16)
    assert sorted(np.concatenate([train_y, test_y]).tolist()) == sorted(raw_labels.tolist())


def test_uci_levels_keep_the_old_output():
    images, labels = digits_split("test", uci_levels=True)
    assert images.shape == (359, 8, 8) and images.max() == 16
    np.testing.assert_array_equal(
        np.round(images.astype("float32") * 255 / 16).astype("uint8"), digits_split("test")[0][..., 0]
    )


@pytest.mark.parametrize("kwargs, match", [
    (dict(channels=2), "channels=2"),
    (dict(test_fraction=1.5), "test_fraction=1.5"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        digits_split("test", **kwargs)
