"""Fine-tuning loop, MLflow tracking and registry, evaluation, calibration, ONNX export."""
