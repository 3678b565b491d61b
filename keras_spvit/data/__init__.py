"""tf.data input pipelines."""

from keras_spvit.data.datasets import (
    array_dataset,
    image_folder_dataset,
    image_folder_key,
    list_image_folder,
    tfds_dataset,
)
from keras_spvit.data.dense_targets import roi_align, token_label_targets
from keras_spvit.data.digits import digits_dataset, digits_split, load_digits
from keras_spvit.data.idx import load_fashion_mnist, read_idx
from keras_spvit.data.mix_token import mix_token, sample_token_box, token_targets
from keras_spvit.data.pipelines import MissingTokenLabels, classification_pipeline
from keras_spvit.data.rand_augment import RandAugment
from keras_spvit.data.random_erasing import random_erasing
from keras_spvit.data.token_labels import (
    TokenLabels,
    TokenLabelWriter,
    convert_released_labels,
    read_released_label,
)
from keras_spvit.data.train_augment import TrainAugment
from keras_spvit.data.transforms import (
    color_jitter,
    eval_transform,
    normalize,
    random_resized_crop,
    sample_crop_box,
)
from keras_spvit.utils.preprocessing import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MissingTokenLabels",
    "TokenLabelWriter",
    "TokenLabels",
    "convert_released_labels",
    "image_folder_key",
    "load_fashion_mnist",
    "read_idx",
    "read_released_label",
    "roi_align",
    "token_label_targets",
    "RandAugment",
    "TrainAugment",
    "array_dataset",
    "classification_pipeline",
    "color_jitter",
    "digits_dataset",
    "digits_split",
    "eval_transform",
    "image_folder_dataset",
    "list_image_folder",
    "load_digits",
    "mix_token",
    "normalize",
    "random_erasing",
    "random_resized_crop",
    "sample_crop_box",
    "sample_token_box",
    "token_targets",
    "tfds_dataset",
]
