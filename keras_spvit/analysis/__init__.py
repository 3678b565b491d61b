"""Analysis helpers: the MAC counter and spatial-prior plots (layers and utils only;
`keras_spvit.inspection` builds on them with the models)."""
