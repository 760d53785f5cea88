"""``tiny_cnn``: a few-thousand-parameter network for tests where the model is not the subject.

It trains for real (a few seconds on the synthetic demo set, to a confident model), has a
real Grad-CAM layer (``features.2``, 1/4 of the input: 8 x 8 on 32 px chips) and a first
convolution that adapts to any band count like every other architecture, so the whole path
(train, calibrate, export, quantize, explain) runs on it. It has no pretrained weights and
is not meant for real imagery: the registry marks it ``test_only``.
"""

from __future__ import annotations

import torch
from torch import nn

from vision.errors import WeightsNotAvailableError

#: Registry name; the ``tiny`` says what it is for.
NAME = "tiny_cnn"


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyCNN(nn.Module):
    """Three 3x3 conv-BN-ReLU blocks (strides 1, 2, 2), global average pooling, a linear head.

    Args:
        num_classes: outputs.
        dropout: before the head.
        in_channels: input bands (the registry adapts the first convolution, as for others).
        width: channels of the first block (doubled at each stride).
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.0, in_channels: int = 3,
                 width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            _block(in_channels, width, 1),
            _block(width, 2 * width, 2),
            _block(2 * width, 4 * width, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.fc(self.dropout(x))


def no_pretrained_weights() -> str:
    """``tiny_cnn`` has no ImageNet weights: say so, as for any architecture without them."""
    raise WeightsNotAvailableError(
        f"{NAME} is a test architecture without pretrained weights: use `model.weights: none`")
