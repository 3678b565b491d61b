"""Losses of the papers' recipes: soft-target cross-entropy and token labeling.

Targets may be sparse class ids or soft distributions (one-hot, mixed by
MixUp / CutMix / MixToken); both losses accept either and compute in float32.

Dense token labels (LV-ViT's token labeling) for `TokenLabelCrossEntropy`,
the loss of the `"aux_logits"` output of a classifier built with
`return_dense=True`:

- `(batch, grid_h, grid_w, classes)` or `(batch, tokens, classes)` floats: a
  distribution per patch token, in the model's row-major token order;
- `(batch, grid_h, grid_w)` or `(batch, tokens)` ints: one class per token;
- `(batch, classes)` floats or `(batch,)` ints: the image label, given to every
  token (what the recipe uses when no dense annotation exists);
- top-k targets, the k largest probabilities of each token and their classes:
  a `(values, indices)` pair of `(batch, grid_h, grid_w, k)` or
  `(batch, tokens, k)` tensors, or, as one tensor that `fit` can carry for
  one output, `(batch, grid_h, grid_w, k, 2)` floats from `pack_top_k`
  (value then class id on the last axis; class ids are exact in float32 up
  to 2**24). A class id of -1 means "every class": its value is added to
  all classes' targets. `keras_spvit.data.dense_targets` writes the
  teacher's dense per-token distributions this way, exactly, as
  `(batch, grid_h, grid_w, M + 1, 2)` (a background value for every class,
  then the few classes the teacher's aligned top-k touch).

Token ids and top-k are the memory-light forms: per 1,024-image batch at
224 px (14 x 14 tokens, 1,000 classes) dense float32 targets take 803 MB,
int32 ids 0.8 MB and packed top-2 3.2 MB (at 384 px, 24 x 24 tokens: 2.36 GB,
2.4 MB, 9.4 MB). The loss never expands them: it gathers the log
probabilities of the target classes, and the value equals the dense
target's exactly for one-hot ids and top-2 (two non-zero terms sum the
same in any order).

Keras casts targets to float before a loss sees them, so the layouts are told
apart by shape: a `(batch, n)` target with `n == classes` is an image-level
distribution (give per-token ids as `(batch, grid_h, grid_w)` then).
"""

import keras
from keras import ops


def _soft_targets(y_true, num_classes, label_smoothing, sparse):
    if sparse:
        y_true = ops.one_hot(ops.cast(y_true, "int32"), num_classes, dtype="float32")
    y_true = ops.cast(y_true, "float32")
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / num_classes
    return y_true


def _cross_entropy(y_true, logits):
    return -ops.sum(y_true * ops.log_softmax(logits, axis=-1), axis=-1)


def _check_smoothing(label_smoothing):
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(
            f"Expected `label_smoothing` in [0, 1). Received: label_smoothing={label_smoothing}"
        )


@keras.saving.register_keras_serializable(package="keras_spvit")
class SoftTargetCrossEntropy(keras.losses.Loss):
    """Cross-entropy from logits against sparse or soft targets.

    `y_true` is `(batch,)` class ids or `(batch, classes)` probabilities;
    label smoothing mixes the targets with the uniform distribution (so
    smoothing a MixUp target equals mixing smoothed targets).

    Args:
        label_smoothing: float in [0, 1).
        **kwargs: `keras.losses.Loss` arguments (`reduction`, `name`).

    Example:

    >>> loss = SoftTargetCrossEntropy(label_smoothing=0.1)
    >>> loss(np.array([2]), np.zeros((1, 4)))  # log(4) whatever the smoothing
    """

    def __init__(self, label_smoothing=0.0, name="soft_target_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        _check_smoothing(label_smoothing)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        # Keras casts every target to float before `call` (and to float64 under
        # some strategies), so class ids are told apart by rank, not dtype.
        sparse = len(y_true.shape) < len(logits.shape)
        if not sparse and y_true.shape[-1] == 1 and logits.shape[-1] != 1:
            y_true, sparse = ops.squeeze(y_true, -1), True
        y_true = _soft_targets(y_true, logits.shape[-1], self.label_smoothing, sparse)
        return _cross_entropy(y_true, logits)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="keras_spvit")
