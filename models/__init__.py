"""Multi-exit models: architectures, training, calibration and ONNX export (needs torch, except `manifest`)."""
