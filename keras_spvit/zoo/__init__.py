"""The model zoo: the family table, named builders, weights resolution and conversion.

- `families.py`: every family declared once (classes, variants, builders,
  converter, releases).
- `<family>.py`: the generic builder (`SPViT`) and the named ones (`SPViT_S`).
- `builders.py`: `assemble`, `generic_builder` (a generic builder from its
  declared signature) and the named-builder factory.
- `weights.py`: `weights=` of the builders (preset, `.weights.h5`, official
  checkpoint) and `load_official_weights`.
- `convert.py`: `convert_checkpoint`, behind `keras-spvit convert`.
"""
