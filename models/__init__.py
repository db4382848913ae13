"""Multi-exit models: architectures, training, calibration and ONNX export.

Importing the package is cheap and torch-free: the serving path imports `models.manifest`
and `models.paths`; everything else needs the `train` extra (torch).
"""
