"""Data augmentation on the device, one batch at a time (``TrainConfig.augment``).

``"crop-flip"`` is the standard CIFAR augmentation of the papers' ResNet settings: every image is cropped at a
random offset from a copy padded by 4 pixels on each side, then flipped left-right with probability 1/2.
Offsets and flips are drawn on the CPU from a seeded generator (so a run is reproducible on any device),
and the crop is one gather on the batch's own device. The padding is zeros of the standardized input,
i.e. the training set's mean colour (torchvision pads the raw image with black before standardizing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PADDING = 4


def crop_flip(x: Tensor, generator: torch.Generator, padding: int = PADDING) -> Tensor:
    """A random ``padding``-padded crop and a random horizontal flip of every image of ``x`` (N, C, H, W)."""
    if x.dim() != 4:
        raise ValueError(f"augment='crop-flip' needs image batches of shape (N, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = offsets[:, :1] + torch.arange(h)                       # (n, h) rows of the padded image
    cols = offsets[:, 1:] + torch.arange(w)                       # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)         # a flip reads the columns backwards
    dev = x.device
    padded = F.pad(x, (padding, padding, padding, padding))
    out = padded[torch.arange(n, device=dev)[:, None, None], :, rows.to(dev)[:, :, None], cols.to(dev)[:, None, :]]
    out = out.permute(0, 3, 1, 2)                                 # (n, h, w, c) -> (n, c, h, w), channels-last strides
    return out if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else out.contiguous()


def augment_batch(kind: str, x: Tensor, generator: torch.Generator) -> Tensor:
    if kind == "none":
        return x
    if kind == "crop-flip":
        return crop_flip(x, generator)
    raise ValueError(f"augment must be one of ('none', 'crop-flip'), got {kind!r}")
