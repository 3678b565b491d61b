"""Full-size Refined-ViTs have exactly the official parameter counts and keys.

Built on TensorFlow only: parameter shapes do not depend on the backend.
"""

import numpy as np
import pytest

import keras_spvit
from keras_spvit.conversion.refined_vit import (
    refined_vit_weight_map,
)
from tests.conftest import BACKEND
from tests.conversion.test_official_weights import official_keys
from tests.models.spvit.test_spvit_parameter_counts import OFFICIAL

pytestmark = [
    pytest.mark.large,
    pytest.mark.skipif(BACKEND != "tensorflow", reason="backend-independent; built once"),
    pytest.mark.usefixtures("zero_initializers"),  # shapes only
]

BUILDERS = {
    "Refiner_ViT_S": keras_spvit.RefinedViT_S,
    "Refiner_ViT_M": keras_spvit.RefinedViT_M,
    "Refiner_ViT_L": keras_spvit.RefinedViT_L,
}


@pytest.mark.parametrize("size", [224, 384])
@pytest.mark.parametrize("variant", sorted(BUILDERS))
def test_official_parameter_count(variant, size):
    model = BUILDERS[variant](image_shape=(size, size, 3))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == OFFICIAL[(variant, size)]


def test_mapping_covers_the_full_size_state_dict():
    keys = official_keys("refiner_s")
    model = keras_spvit.RefinedViT_S()
    weight_map = refined_vit_weight_map(model.backbone, model.head)
    assert set(weight_map) == {k for k in keys if not k.endswith("num_batches_tracked")}
    for key, (variable, transform) in weight_map.items():
        assert transform(np.zeros(keys[key], "float32")).shape == tuple(variable.shape), key
