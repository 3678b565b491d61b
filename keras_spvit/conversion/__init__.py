"""Official PyTorch checkpoints into keras_spvit models, the keras-hub way.

- `checkpoint.py`: the strict loader. It reads a state_dict and assigns it
  through a weight map (official key -> `(variable, transform)`), checking
  that every entry is used and every variable filled. It knows no family.
- `layout.py`: the pieces of the official layout the families share (stem,
  block norms and MLP, tokens, heads) and `convert_state`, which resizes the
  position embedding (`keras_spvit.models.resolution`) and runs the loader.
- One module per family (`spvit.py`, `refined_vit.py`) that knows its
  official layout and imports its model. Its interface: `backbone_cls`,
  `weight_map(backbone, head=None)` and `architecture_hint(state, weight_map)`
  (or `None`); `convert_state(model, state, where, converter)` loads with it.

Which family converts which backbone is declared once, in the family table
(`keras_spvit.zoo.families`).
"""
