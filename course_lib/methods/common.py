"""Pieces every method shares: clips to normalised floats, projection heads, two views."""
from __future__ import annotations

import torch
from torch import nn

from ..runtime import device_constant

# Kinetics-400 statistics, as torchvision's video models use
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)


@device_constant
def _mean_std() -> torch.Tensor:
    """The statistics, 2 x 3 x 1 x 1 x 1 (mean, std); cached per device and dtype by ``device_constant``."""
    return torch.tensor([MEAN, STD], dtype=torch.float64).view(2, 3, 1, 1, 1)  # rounded once, to the dtype asked


def normalize(x: torch.Tensor) -> torch.Tensor:
    """float (..., C, T, H, W) in [0, 1] -> standardised with the Kinetics mean and std, same shape."""
    mean, std = _mean_std(x.device, x.dtype)
    return (x - mean) / std


def to_float(clips: torch.Tensor) -> torch.Tensor:
    """uint8 (..., C, T, H, W) in [0, 255] -> normalised float32, same shape."""
    return normalize(clips.float() / 255)


def mlp(dims: list[int], *, batch_norm: bool = False, last_relu: bool = False) -> nn.Sequential:
    """Linear layers with ReLU between (and BN before each ReLU if asked)."""
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2 or last_relu:
            layers += ([nn.BatchNorm1d(b)] if batch_norm else []) + [nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Share of rows whose top logit is the target, a 0-d tensor on the logits' device (a training log: the
    loop reads it on the host only at its log points)."""
    return (logits.argmax(1) == target).float().mean().detach()


def two_views(batch: dict, augment: nn.Module, debias=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two augmented views per video, float B x C x T x H x W in [0, 1] each.

    With two or more clips per video (S >= 2) the views come from clips 0 and 1 (different
    moments of the video); with one clip, both views augment that clip. ``debias`` (a
    ``debias.Debias``) makes the first view with its fixes (BE, FAME).
    """
    clips = batch["clips"]  # B x S x C x T x H x W, uint8
    first, second = clips[:, 0], clips[:, 1 if clips.shape[1] > 1 else 0]
    return (debias.query(augment, first) if debias else augment(first)), augment(second)
