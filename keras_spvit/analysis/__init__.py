"""Analysis helpers: the MAC counter and spatial-prior plots (they import only layers and utils)."""
