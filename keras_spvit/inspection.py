"""Looking inside a model: class-token attention, attention rollout, priors, top-k.

`explain` returns the arrays; `plot_explanation` draws one image's arrays as
a PNG (matplotlib, an optional dependency: `pip install keras-spvit[plot]`).
"""

import math

import keras
import numpy as np

from keras_spvit.analysis.plots import centre_priors
from keras_spvit.models.attention_maps import attention_maps
from keras_spvit.utils.validation import check_positive_int


def infer_grid(tokens, image_shape):
    """The `(rows, cols)` patch grid of `tokens` tokens for an image of `image_shape`.

    The grid whose aspect ratio is closest to the image's (equal strides along
    both axes for the stems of this package).

    Args:
        tokens: int. Number of patch tokens.
        image_shape: `(height, width, ...)` of the model's input.

    Returns:
        `(rows, cols)` with `rows * cols == tokens`.

    Example:

    >>> infer_grid(15, (24, 40, 3))
    (3, 5)
    """
    height, width = image_shape[0], image_shape[1]
    pairs = [(r, tokens // r) for r in range(1, tokens + 1) if tokens % r == 0]
    return min(pairs, key=lambda p: abs(math.log((p[0] / p[1]) / (height / width))))


def attention_rollout(maps):
    """Attention rollout across blocks (Abnar & Zuidema, 2020).

    Each block's map is averaged over heads, negative entries are clipped at 0
    (Refined-ViT's refiner convolution may produce some), the identity is
    added (the residual path) and rows are renormalised to sum to 1; the
    blocks' matrices are multiplied through, `R = A_last @ ... @ A_first`.

    Token sets that change are handled where it is well defined: when the
    class token enters (a block has one token more than the previous one) it
    is prepended to the rollout with no history (`R <- blockdiag(1, R)`);
    when pooling changes the token count otherwise (PSViT's stages), the
    rollout restarts at that block, so it covers the blocks after the last
    pooling step (a learned pooling's mixing of tokens is not attention).

    Args:
        maps: list of arrays `(batch, heads, tokens, tokens)` in block order,
            as `keras_spvit.attention_maps` returns them (its `.values()`).

    Returns:
        `(rollout, first)`: float64 array `(batch, tokens, tokens)` of the
        last block's tokens over the tokens of block `first` (the index in
        `maps` where the rollout started).

    Example:

    >>> maps = keras_spvit.attention_maps(model, images)
    >>> rollout, first = attention_rollout(list(maps.values()))
    >>> rollout[:, 0, 1:]  # class token over the patch tokens
    """
    if not maps:
        raise ValueError("attention_rollout needs at least one attention map. Received: maps=[]")
    rollout, first = None, 0
    for index, attention in enumerate(maps):
        attention = np.asarray(attention, "float64")
        if attention.ndim != 4 or attention.shape[-1] != attention.shape[-2]:
            raise ValueError(
                "Expected attention maps of shape (batch, heads, tokens, tokens). "
                f"Received: maps[{index}].shape={attention.shape}"
            )
        tokens = attention.shape[-1]
        if rollout is None:
            rollout = np.broadcast_to(np.eye(tokens), (attention.shape[0], tokens, tokens))
        elif tokens == rollout.shape[-1] + 1:
            grown = np.zeros((rollout.shape[0], tokens, tokens))
            grown[:, 0, 0] = 1.0
            grown[:, 1:, 1:] = rollout
            rollout = grown
        elif tokens != rollout.shape[-1]:
            rollout, first = np.broadcast_to(
                np.eye(tokens), (attention.shape[0], tokens, tokens)), index
        step = np.clip(attention.mean(axis=1), 0.0, None) + np.eye(tokens)
        step = step / step.sum(axis=-1, keepdims=True)
        rollout = step @ rollout
    return rollout, first


def _model_inputs(model, images, preprocess):
    if not preprocess:
        return images
    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is None:
        raise ValueError(
            f"preprocess=True needs a model with a preprocessor; {model.name!r} has none."
        )
    if hasattr(model, "check_inputs"):
        model.check_inputs(images)
    images = preprocessor(images)
    return images[0] if isinstance(images, tuple) else images


def explain(model, images, top_k=5, preprocess=False, batch_size=32):
    """The arrays `keras-spvit explain` draws, for a batch of images.

    Args:
        model: a keras_spvit image classifier (or backbone: no `top_k` then).
        images: array `(batch, height, width, channels)`, normalised as the
            model takes them; with `preprocess=True`, raw images as
            `predict` takes them, run through the model's preprocessor.
        top_k: int. Number of classes in the prediction.
        preprocess: bool. Run `model.preprocessor` on `images` first.
        batch_size: int. Images per forward pass.

    Returns:
        A dict of numpy arrays:
        - `"images"`: `(batch, height, width, channels)` the model's inputs.
        - `"cls_attention"`: `(batch, heads, rows, cols)` the last block's
          class-token attention over the patch tokens, per head.
        - `"rollout"`: `(batch, rows, cols)` attention rollout (see
          `attention_rollout`), class-token row without the class column,
          on the same grid.
        - `"rollout_blocks"`: names of the blocks the rollout covers (all, or
          those after PSViT's last pooling step).
        - `"priors"`: list (one per spatial-prior layer) of
          `(heads, grid_rows, grid_cols)` priors around the centre token;
          empty without spatial-prior blocks.
        - `"top_k_classes"`, `"top_k_probabilities"`: `(batch, k)` (only for
          classifiers).

    Example:

    >>> model = keras_spvit.SPViTImageClassifier.from_preset("spvit_tiny_digits")
    >>> images, _ = keras_spvit.data.digits_split("test")
    >>> out = keras_spvit.explain(model, images[:2], top_k=3, preprocess=True)
    >>> out["cls_attention"].shape, out["rollout"].shape, out["top_k_classes"].shape
    ((2, 2, 8, 8), (2, 8, 8), (2, 3))
    """
    check_positive_int(top_k, "top_k")
    check_positive_int(batch_size, "batch_size")
    inputs = _model_inputs(model, images, preprocess)
    maps = attention_maps(model, inputs, batch_size=batch_size)
    names, values = list(maps), list(maps.values())
    backbone = getattr(model, "backbone", model)
    image_shape = tuple(backbone.image_shape)
    last = values[-1]
    grid = infer_grid(last.shape[-1] - 1, image_shape)
    batch = last.shape[0]
    rollout, first = attention_rollout(values)
    out = {
        "images": keras.ops.convert_to_numpy(inputs).astype("float32"),
        "cls_attention": last[:, :, 0, 1:].reshape(batch, last.shape[1], *grid),
        "rollout": rollout[:, 0, 1:].reshape(batch, *grid).astype("float32"),
        "rollout_blocks": names[first:],
        "priors": centre_priors(model),
    }
    if backbone is not model:
        logits = []
        for start in range(0, batch, batch_size):
            outputs = model(inputs[start : start + batch_size], training=False)
            outputs = outputs["logits"] if isinstance(outputs, dict) else outputs
            logits.append(keras.ops.convert_to_numpy(outputs).astype("float64"))
        logits = np.concatenate(logits)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        k = min(top_k, probs.shape[-1])
        top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        out["top_k_classes"] = top
        out["top_k_probabilities"] = np.take_along_axis(probs, top, -1).astype("float32")
    return out


def _display(image):
    """An input image scaled to [0, 1] for display (grey for one channel)."""
    image = np.asarray(image, "float32")
    low, high = float(image.min()), float(image.max())
    image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return image[..., 0] if image.shape[-1] == 1 else image[..., :3]


def plot_explanation(result, index, path, title=None, class_names=None):
    """Writes a PNG of one image's `explain` arrays.

    Row 1: the model's input, the rollout over it, the top-k prediction.
    Row 2: the last block's class-token attention, one panel per head.
    Further rows: each spatial-prior layer's priors around the centre token
    (+), one panel per head. Each row shares one colour scale (its colour bar
    at the right), so heads compare at a glance. Needs matplotlib (`pip install keras-spvit[plot]`).

    Args:
        result: the dict `explain` returned.
        index: int. Which image of the batch.
        path: str. Output file (`.png`).
        title: optional figure title (e.g. the image file).
        class_names: optional list of class names for the prediction.

    Returns:
        `path`.

    Example:

    >>> out = keras_spvit.explain(model, images[:1], preprocess=True)
    >>> plot_explanation(out, 0, "explain/digit.png", title="digit 0")
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "plot_explanation needs matplotlib: pip install 'keras-spvit[plot]'"
        ) from error
    batch = result["rollout"].shape[0]
    if not isinstance(index, int) or not 0 <= index < batch:
        raise ValueError(f"Expected an index in [0, {batch}). Received: index={index!r}")
    figure, _ = _explanation_figure(plt, result, index, title, class_names)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def _explanation_figure(plt, result, index, title, class_names):
    """`(figure, axes grid)` of `plot_explanation` (tests read its colour scales)."""
    from matplotlib.colors import Normalize

    image = _display(result["images"][index])
    height, width = image.shape[:2]
    extent = (0, width, height, 0)
    cmap = "gray" if image.ndim == 2 else None
    heads = result["cls_attention"].shape[1]
    priors = result["priors"]
    columns = max(3, heads, *(p.shape[0] for p in priors)) if priors else max(3, heads)
    rows = 2 + len(priors)
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.5 * rows), squeeze=False)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])

    def overlay(axis, values, label, vmax=None):
        axis.imshow(image, cmap=cmap, extent=extent)
        shown = axis.imshow(values, cmap="inferno", alpha=0.6, extent=extent,
                            interpolation="bilinear", vmin=0.0, vmax=vmax)
        axis.set_title(label, fontsize=8)
        return shown

    axes[0][0].imshow(image, cmap=cmap, extent=extent)
    axes[0][0].set_title(f"model input {height}x{width}", fontsize=8)
    blocks = result["rollout_blocks"]
    overlay(axes[0][1], result["rollout"][index],
            f"rollout {blocks[0]}..{blocks[-1]}" if len(blocks) > 1 else f"rollout {blocks[0]}")
    text = axes[0][2]
    text.axis("off")
    prediction = None
    if "top_k_classes" in result:
        lines = []
        for c, p in zip(result["top_k_classes"][index], result["top_k_probabilities"][index]):
            name = class_names[c] if class_names is not None else str(c)
            lines.append(f"{name}: {100 * p:.1f}%")
        prediction = lines[0]
        text.text(0.05, 0.95, "top-k\n" + "\n".join(lines), va="top", family="monospace",
                  fontsize=9, transform=text.transAxes)
    for column in range(3, columns):
        axes[0][column].axis("off")
    # One colour scale per row (0 to the row's maximum, one colour bar), so a
    # head that attends almost uniformly looks flat next to a focused one.
    attention = result["cls_attention"][index]
    for head in range(columns):
        axis = axes[1][head]
        if head >= heads:
            axis.axis("off")
            continue
        values = attention[head]
        shown = overlay(axis, values, f"last block CLS, head {head} (max {values.max():.2f})",
                        vmax=float(attention.max()))
    figure.colorbar(shown, ax=axes[1][heads - 1], fraction=0.046, pad=0.04).ax.tick_params(
        labelsize=6)
    for row, prior in enumerate(priors, start=2):
        grid_rows, grid_cols = prior.shape[1:]
        norm = Normalize(float(prior.min()), float(prior.max()))  # one object: one scale
        for head in range(columns):
            axis = axes[row][head]
            if head >= prior.shape[0]:
                axis.axis("off")
                continue
            shown = axis.imshow(prior[head], cmap="viridis", norm=norm)
            axis.plot(grid_cols // 2, grid_rows // 2, marker="+", color="red", markersize=8)
            axis.set_title(f"prior layer {row - 2}, head {head}, query +", fontsize=8)
        figure.colorbar(shown, ax=axes[row][prior.shape[0] - 1], fraction=0.046,
                        pad=0.04).ax.tick_params(labelsize=6)
    heading = title or "explain"
    if prediction is not None:
        heading = f"{heading}: predicted {prediction}"
    figure.suptitle(heading, fontsize=10)
    figure.tight_layout()
    return figure, axes
