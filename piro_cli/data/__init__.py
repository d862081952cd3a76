"""Data: the HDF5 view-set store, dataset sources, the mesh renderer and samplers."""
