"""A name -> constructor registry for backbones: ``create_model(name, **kwargs)``."""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Decorator: make ``create_model(name, ...)`` call the decorated constructor."""

    def add(fn):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = fn
        return fn

    return add


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered backbone, e.g. ``create_model("r3d_18", num_classes=8, width=0.25)``."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}.")
    return _MODELS[name](**kwargs)


class Backbone(nn.Module):
    """What every backbone shares: ``forward_features`` gives the last feature map
    (B, C, t, h, w); ``forward`` pools it to (B, feature_dim) and applies ``fc`` (an
    identity unless ``num_classes`` was given). ``forward(x, return_map=True)`` also
    returns the map."""

    feature_dim: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3, 4))  # B x C

    def forward(self, x: torch.Tensor, *, return_map: bool = False):
        fmap = self.forward_features(x)  # B x C x t x h x w
        out = self.fc(self.pool(fmap))  # B x num_classes (or B x C)
        return (out, fmap) if return_map else out


@functools.lru_cache(maxsize=512)
def input_problem(name: str, frames: int, size: int, width: float = 1.0) -> str | None:
    """None if backbone ``name`` takes clips of ``frames`` x ``size`` x ``size``, else why not (one line).

    Frames smaller than the backbone's spatial stride (its total down-sampling) are refused too: its
    last feature map would be computed from padding. The forward passes run on the meta device:
    shapes only, no memory and no arithmetic.
    """
    with torch.device("meta"):
        model = create_model(name, width=width).eval()
        try:
            with torch.no_grad():
                model(torch.empty(1, 3, frames, size, size))
                stride = 256 // model.forward_features(torch.empty(1, 3, frames, 256, 256)).shape[-1]
        except (RuntimeError, ValueError) as e:
            return str(e).splitlines()[0] if str(e) else type(e).__name__
    if size < stride:
        return f"{size} px frames are smaller than its spatial stride of {stride} px"
    return None


def smallest_input(name: str, width: float = 1.0, *, frames: int = 16, size: int = 112) -> tuple[int | None, int | None]:
    """(fewest frames at ``size`` px, fewest pixels at ``frames`` frames) that ``name`` takes; None if none up to 64 / 256."""
    t = next((t for t in range(1, 65) if input_problem(name, t, size, width) is None), None)
    s = next((s for s in range(1, 257) if input_problem(name, frames, s, width) is None), None)
    return t, s


def _count_cpu_attention() -> None:
    """Teach ``torch.utils.flop_counter`` the CPU's fused attention kernels (it knows the CUDA ones), with the
    formulas it uses for those, so that a ViT's N x N attention products are counted on every device."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    for op, formula in (("_scaled_dot_product_flash_attention_for_cpu", fc.sdpa_flop),
                        ("_scaled_dot_product_flash_attention_for_cpu_backward", fc.sdpa_backward_flop)):
        packet = getattr(aten, op, None)
        if packet is not None and packet not in fc.flop_registry and packet.default not in fc.flop_registry:
            fc.register_flop_formula(packet, get_raw=True)(formula)  # the formulas take shapes already


_count_cpu_attention()


def head(feature_dim: int, num_classes: int | None) -> nn.Module:
    return nn.Linear(feature_dim, num_classes) if num_classes else nn.Identity()


def complexity(model: nn.Module, input_size=(1, 3, 16, 112, 112)) -> dict:
    """Parameters and multiply-accumulates of one forward pass (``torch.utils.flop_counter``).

    The counter reports FLOPs (2 per multiply-accumulate); papers and torchvision quote
    GMACs, so both are returned.
    """
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(input_size, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    flops = counter.get_total_flops()
    return {"params": sum(p.numel() for p in model.parameters()), "gflops": flops / 1e9, "gmacs": flops / 2e9}


def scaled(channels: int, width: float) -> int:
    """Channel count times the width multiplier, at least 4."""
    return max(4, int(round(channels * width)))
