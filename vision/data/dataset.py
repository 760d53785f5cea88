"""PyTorch view of a `ChipSource`: raw pixels in, augmented float tensors out."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from vision.data.sources import ChipSource

Transform = Callable[[np.ndarray], np.ndarray]


class ChipDataset(Dataset[tuple[torch.Tensor, int]]):
    """Returns ``(pixels, label)`` with pixels as float32 ``C x H x W`` in raw units.

    Normalisation is not done here: it is the first layer of the model, so the exported
    ONNX graph takes raw pixels and no consumer can get it wrong.
    """

    def __init__(self, source: ChipSource, transform: Transform | None = None):
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        chip = self.source.read(index)
        if chip.dtype != np.uint8:
            chip = chip.astype(np.float32, copy=False)
        if self.transform is not None:
            chip = self.transform(chip)
        x = torch.from_numpy(np.ascontiguousarray(chip.transpose(2, 0, 1), dtype=np.float32))
        return x, self.source.refs[index].label
