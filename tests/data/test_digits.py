"""The bundled digits: shipped, offline, and split the same way every time."""

import numpy as np
import pytest

from keras_spvit.data import digits_dataset, load_digits


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


def test_bad_split_is_named():
    with pytest.raises(ValueError, match="split='val'"):
        digits_dataset("val")
