"""Pieces every method shares: uint8 clips to normalised floats, projection heads."""
from __future__ import annotations

import torch
from torch import nn

# Kinetics-400 statistics, as torchvision's video models use
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)


def to_float(clips: torch.Tensor) -> torch.Tensor:
    """uint8 (..., C, T, H, W) in [0, 255] -> normalised float32, same shape."""
    mean = torch.tensor(MEAN, device=clips.device).view(3, 1, 1, 1)
    std = torch.tensor(STD, device=clips.device).view(3, 1, 1, 1)
    return (clips.float() / 255 - mean) / std


def mlp(dims: list[int], *, batch_norm: bool = False, last_relu: bool = False) -> nn.Sequential:
    """Linear layers with ReLU between (and BN before each ReLU if asked)."""
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2 or last_relu:
            layers += ([nn.BatchNorm1d(b)] if batch_norm else []) + [nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    return (logits.argmax(1) == target).float().mean().item()
