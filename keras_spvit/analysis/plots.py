"""Plots of what a model learned: SP-ViT's spatial priors."""

from keras import ops

from keras_spvit.layers.spatial_prior_attention import SpatialPriorAttention


def spatial_prior_layers(model):
    """Every `SpatialPriorAttention` in `model` (nested models and blocks included)."""
    found = []

    def visit(layer):
        if isinstance(layer, SpatialPriorAttention):
            found.append(layer)
        for child in getattr(layer, "_layers", []) or []:
            visit(child)
        attention = getattr(layer, "attention", None)
        if attention is not None and attention not in found:
            visit(attention)

    visit(model)
    unique = []
    for layer in found:
        if all(layer is not seen for seen in unique):
            unique.append(layer)
    return unique


def centre_priors(model):
    """Each spatial-prior layer's prior around the centre token.

    Args:
        model: a model holding `SpatialPriorAttention` layers.

    Returns:
        A list (one entry per layer, in depth order) of float32 arrays
        `(heads, grid_h, grid_w)`: the prior weight of every key token for
        the query at the grid's centre.

    Example:

    >>> priors = centre_priors(keras_spvit.SPViT_Tiny(num_classes=10))
    >>> priors[0].shape  # 2 heads on the 8x8 grid
    (2, 8, 8)
    """
    out = []
    for layer in spatial_prior_layers(model):
        rows, cols = layer.built_grid_shape
        centre = (rows // 2) * cols + cols // 2
        prior = ops.convert_to_numpy(layer.spatial_prior())[:, centre, :]
        out.append(prior.reshape(layer.num_heads, rows, cols).astype("float32"))
    return out


def plot_spatial_priors(model, path, title=None):
    """Writes a PNG of every head's prior around the centre token.

    One row per spatial-prior layer, one column per head; the query token is
    marked. Needs matplotlib (`pip install keras-spvit[plot]`).

    Args:
        model: a model holding `SpatialPriorAttention` layers.
        path: str. Output file (`.png`).
        title: optional figure title.

    Returns:
        `path`.

    Example:

    >>> plot_spatial_priors(model, "runs/digits/spatial_priors.png")
    """
    priors = centre_priors(model)
    if not priors:
        raise ValueError(
            f"Model {model.name!r} has no SpatialPriorAttention layer: nothing to plot."
        )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "plot_spatial_priors needs matplotlib: pip install 'keras-spvit[plot]'"
        ) from error
    figure = _prior_figure(plt, priors, title)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _prior_figure(plt, priors, title=None):
    """The figure of `plot_spatial_priors` for `centre_priors`' arrays."""
    heads = max(p.shape[0] for p in priors)
    figure, axes = plt.subplots(
        len(priors), heads, figsize=(2.2 * heads, 2.2 * len(priors)), squeeze=False
    )
    for row, prior in enumerate(priors):
        rows, cols = prior.shape[1:]
        for head in range(heads):
            axis = axes[row][head]
            axis.set_xticks([])
            axis.set_yticks([])
            if head >= prior.shape[0]:
                axis.axis("off")
                continue
            image = axis.imshow(prior[head], cmap="viridis")
            axis.plot(cols // 2, rows // 2, marker="+", color="red", markersize=8)
            axis.set_title(f"prior layer {row}, head {head}", fontsize=8)
            bar = figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
            # A nearly flat prior (e.g. 1.0216-1.0218) would otherwise read as an
            # offset ("+1.021") drawn over the title and ticks like 0.0006.
            bar.formatter.set_useOffset(False)
            bar.update_ticks()
    figure.suptitle(title or "Learned spatial priors around the centre token (+)", fontsize=9)
    figure.tight_layout()
    return figure
