"""Depthwise convolution whose CPU backward pass is fast on small feature maps.

On the CPU, oneDNN computes the weight gradient of a depthwise convolution on a small
feature map (8 x 8 or less: the last stages of any CNN fed 64 px EuroSAT chips) 10-15x
slower than the forward pass. That single kernel took over half of every EfficientNet-Lite0
training step here. Two exact rewrites remove it:

* the weight gradient of a depthwise convolution is itself a depthwise convolution, with
  the batch folded into the groups: for every (channel, sample) pair, correlate the padded
  input with the output gradient, then sum over the batch;
* taps that only ever see padding (a 5 x 5 kernel on a 2 x 2 map) contribute nothing: the
  convolution is computed with the live centre of the kernel and those taps get zero
  gradient, exactly as before.

Forward values, gradients and state-dict keys are those of :class:`torch.nn.Conv2d` (a test
compares them); only the speed differs. Evaluation, export and CUDA use the stock kernel.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SMALL_MAP = 8 * 8  # spatial size at or below which the batched weight gradient wins


def _live_crop(kernel: int, stride: int, padding: int, size: int) -> int:
    """Taps to drop from each side: those whose every window position lies in the padding."""
    out = (size + 2 * padding - kernel) // stride + 1
    left = padding - stride * (out - 1)      # taps left of this never reach pixel 0
    right = (kernel - 1) - (size - 1 + padding)  # taps right of this never reach pixel size-1
    return max(min(left, right), 0)


class _DepthwiseFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int
                ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        s, p = ctx.stride, ctx.padding
        c = weight.shape[0]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [s, s], [p, p], [1, 1], False, [0, 0], c,
                [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(x, grad, weight.shape[-1], s, p)
        return grad_x, grad_w, None, None


def _weight_grad(x: torch.Tensor, grad: torch.Tensor, k: int, stride: int, padding: int
                 ) -> torch.Tensor:
    """d loss / d weight for a depthwise conv, as one grouped conv over (channel, sample)."""
    n, c, h, w = x.shape
    ho, wo = grad.shape[-2:]
    xi = x.transpose(0, 1).reshape(1, c * n, h, w)
    gi = grad.transpose(0, 1).reshape(c * n, 1, ho, wo)
    # out[ky, kx] = sum_o grad[o] * x_pad[stride * o + k]: stride becomes the dilation.
    r = F.conv2d(xi, gi, None, 1, padding, stride, c * n)[..., :k, :k]
    return r.reshape(c, n, k, k).sum(1).unsqueeze(1)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False)`` with a faster CPU backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled() and x.device.type == "cpu"
                and x.shape[-1] * x.shape[-2] <= SMALL_MAP):
            return super().forward(x)
        k, p, s = self.kernel_size[0], int(self.padding[0]), self.stride[0]
        cut = min(_live_crop(k, s, p, x.shape[-2]), _live_crop(k, s, p, x.shape[-1]))
        weight = self.weight[:, :, cut:k - cut, cut:k - cut] if cut else self.weight
        return _DepthwiseFn.apply(x, weight, s, p - cut)


def eligible(conv: nn.Module) -> bool:
    """A square, unbiased, undilated depthwise conv with symmetric integer padding."""
    return (type(conv) is nn.Conv2d and conv.groups == conv.in_channels == conv.out_channels
            and conv.groups > 1 and conv.bias is None and conv.dilation == (1, 1)
            and conv.kernel_size[0] == conv.kernel_size[1] and conv.stride[0] == conv.stride[1]
            and isinstance(conv.padding, tuple) and conv.padding[0] == conv.padding[1]
            and conv.padding_mode == "zeros")


def use_fast_depthwise(model: nn.Module) -> int:
    """Swap every eligible depthwise conv in ``model`` for :class:`DepthwiseConv2d`, in place.

    Parameters and state-dict keys are unchanged. Returns how many were swapped.
    """
    swapped = 0
    for module in model.modules():
        if eligible(module):
            module.__class__ = DepthwiseConv2d
            swapped += 1
    return swapped