class TokenLabelCrossEntropy(SoftTargetCrossEntropy):
    """Token-labeling loss of the aux head: cross-entropy per patch token.

    `y_pred` is `(batch, tokens, classes)`. `y_true` follows the dense-label
    format of this module's docstring; an image-level target is given to
    every token. The per-token losses are averaged, as LV-ViT does over
    `batch * tokens`.

    Args:
        label_smoothing: float in [0, 1).
        **kwargs: `keras.losses.Loss` arguments.

    Example:

    >>> model = keras_spvit.SPViT_Tiny(num_classes=10, return_dense=True)
    >>> model.compile(optimizer="adamw",
    ...               loss={"class_logits": SoftTargetCrossEntropy(0.1),
    ...                     "aux_logits": TokenLabelCrossEntropy(0.1)},
    ...               loss_weights={"class_logits": 1.0, "aux_logits": 1.0})
    """

    def __init__(self, label_smoothing=0.0, name="token_label_cross_entropy", **kwargs):
        super().__init__(label_smoothing=label_smoothing, name=name, **kwargs)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        if len(logits.shape) != 3:
            raise ValueError(
                "Expected aux logits of shape (batch, tokens, classes). "
                f"Received: shape={logits.shape}"
            )
        num_tokens, num_classes = logits.shape[1], logits.shape[2]
        log_probs = ops.log_softmax(logits, axis=-1)
        if isinstance(y_true, (tuple, list)):
            values, indices = y_true
            return self._top_k(values, indices, log_probs)
        rank = len(y_true.shape)
        if rank == 5:
            return self._top_k(y_true[..., 0], y_true[..., 1], log_probs)
        if rank == 1 or (rank == 2 and y_true.shape[-1] == num_classes):
            # An image label, given to every token.
            if rank == 1:
                target = ops.take_along_axis(
                    log_probs, _broadcast_ids(y_true[:, None, None], log_probs), axis=-1
                )[..., 0]
            else:
                target = ops.sum(ops.cast(y_true, "float32")[:, None, :] * log_probs, axis=-1)
            return self._mean_loss(target, log_probs)
        soft = rank == 4 or (rank == 3 and tuple(y_true.shape[1:]) == (num_tokens, num_classes))
        batch = ops.shape(y_true)[0]
        y_true = ops.reshape(y_true, (batch, -1, num_classes) if soft else (batch, -1))
        _check_tokens(y_true.shape[1], num_tokens)
        if soft:
            target = ops.sum(ops.cast(y_true, "float32") * log_probs, axis=-1)
        else:
            ids = ops.cast(y_true, "int32")[..., None]
            target = ops.take_along_axis(log_probs, ids, axis=-1)[..., 0]
        return self._mean_loss(target, log_probs)

    def _top_k(self, values, indices, log_probs):
        batch, k = ops.shape(values)[0], values.shape[-1]
        values = ops.reshape(ops.cast(values, "float32"), (batch, -1, k))
        indices = ops.reshape(ops.cast(indices, "int32"), (batch, -1, k))
        _check_tokens(values.shape[1], log_probs.shape[1])
        picked = ops.take_along_axis(log_probs, ops.maximum(indices, 0), axis=-1)
        # Class id -1 stands for every class (the compact dense targets'
        # background value): `value * sum_c log p_c`.
        every = ops.sum(log_probs, axis=-1, keepdims=True)
        picked = ops.where(indices < 0, every, picked)
        target = ops.sum(values * picked, axis=-1)
        return self._mean_loss(target, log_probs)

    def _mean_loss(self, target, log_probs):
        """Mean over tokens of `-sum_c y_c log p_c` with `y` smoothed:
        `(1 - s) * target + (s / classes) * sum_c log p_c`, `target = sum_c y_c log p_c`."""
        if self.label_smoothing:
            num_classes = log_probs.shape[-1]
            target = (1.0 - self.label_smoothing) * target + (
                self.label_smoothing / num_classes
            ) * ops.sum(log_probs, axis=-1)
        return -ops.mean(target, axis=-1)


def _broadcast_ids(ids, log_probs):
    ids = ops.cast(ids, "int32")
    return ops.broadcast_to(ids, (ops.shape(log_probs)[0], log_probs.shape[1], 1))


def _check_tokens(label_tokens, num_tokens):
    if label_tokens is not None and label_tokens != num_tokens:
        raise ValueError(
            f"Dense token labels have {label_tokens} tokens per image; the aux "
            f"head predicts {num_tokens}. Expected labels on the model's patch grid."
        )


def pack_top_k(values, indices):
    """Packs top-k token targets into the one float32 tensor `fit` carries.

    Args:
        values: `(batch, grid_h, grid_w, k)` target probabilities.
        indices: `(batch, grid_h, grid_w, k)` int class ids (below 2**24).

    Returns:
        `(batch, grid_h, grid_w, k, 2)` float32: value, then class id.

    Example:

    >>> values, indices = keras.ops.top_k(dense_targets, k=2)
    >>> targets = pack_top_k(values, indices)  # for TokenLabelCrossEntropy
    """
    if len(values.shape) != 4 or tuple(values.shape) != tuple(indices.shape):
        raise ValueError(
            "Expected top-k values and indices of one shape (batch, grid_h, grid_w, k). "
            f"Received: values.shape={tuple(values.shape)}, indices.shape={tuple(indices.shape)}"
        )
    return ops.stack(
        [ops.cast(values, "float32"), ops.cast(indices, "float32")], axis=-1
    )
