"""keras_spvit: vision transformers with learned spatial structure, in Keras 3.

`import keras_spvit` imports the whole API (and so registers its Keras classes
for `keras.saving.load_model`). The `keras-spvit` command starts lazily
instead (the names load on first use, PEP 562), so that `--help` and argument
errors answer before any backend starts.
"""

import os as _os
import sys as _sys

from keras_spvit.version import __version__

__all__ = [
    "CenterCropImageConverter",
    "FeatureExtractor",
    "LVViT_L",
    "LVViT_M",
    "LVViT_S",
    "LVViT_Tiny",
    "PSViT",
    "PSViTBackbone",
    "PSViTImageClassifier",
    "PSViTImageClassifierPreprocessor",
    "PSViTImageConverter",
    "PSViT_1D_Tiny",
    "PSViT_2D_Small",
    "PSViT_2D_Tiny",
    "PSViT_Tiny_CPU",
    "PlainViT_Small",
    "PlainViT_Tiny",
    "RefinedViT",
    "RefinedViTBackbone",
    "RefinedViTImageClassifier",
    "RefinedViTImageClassifierPreprocessor",
    "RefinedViTImageConverter",
    "RefinedViT_L",
    "RefinedViT_M",
    "RefinedViT_S",
    "RefinedViT_Tiny",
    "SPViT",
    "SPViTBackbone",
    "SPViTImageClassifier",
    "SPViTImageClassifierPreprocessor",
    "SPViTImageConverter",
    "SPViT_L",
    "SPViT_L_Released",
    "SPViT_M",
    "SPViT_S",
    "SPViT_Tiny",
    "TokenLabelingImageClassifier",
    "__version__",
    "attention_maps",
    "combine_studies",
    "convert_checkpoint",
    "count_macs",
    "dense_teacher",
    "explain",
    "export",
    "feature_extractor",
    "layers",
    "load_official_weights",
    "make_token_labels",
    "run_study",
    "search",
    "study",
    "upload_preset",
]


def _launched_lazily():
    # The console script (`keras-spvit`), `python -m keras_spvit.cli` (argv[0]
    # is "-m" while the module is located), or an explicit request.
    if _os.environ.get("KERAS_SPVIT_LAZY_IMPORT") == "1":
        return True
    launcher = _os.path.basename(_sys.argv[0]) if _sys.argv and _sys.argv[0] else ""
    return launcher in ("keras-spvit", "keras-spvit.exe", "-m")


def load():
    """Imports the whole public API and registers every Keras class of keras_spvit.

    Only needed after a lazy start (see the module docstring); `import
    keras_spvit` does it already.

    Example:

    >>> import keras_spvit
    >>> keras_spvit.load()
    """
    from keras_spvit import _api

    globals().update({name: getattr(_api, name) for name in __all__ if name != "__version__"})


def __getattr__(name):
    if name in __all__:
        load()
        return globals()[name]
    raise AttributeError(f"module 'keras_spvit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


if not _launched_lazily():
    load()
