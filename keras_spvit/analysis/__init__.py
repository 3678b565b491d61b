"""Analysis helpers: the MAC counter, spatial-prior plots (layers and utils only) and
`explain` (which also uses `keras_spvit.models.attention_maps`)."""
