"""Data-parallel training on ``torchrun``: process group, global negatives, synchronised BatchNorm.

``torchrun --nproc-per-node G -m course_lib pretrain ...`` starts G processes with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set; ``init`` joins them into one group (NCCL
on GPUs, gloo on the CPU). Contrastive losses then need every process's embeddings:
``all_gather`` concatenates them in rank order *with gradients*, so the negatives are the
global batch and each process's backward reaches the embeddings it computed (the
SimCLR and CVRL papers pretrain this way, with the batch spread over many accelerators).
Queues and memory banks are updated with ``gather_no_grad`` so they stay identical on
every process. Without a process group every function here is the identity.

BatchNorm over a batch split across processes would see only the local part; SimCLR
and CVRL use a global ("synchronised") BatchNorm. ``sync_batchnorm`` converts a model:
``torch.nn.SyncBatchNorm`` on GPUs, and ``GlobalBatchNorm`` (below) on the CPU, where
torch's version is not implemented; both compute the statistics over the global batch.
"""
from __future__ import annotations

import atexit
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def context() -> Context:
    if not active():
        return Context()
    return Context(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size())


def init(device_type: str) -> Context:
    """Join the process group that torchrun describes in the environment (once); a single process stays alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Context()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
        atexit.register(_leave)  # torch asks for it: a group left to the interpreter's exit may abort a process
    return context()


def _leave() -> None:
    """Destroy the process group at exit (one CI run's rank 1 aborted in teardown without it)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def rank() -> int:
    return dist.get_rank() if active() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient of the gathered tensor and keeps this
    process's rows (the GatherLayer of SimCLR's code). Written here because
    ``torch.distributed.nn.functional.all_gather`` is deprecated, and on gloo it sends
    non-contiguous gradients as they lie in memory (measured: wrong gradients for an einsum)."""

    @staticmethod
    def forward(ctx, x):
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n:(dist.get_rank() + 1) * n]


class _SumWithGrad(torch.autograd.Function):
    """all_reduce(SUM) with autograd: the gradient of a sum over processes is the sum of their gradients."""

    @staticmethod
    def forward(ctx, x):
        x = x.contiguous().clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) on each process -> (world * B, ...) in rank order; gradients flow back to each process's part."""
    if not active():
        return x
    return _GatherWithGrad.apply(x)


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the processes, with gradients (identity on one process)."""
    return _SumWithGrad.apply(x) if active() else x


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """As ``all_gather``, without gradients (queue and bank updates)."""
    if not active():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)


def local_rows(n: int, device=None) -> torch.Tensor:
    """The positions of this process's n rows in the gathered tensor."""
    return torch.arange(n, device=device) + rank() * n


def mean_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Average a dict of numbers (or 0-d tensors) over the processes (for logs), as Python floats."""
    if not active() or not values:
        return {k: float(v) for k, v in values.items()}
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, (t / dist.get_world_size()).tolist()))


def gather_objects(obj) -> list:
    """One picklable object from every process, in rank order ([obj] on one process)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on any device and backend.

    The sum and the squared deviations are all-reduced with autograd, so the gradient is
    that of BatchNorm over the concatenated batch. Without a process group, or in eval
    mode, it is plain BatchNorm; its state dict is BatchNorm's.
    """

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {x.dim()}-D).")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.tensor([xf.numel() / xf.shape[1]], dtype=torch.float64)
        dist.all_reduce(count)
        n = count.item()
        mean = all_sum(xf.sum(dims)) / n  # C, over every process's batch
        centred = xf - mean.view(shape)
        var = all_sum(centred.pow(2).sum(dims)) / n  # C, biased (as BatchNorm normalises)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                self.running_var.lerp_((var * n / max(n - 1, 1)).to(self.running_var.dtype), m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``module``. Buffers (queues, banks, BatchNorm statistics) are synced
    once at the start and then stay equal by construction, so they are not broadcast every step."""
    ddp = nn.parallel.DistributedDataParallel
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
               else {"broadcast_buffers": False})  # the newer name (torch >= 2.11) and the older one
    return ddp(module, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Every BatchNorm of ``module`` computes global-batch statistics (torch's SyncBatchNorm on CUDA)."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, sync_batchnorm(child, device_type))
    return module
