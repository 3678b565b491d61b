"""AdamW with parameter groups: per-variable weight decay and learning rate.

Keras optimizers have one learning rate and one weight decay for every
variable. The papers' recipes need two departures from that, both keyed by
`variable.path` so that the optimizer serialises with plain strings:

- no weight decay on biases, norms, the position embedding, the class token
  and the prior biases (`no_weight_decay_paths`);
- layer-wise learning-rate decay for fine-tuning (`layer_decay_multipliers`):
  block `i` of `n` learns at `decay ** (n + 1 - i)` times the base rate, the
  stem and embeddings at `decay ** (n + 1)`, the head at the full rate.
"""

import re

import keras
from keras import ops

# Layers whose weights are embeddings, excluded from weight decay whatever
# their rank (the official `no_weight_decay()` sets).
EMBEDDING_LAYERS = ("pos_embed", "class_token", "cls_token")
# Leading layers of every backbone: layer id 0 for layer-wise decay.
STEM_LAYERS = ("stem", "patch_embed") + EMBEDDING_LAYERS
_BLOCK = re.compile(r"(?:^|/)(?:block|pos_cnn)_(\d+)(?:/|$)")


def _check_unique_paths(variables):
    paths = [v.path for v in variables]
    repeated = sorted({p for p in paths if paths.count(p) > 1})
    if repeated:
        raise ValueError(
            "Parameter groups are keyed by `variable.path`, and these paths repeat: "
            f"{repeated[:5]}. Give the layers unique names."
        )
    return paths


def no_weight_decay_paths(model):
    """Paths of the trainable variables that take no weight decay.

    Everything of rank <= 1 (biases, norm scales and offsets, prior biases,
    layer scales) and every weight of the position embedding and class token,
    as in the released SP-ViT, LV-ViT and Refiner training scripts.

    Args:
        model: a built Keras model.

    Returns:
        A sorted list of `variable.path` strings.

    Example:

    >>> paths = no_weight_decay_paths(keras_spvit.SPViT_Tiny(num_classes=10))
    >>> "pos_embed/embedding" in paths
    True
    """
    _check_unique_paths(model.trainable_variables)
    return sorted(
        v.path
        for v in model.trainable_variables
        if len(v.shape) <= 1 or v.path.split("/")[0] in EMBEDDING_LAYERS
    )


def layer_id(path, num_blocks):
    """Depth index of a variable for layer-wise decay: 0 stem .. num_blocks + 1 head."""
    match = _BLOCK.search(path)
    if match:
        return int(match.group(1)) + 1
    if path.split("/")[0] in STEM_LAYERS:
        return 0
    return num_blocks + 1


