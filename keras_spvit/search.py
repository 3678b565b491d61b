"""Searching PSViT's compact set of pooling positions and sharing choices.

PSViT learns "the number of tokens in each layer and the choices of layers
sharing attention" from data. Here the search space is:

- where the pooling steps fall: the split of `depth` layers into
  `num_stages` stages (each stage at least `min_stage_depth` layers), which
  fixes the number of tokens in every layer;
- per stage, which layers share the previous layer's map: `"none"`,
  `"alternate"` (every second layer) or `"all"` (every layer but the
  stage's first).

The search itself is KerasTuner's (random search, Bayesian optimisation or
Hyperband): each trial builds a `keras_spvit.PSViT`, trains it on the
`tf.data` training set and scores it on the validation set. The result is a
builder-ready dict: `keras_spvit.PSViT(**best, num_classes=...)`.
"""

import itertools

import keras

from keras_spvit.zoo.psvit import PSViT

SHARING_CHOICES = ("none", "alternate", "all")
TUNERS = ("random", "bayesian", "hyperband")


def stage_splits(depth, num_stages, min_stage_depth=1):
    """Every way to split `depth` layers into `num_stages` stages, as strings."""
    splits = [
        combo
        for combo in itertools.product(range(min_stage_depth, depth + 1), repeat=num_stages)
        if sum(combo) == depth
    ]
    if not splits:
        raise ValueError(
            f"Cannot split depth={depth} into num_stages={num_stages} stages of at "
            f"least min_stage_depth={min_stage_depth} layers."
        )
    return ["-".join(map(str, combo)) for combo in splits]


def shared_layers_for(stage_depths, sharing):
    """Layer indices that share, from each stage's sharing choice."""
    shared, start = [], 0
    for depth, choice in zip(stage_depths, sharing):
        step = {"none": None, "alternate": 2, "all": 1}[choice]
        if step:
            shared += list(range(start + 1, start + depth, step))
        start += depth
    return shared


def config_from_hyperparameters(hp, depth, num_stages, min_stage_depth, fixed):
    """Builder-ready PSViT arguments for one point of the search space."""
    split = hp.Choice("stage_depths", stage_splits(depth, num_stages, min_stage_depth))
    stage_depths = tuple(int(d) for d in split.split("-"))
    sharing = [hp.Choice(f"sharing_stage_{s}", SHARING_CHOICES) for s in range(num_stages)]
    return {
        **fixed,
        "stage_depths": stage_depths,
        "shared_layers": shared_layers_for(stage_depths, sharing),
    }


def search(
    train_data,
    validation_data,
    num_classes,
    depth=6,
    num_stages=3,
    min_stage_depth=1,
    max_trials=10,
    epochs=1,
    tuner="random",
    optimizer_fn=None,
    directory=None,
    project_name="psvit_search",
    seed=None,
    verbose=0,
    jit_compile="auto",
    **fixed,
):
    """Searches pooling positions and attention sharing; returns the best config.

    Args:
        train_data: a `tf.data.Dataset` of `(images, labels)` batches.
        validation_data: the same, for scoring trials.
        num_classes: int.
        depth: int. Total number of layers.
        num_stages: int. Stages (pooling steps + 1).
        min_stage_depth: int. Smallest stage.
        max_trials: int. The budget: number of models trained.
        epochs: int. Epochs per trial.
        tuner: `"random"`, `"bayesian"` or `"hyperband"` (KerasTuner's).
        optimizer_fn: optional callable returning a fresh optimizer per trial
            (default AdamW 1e-3).
        directory: where KerasTuner keeps its trials (default: a temporary
            folder). An existing project there is resumed.
        project_name: str.
        seed: optional int, the tuner's seed.
        verbose: int, passed to `fit`.
        jit_compile: `"auto"`, `True` or `False`, passed to each trial's
            `model.compile` (XLA pays off on accelerators; for epochs of a
            few seconds on a CPU its compilation costs more than it saves).
        **fixed: `PSViT` arguments that are not searched: `stage_dims`,
            `stage_heads` (one per stage), `image_shape`, `patch_size`,
            `pooling_mode`, `pooling`, `refine_shared`, ...

    Returns:
        `(best_config, tuner)`: the dict to pass to `keras_spvit.PSViT` (with
        `num_classes`), and the KerasTuner tuner for the full record.

    Example:

    >>> best, tuner = keras_spvit.search(
    ...     train_ds, val_ds, num_classes=10, depth=6, num_stages=3,
    ...     stage_dims=(32, 48, 64), stage_heads=(2, 2, 4),
    ...     image_shape=(32, 32, 3), patch_size=4, max_trials=8)
    >>> model = keras_spvit.PSViT(**best, num_classes=10)
    """
    import tempfile

    import keras_tuner

    if tuner not in TUNERS:
        raise ValueError(f"Expected `tuner` to be one of {TUNERS}. Received: tuner={tuner!r}")
    for key in ("stage_dims", "stage_heads"):
        if key not in fixed:
            raise ValueError(f"`search` needs `{key}` (one value per stage) in its arguments.")
    stage_splits(depth, num_stages, min_stage_depth)  # fail early on an empty space

    def build(hp):
        config = config_from_hyperparameters(hp, depth, num_stages, min_stage_depth, fixed)
        model = PSViT(**config, num_classes=num_classes)
        model.compile(
            optimizer=optimizer_fn() if optimizer_fn else keras.optimizers.AdamW(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=jit_compile,
        )
        return model

    common = dict(
        objective=keras_tuner.Objective("val_accuracy", direction="max"),
        directory=directory or tempfile.mkdtemp(prefix="psvit_search_"),
        project_name=project_name,
        seed=seed,
    )
    if tuner == "hyperband":
        engine = keras_tuner.Hyperband(build, max_epochs=epochs, **common)
    elif tuner == "bayesian":
        engine = keras_tuner.BayesianOptimization(build, max_trials=max_trials, **common)
    else:
        engine = keras_tuner.RandomSearch(build, max_trials=max_trials, **common)
    engine.search(train_data, validation_data=validation_data, epochs=epochs, verbose=verbose)
    trials = list(engine.oracle.trials.values())
    scored = [t for t in trials if t.status == "COMPLETED" and t.score is not None]
    if not scored:
        reasons = {str(t.message).strip().splitlines()[-1] for t in trials if t.message}
        raise RuntimeError(
            f"All {len(trials)} search trials failed; no configuration was scored. "
            f"Reasons: {sorted(reasons) or 'unknown'}"
        )
    best_hp = engine.get_best_hyperparameters(1)[0]
    best = config_from_hyperparameters(best_hp, depth, num_stages, min_stage_depth, fixed)
    return best, engine
