import itertools

import numpy as np
import pytest

from keras_spvit.utils.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    center_crop_offset,
    eval_resize_size,
    eval_resized_shape,
    eval_resized_shape_tf,
)


def test_imagenet_constants_are_timms():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)


def test_resize_size_known_values():
    # timm: square -> int(floor(size / crop_pct)); non-square -> each side.
    assert eval_resize_size((224, 224), 0.875) == 256
    assert eval_resize_size((224, 224), 0.9) == 248
    assert eval_resize_size((384, 384), 1.0) == 384
    assert eval_resize_size((224, 320), 0.875) == (256, 365)


def test_resized_shape_known_values():
    # torchvision Resize(256) on a 500x375 (w x h) image gives 341x256.
    assert eval_resized_shape(375, 500, (224, 224), 0.875) == (256, 341)
    assert eval_resized_shape(500, 375, (224, 224), 0.875) == (341, 256)
    assert eval_resized_shape(300, 300, (224, 224), 0.9) == (248, 248)
    assert eval_resized_shape(375, 500, (224, 320), 0.875) == (256, 365)


def test_center_crop_offset_rounds_half_to_even():
    assert center_crop_offset(341, 224) == 58  # 58.5 -> 58
    assert center_crop_offset(343, 224) == 60  # 59.5 -> 60
    assert center_crop_offset(256, 224) == 16


@pytest.mark.parametrize("image_size", [(32, 32), (24, 40)])
def test_graph_version_agrees_with_static(image_size):
    tf = pytest.importorskip("tensorflow")
    sides = (7, 31, 45, 60, 99, 375, 500)
    for (height, width), crop_pct in itertools.product(
        itertools.product(sides, sides), (0.875, 0.9, 0.95, 1.0)
    ):
        graph = eval_resized_shape_tf(tf.constant(height), tf.constant(width), image_size, crop_pct)
        expected = eval_resized_shape(height, width, image_size, crop_pct)
        np.testing.assert_array_equal(graph.numpy(), expected)
        offsets = [int(center_crop_offset(graph[i], image_size[i]).numpy()) for i in (0, 1)]
        assert offsets == [center_crop_offset(expected[i], image_size[i]) for i in (0, 1)]