def layer_decay_multipliers(model, decay):
    """Learning-rate multipliers for layer-wise decay (BEiT / timm rule).

    Blocks are found by name (`block_<i>`, and `pos_cnn_<i>` follows its
    block); stem, position embedding and class token are layer 0; everything
    after the last block (final norm, heads) learns at the base rate.

    Args:
        model: a built Keras model.
        decay: float in (0, 1]. 1.0 switches the decay off.

    Returns:
        A dict `{variable.path: multiplier}` for every trainable variable.

    Example:

    >>> scales = layer_decay_multipliers(keras_spvit.SPViT_Tiny(num_classes=10), 0.75)
    >>> scales["token_labeling_head/head/kernel"]
    1.0
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"Expected `decay` in (0, 1]. Received: decay={decay}")
    paths = _check_unique_paths(model.trainable_variables)
    ids = [_BLOCK.search(p) for p in paths]
    num_blocks = 1 + max((int(m.group(1)) for m in ids if m), default=-1)
    top = num_blocks + 1
    return {p: float(decay ** (top - layer_id(p, num_blocks))) for p in paths}


@keras.saving.register_keras_serializable(package="keras_spvit")
class ParamGroupAdamW(keras.optimizers.AdamW):
    """AdamW whose weight decay and learning rate can differ per variable.

    Both are keyed by `variable.path`; variables not listed use the base
    values. The decoupled weight decay of a variable is scaled by its
    learning-rate multiplier too, as in timm's parameter groups.

    Args:
        lr_multipliers: optional dict `{variable.path: float}`.
        no_weight_decay: optional list of `variable.path` excluded from weight
            decay.
        **kwargs: any `keras.optimizers.AdamW` argument (`learning_rate`,
            `weight_decay`, `beta_1`, `global_clipnorm`, `use_ema`, ...).

    Example:

    >>> model = keras_spvit.SPViT_Tiny(num_classes=10)
    >>> optimizer = ParamGroupAdamW(
    ...     learning_rate=1e-3, weight_decay=0.05,
    ...     no_weight_decay=no_weight_decay_paths(model),
    ...     lr_multipliers=layer_decay_multipliers(model, 0.75))
    """

    def __init__(self, lr_multipliers=None, no_weight_decay=None, **kwargs):
        super().__init__(**kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})
        self.no_weight_decay = sorted(no_weight_decay or ())
        for path, scale in self.lr_multipliers.items():
            if not scale >= 0.0:
                raise ValueError(
                    f"Expected learning-rate multipliers >= 0. Received: {path!r}: {scale}"
                )
        self._no_decay = frozenset(self.no_weight_decay)

    def build(self, variables):
        super().build(variables)
        # Backends hand `update_step` their native variables (no `.path`), so
        # the groups are resolved once here and looked up by index.
        self._group_scales = [self.lr_multipliers.get(v.path, 1.0) for v in variables]
        self._group_decays = [
            v.path not in self._no_decay and super(ParamGroupAdamW, self)._use_weight_decay(v)
            for v in variables
        ]

    def _apply_weight_decay(self, variables):
        # Decay is applied in `update_step`, where each variable's multiplier
        # is known and the backend's own (distributed) update context holds.
        return

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        scale = self._group_scales[index]
        if scale != 1.0:
            learning_rate = ops.multiply(learning_rate, ops.cast(scale, learning_rate.dtype))
        if self.weight_decay is not None and self._group_decays[index]:
            lr = ops.cast(learning_rate, variable.dtype)
            wd = ops.cast(self.weight_decay, variable.dtype)
            self.assign_sub(variable, ops.multiply(variable, ops.multiply(wd, lr)))
        return super().update_step(gradient, variable, learning_rate)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if keras.backend.backend() == "torch" and not self.amsgrad:
            return _torch_update_step(self, grads, trainable_variables, learning_rate)
        return super()._backend_update_step(grads, trainable_variables, learning_rate)

    def _update_model_variables_moving_average(self, trainable_variables):
        if keras.backend.backend() == "torch" and self.use_ema:
            return _torch_moving_average(self, trainable_variables)
        return super()._update_model_variables_moving_average(trainable_variables)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"lr_multipliers": self.lr_multipliers, "no_weight_decay": self.no_weight_decay}
        )
        return config


# === PyTorch: every variable of a parameter group in one multi-tensor op ===
# Keras' torch backend runs its own Adam / AdamW on `torch._foreach_*` ops, but
# not a subclass: `update_step` per variable is ~12 Keras ops each, most of a
# tiny model's optimizer time (Python dispatch) on a CPU and a launch per op
# per variable on a GPU. The same arithmetic, op for op and in the same order
# (bit-identical weights), over each group's variables at once.


def _torch_update_step(optimizer, grads, variables, learning_rate):
    import torch

    groups = {}
    for grad, variable in zip(grads, variables):
        index = optimizer._get_variable_index(variable)
        key = (optimizer._group_scales[index], optimizer._group_decays[index], variable.dtype)
        groups.setdefault(key, []).append((grad, variable, index))
    powers = {}  # per dtype: the bias corrections' beta_1^t, beta_2^t, the same in every group
    with torch.no_grad():
        for (scale, decays, dtype), members in groups.items():
            if dtype not in powers:
                step = ops.cast(optimizer.iterations + 1, dtype)
                powers[dtype] = (ops.power(ops.cast(optimizer.beta_1, dtype), step),
                                 ops.power(ops.cast(optimizer.beta_2, dtype), step))
            beta_1_power, beta_2_power = powers[dtype]
            rate = learning_rate
            if scale != 1.0:
                rate = ops.multiply(rate, ops.cast(scale, rate.dtype))
            rate = ops.cast(rate, dtype)
            values = [variable.value for _, variable, _ in members]
            if optimizer.weight_decay is not None and decays:
                decay = ops.multiply(ops.cast(optimizer.weight_decay, dtype), rate)
                torch._foreach_sub_(values, torch._foreach_mul(values, decay))
            alpha = rate * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
            g = [ops.cast(grad, dtype) for grad, _, _ in members]
            m = [optimizer._momentums[i].value for _, _, i in members]
            v = [optimizer._velocities[i].value for _, _, i in members]
            # m += (g - m) (1 - beta_1); v += (g^2 - v) (1 - beta_2)
            torch._foreach_add_(m, torch._foreach_mul(torch._foreach_sub(g, m),
                                                      1 - optimizer.beta_1))
            torch._foreach_add_(v, torch._foreach_mul(
                torch._foreach_sub(torch._foreach_mul(g, g), v), 1 - optimizer.beta_2))
            # variable -= m alpha / (sqrt(v) + epsilon)
            torch._foreach_sub_(values, torch._foreach_div(
                torch._foreach_mul(m, alpha),
                torch._foreach_add(torch._foreach_sqrt(v), optimizer.epsilon)))


def _torch_moving_average(optimizer, variables):
    import torch

    pairs = [(variable.value, average.value) for variable, average
             in zip(variables, optimizer._model_variables_moving_average)
             if average is not None]
    with torch.no_grad():
        for dtype in {value.dtype for value, _ in pairs}:
            values = [value for value, _ in pairs if value.dtype == dtype]
            averages = [average for value, average in pairs if value.dtype == dtype]
            # average = momentum average + (1 - momentum) variable; momentum 0 at step 0
            momentum = ops.multiply(ops.cast(ops.not_equal(optimizer.iterations, 0), dtype),
                                    optimizer.ema_momentum)
            torch._foreach_mul_(averages, momentum)
            torch._foreach_add_(averages, torch._foreach_mul(values, 1 - momentum))
