"""The fast depthwise convolution is the stock one, value for value, gradient for gradient."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vision.models import get_model
from vision.models.depthwise import DepthwiseConv2d, use_fast_depthwise


@pytest.mark.parametrize(
    "size,kernel,stride",
    [(2, 5, 1), (2, 5, 2), (2, 3, 1), (3, 5, 2), (4, 5, 1), (4, 5, 2), (5, 5, 2), (7, 3, 2),
     (8, 3, 1), (1, 3, 1), (16, 3, 1)],
)
def test_values_and_gradients_match_conv2d(size: int, kernel: int, stride: int) -> None:
    torch.manual_seed(size * 100 + kernel * 10 + stride)
    stock = nn.Conv2d(24, 24, kernel, stride, kernel // 2, groups=24, bias=False)
    fast = copy.deepcopy(stock)
    assert use_fast_depthwise(fast) == 1 and isinstance(fast, DepthwiseConv2d)
    x1 = torch.randn(6, 24, size, size, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = stock(x1), fast(x2)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(y2, y1, rtol=0, atol=1e-5)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, stock.weight.grad, rtol=1e-5, atol=1e-4)


def test_lite0_swap_keeps_keys_and_training_step() -> None:
    torch.manual_seed(0)
    stock = get_model("efficientnet_lite0", 5, 3, "none", dropout=0.0)  # deterministic
    fast = copy.deepcopy(stock)
    assert use_fast_depthwise(fast) == 16  # one per MBConv block
    assert list(fast.state_dict()) == list(stock.state_dict())
    x = torch.rand(4, 3, 64, 64)
    y = torch.tensor([0, 1, 2, 3])
    for m in (stock, fast):
        m.train()
        nn.functional.cross_entropy(m(x), y).backward()
    for (name, a), (_, b) in zip(stock.named_parameters(), fast.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5, msg=name)
    fast.eval()
    with torch.no_grad():  # evaluation and export run the stock kernel
        torch.testing.assert_close(fast(x), stock.eval()(x))


def test_only_plain_depthwise_convs_are_swapped() -> None:
    m = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),       # swapped
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=True),        # bias: kept
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False),  # dilated: kept
        nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=False),      # multiplier 2: kept
        nn.Conv2d(8, 8, 1, bias=False),                            # dense: kept
    )
    assert use_fast_depthwise(m) == 1
    assert [type(c).__name__ for c in m] == ["DepthwiseConv2d"] + ["Conv2d"] * 4
