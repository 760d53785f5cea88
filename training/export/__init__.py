"""Export to ONNX: the graph and its parity check (`graph`), the metadata it carries
(`metadata`), and the `vision export` command (`command`)."""

from training.export.graph import PARITY_TOL, PARITY_TOL_FP16, export_onnx, parity, to_onnx
from training.export.metadata import Identity, checkpoint_metadata

__all__ = ["PARITY_TOL", "PARITY_TOL_FP16", "Identity", "checkpoint_metadata", "export_onnx", "parity", "to_onnx"]
