"""The science of the FLARE platform: data, fusion, nnU-Net models, metrics.

Nothing in this package imports Dagster; every function takes paths, arrays and
plain configuration, so it can be used from a notebook or a script.
"""
