import keras
import numpy as np
import pytest

import keras_spvit
from keras_spvit.analysis.plots import centre_priors, plot_spatial_priors


def test_centre_priors_are_the_prior_rows_of_the_centre_query():
    model = keras_spvit.SPViT(embed_dim=16, depth=2, num_heads=2, spatial_prior_blocks=1,
                              stem="patch", patch_size=4, num_classes=3,
                              image_shape=(12, 20, 3))  # a 3x5 grid
    attention = model.backbone.get_layer("block_0").attention
    rng = np.random.default_rng(0)
    for weight in attention.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    (prior,) = centre_priors(model)
    full = keras.ops.convert_to_numpy(attention.spatial_prior())
    assert prior.shape == (2, 3, 5)
    np.testing.assert_array_equal(prior.reshape(2, 15), full[:, 1 * 5 + 2, :])
    # The prior is a function of the offset: the centre sees offset 0 at (1, 2).
    assert not np.allclose(prior[0], prior[1])


def test_plot_writes_png_and_refuses_models_without_priors(tmp_path):
    path = plot_spatial_priors(keras_spvit.SPViT_Tiny(num_classes=10), str(tmp_path / "p.png"))
    with open(path, "rb") as f:
        assert f.read(4) == b"\x89PNG"
    with pytest.raises(ValueError, match="no SpatialPriorAttention"):
        plot_spatial_priors(keras_spvit.LVViT_Tiny(num_classes=10), str(tmp_path / "q.png"))


def test_a_nearly_flat_prior_reads_in_full_on_its_colour_bar():
    # 1.0216-1.0218 once showed as ticks 0.0006-0.0008 with "+1.021" printed over the title.
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_spvit.analysis.plots import _prior_figure

    flat = 1.0216 + 0.0002 * np.linspace(0, 1, 2 * 9).reshape(2, 3, 3)
    figure = _prior_figure(plt, [flat])
    figure.canvas.draw()
    bars = [axis for axis in figure.axes if axis.get_label() == "<colorbar>"]
    assert len(bars) == 2
    for bar in bars:
        assert bar.yaxis.get_offset_text().get_text() == ""
        ticks = [t.get_text() for t in bar.get_yticklabels() if t.get_text()]
        assert ticks and all(t.startswith("1.02") for t in ticks), ticks
    plt.close(figure)
