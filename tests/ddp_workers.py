"""Code that runs inside the processes of the distributed tests (spawned, so it lives in a module)."""
import os
from pathlib import Path

import torch
import torch.distributed as dist

from course_lib import distributed
from course_lib.data import ClipDataset, Manifest
from course_lib.methods import build_method, sampler_for
from course_lib.models import create_model
from course_lib.train import TrainConfig, train

FIXED_VIEWS = {"crop": "center", "flip": 0.0, "jitter": 0.0, "grayscale": 0.0, "blur": 0.0, "solarize": 0.0}
STEP_METHODS = {  # name -> options; views are deterministic so both runs see the same pixels
    "simclr": {"augment": FIXED_VIEWS},
    "cvrl": {"augment": FIXED_VIEWS, "hidden": 32, "blur2": 0.0, "solarize2": 0.0},
    "moco": {"augment": FIXED_VIEWS, "queue": 24},
    "dualvar": {"augment": FIXED_VIEWS, "rank": False},  # the rank term is per clip; its shuffles are random
}


def fixed_batch(n: int = 8) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"clips": torch.randint(0, 256, (n, 2, 3, 4, 32, 32), generator=g, dtype=torch.uint8),
            "index": torch.arange(n), "label": torch.arange(n) % 4}


def one_step(name: str, rank: int, world: int) -> dict:
    """Loss, gradients and buffers after one step on this process's share of ``fixed_batch``."""
    torch.manual_seed(0)
    method = build_method(name, create_model("r3d_vcop", width=0.125), num_videos=8, size=28, **STEP_METHODS[name])
    batch = fixed_batch()
    share = len(batch["index"]) // world
    local = {k: v[rank * share:(rank + 1) * share] for k, v in batch.items()}
    model = method
    if world > 1:
        method = distributed.sync_batchnorm(method, "cpu")
        model = distributed.wrap_ddp(method, torch.device("cpu"))
    loss, logs = model(local)
    loss.backward()
    loss = loss.detach()
    if world > 1:
        dist.all_reduce(loss)
        loss /= world
    return {"loss": loss, "logs": distributed.mean_over_processes(logs), "grads": {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None},
            "buffers": {n: b.clone() for n, b in method.named_buffers()}}


def train_run(manifest: str, out: Path, **kwargs) -> dict:
    torch.manual_seed(0)
    ds = ClipDataset(Manifest.load(manifest), sampler_for("simclr", clip_len=4), split="train", size=(32, 32))
    method = build_method("simclr", create_model("r3d_vcop", width=0.125), size=28)
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.05, num_workers=0, steps_per_epoch=2)
    train(method, ds, cfg, out, progress=False, **kwargs)
    return {k: v.clone() for k, v in method.state_dict().items()}


def join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    distributed.init("cpu")


def step_worker(rank: int, world: int, port: int, out: str) -> None:
    join(rank, world, port)
    results = {name: one_step(name, rank, world) for name in STEP_METHODS}
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def resume_worker(rank: int, world: int, port: int, out: str, manifest: str) -> None:
    """An uninterrupted 2-epoch run and one stopped after an epoch then resumed (random views)."""
    join(rank, world, port)
    out = Path(out)
    straight = train_run(manifest, out / "straight")
    train_run(manifest, out / "resumed", stop_after_epochs=1)
    resumed = train_run(manifest, out / "resumed")
    torch.save({"straight": straight, "resumed": resumed}, out / f"weights{rank}.pt")
    dist.destroy_process_group()
