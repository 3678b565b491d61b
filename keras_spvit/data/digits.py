"""The bundled UCI handwritten digits: offline data for demos, examples and tests.

1,797 grey 8x8 images of the digits 0-9, CC BY 4.0; see
`DIGITS_LICENSE.txt` beside this file for the attribution. The UCI set
stores 17 grey levels (0..16); `digits_split` gives ordinary uint8 RGB
images in 0..255, the input every keras_spvit preprocessor (and the
built-in `spvit_tiny_digits` preset) takes.
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

_PATH = Path(__file__).with_name("digits.npz")
NUM_CLASSES = 10
UCI_MAX = 16  # the UCI set's brightest grey level


def load_digits():
    """The raw UCI arrays, all 1,797 examples, in the UCI set's own 0..16 grey levels.

    For images a model or preprocessor takes, use `digits_split` instead.

    Returns:
        `(images, labels)`: uint8 `(1797, 8, 8)` in 0..16 and uint8 `(1797,)`.

    Example:

    >>> images, labels = load_digits()
    >>> images.shape, int(images.max())
    ((1797, 8, 8), 16)
    """
    with np.load(_PATH) as data:
        return data["images"], data["labels"]


def split_indices(num_examples, test_fraction, seed):
    """A fixed, stratification-free random split: `(train, test)` index arrays."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"Expected `test_fraction` in (0, 1). Received: test_fraction={test_fraction}"
        )
    order = np.random.default_rng(seed).permutation(num_examples)
    cut = int(round(num_examples * (1.0 - test_fraction)))
    return order[:cut], order[cut:]


def digits_split(split="train", *, test_fraction=0.2, seed=0, channels=3, uci_levels=False):
    """One split of the bundled digits as ordinary images: `(images, labels)`.

    By default the images are uint8 `(n, 8, 8, 3)` in 0..255 (grey repeated
    to RGB), what a keras_spvit classifier with a preprocessor takes in
    `predict` / `fit` / `evaluate`: the built-in `spvit_tiny_digits` preset
    reaches its stated held-out accuracy on `digits_split("test")`. Labels
    are int32 `(n,)`.

    Args:
        split: `"train"`, `"test"` or `"all"`.
        test_fraction: float in (0, 1). Held-out share; the split is fixed
            by `seed` (20% and seed 0: 1,438 train and 359 test images).
        seed: int. Seeds the split.
        channels: 3 (RGB, default) or 1 (grey, `(n, 8, 8, 1)`).
        uci_levels: bool. If `True`, return the UCI set's own pixels instead:
            uint8 `(n, 8, 8)` in 0..16, no channel axis (what this function
            returned before; no model takes these as they are).

    Returns:
        `(images, labels)`.

    Example:

    >>> images, labels = digits_split("test")
    >>> images.shape, images.dtype, int(images.max())
    ((359, 8, 8, 3), dtype('uint8'), 255)
    >>> model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits")
    >>> predictions = model.predict(images).argmax(-1)  # 98.9% == labels
    """
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"Expected `channels` to be 1 or 3. Received: channels={channels!r}")
    images, labels = load_digits()
    train, test = split_indices(len(labels), test_fraction, seed)
    chosen = {"train": train, "test": test, "all": np.arange(len(labels))}
    if split not in chosen:
        raise ValueError(f"Expected `split` in {sorted(chosen)}. Received: split={split!r}")
    index = np.sort(chosen[split])
    images, labels = images[index], labels[index].astype("int32")
    if uci_levels:
        return images, labels
    images = np.round(images.astype("float32") * (255.0 / UCI_MAX)).astype("uint8")
    return np.repeat(images[..., None], channels, axis=-1), labels


def digits_dataset(
    split="train", image_size=32, batch_size=64, test_fraction=0.2, seed=0, shuffle=None
):
    """A batched `tf.data.Dataset` of `(images, labels)` from the bundled digits.

    Images are scaled to [0, 1], resized bilinearly to `image_size` (the
    models' patch stems want at least 4 patches per side), repeated to 3
    channels and normalised to mean 0.5, std 0.5, channels-last float32:
    ready for a model called without a preprocessor.

    Args:
        split: `"train"`, `"test"` or `"all"`.
        image_size: int. Output height and width.
        batch_size: int.
        test_fraction: float in (0, 1). Held-out share; the split is fixed by
            `seed`.
        seed: int. Seeds the split and the shuffling.
        shuffle: bool. Defaults to `True` for `"train"`.

    Returns:
        A `tf.data.Dataset`, cached, shuffled (if asked) and prefetched.

    Example:

    >>> train = digits_dataset("train", image_size=32, batch_size=64)
    >>> images, labels = next(iter(train))  # (64, 32, 32, 3), (64,)
    """
    images, y = digits_split(split, test_fraction=test_fraction, seed=seed, uci_levels=True)
    x = images.astype("float32")[..., None] / float(UCI_MAX)

    def prepare(image, label):
        image = tf.image.resize(image, (image_size, image_size), method="bilinear")
        image = tf.repeat(image, 3, axis=-1)
        return (image - 0.5) / 0.5, label

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle if shuffle is not None else split == "train":
        dataset = dataset.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
