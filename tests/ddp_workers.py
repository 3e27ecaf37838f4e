"""Code that runs inside the processes of the distributed tests (spawned, so it lives in a module)."""
import os
from pathlib import Path

import torch
import torch.distributed as dist

from course_lib import distributed
from course_lib.data import ClipDataset, Manifest
from course_lib.methods import build_method, method_class, sampler_for
from course_lib.methods.masking import tube_mask
from course_lib.models import create_model
from course_lib.train import TrainConfig, train

FIXED_VIEWS = {"crop": "center", "flip": 0.0, "jitter": 0.0, "grayscale": 0.0, "blur": 0.0, "solarize": 0.0}
STEP_METHODS = {  # name -> options; views are deterministic so both runs see the same pixels
    "simclr": {"augment": FIXED_VIEWS},
    "cvrl": {"augment": FIXED_VIEWS, "hidden": 32, "blur2": 0.0, "solarize2": 0.0},
    "moco": {"augment": FIXED_VIEWS, "queue": 24, "bn_groups": 1},  # shuffled BN groups are per process
    "dualvar": {"augment": FIXED_VIEWS, "rank": False, "reverse": 0.0},  # the shuffles and reversals are random
    "byol": {"augment": FIXED_VIEWS, "hidden": 32, "dim": 16},
    "videomae": {"augment": FIXED_VIEWS, "decoder_depth": 1},  # masks given in the batch (MASKS)
    "vjepa": {"augment": FIXED_VIEWS, "predictor_depth": 1},
}


# every method, and every arm of notebook 07 (DualVar on SimCLR and MoCo: alone, + rank, + coherent, + both);
# their random draws (rotations, orders, negatives, shuffles) differ between processes, so these are checked
# for what DDP needs (every trainable parameter gets a gradient, two steps run) rather than for equal numbers
ALL_ARMS = {
    **{name: {} for name in ("supervised", "rotation", "vcop", "speed", "simclr", "cvrl")},
    "moco": {"queue": 24}, "iic": {"negatives": 16}, "byol": {"hidden": 64}, "videomae": {},
    "vjepa": {"predictor_depth": 2},
    **{f"dualvar {base} {arm}": {"base": base, "rank": rank, "coherent": coherent, "queue": 24}
       for base in ("simclr", "moco")
       for arm, rank, coherent in (("alone", False, False), ("+ rank", True, False), ("+ coherent", False, True),
                                   ("+ both", True, True))},
}


def fixed_batch(n: int = 8, clips: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"clips": torch.randint(0, 256, (n, clips, 3, 4, 32, 32), generator=g, dtype=torch.uint8),
            "index": torch.arange(n), "label": torch.arange(n) % 4,
            "frames": torch.arange(4).repeat(n, clips, 1)}  # stride 1: the speed task's class 0


def small_backbone(method: str):
    """The smallest backbone of the kind a method takes (a ViT for the masked methods)."""
    return create_model("vit_course" if method_class(method).vit_only else "r3d_vcop", width=0.125)


def given_masks(name: str, n: int = 8) -> dict:
    """Masks drawn once, for the masked methods, so one process and two see the same ones (each process would
    draw its own); the same count in every clip (2 x 4 x 4 tokens), so that no process trims differently."""
    g = torch.Generator().manual_seed(0)
    if name == "videomae":
        return {"mask": tube_mask(n, (2, 4, 4), 0.9, generator=g)}  # B x N
    if name == "vjepa":
        return {"mask": torch.stack([tube_mask(n, (2, 4, 4), r, generator=g) for r in (0.5, 0.75)], 1)}  # B x 2 x N
    return {}


def on_this_process(method, batch: dict, rank: int, world: int):
    """(method, the module to call, this process's share of batch): with several processes, the method with
    global BatchNorm, wrapped in DDP."""
    share = len(batch["index"]) // world
    local = {k: v[rank * share:(rank + 1) * share] for k, v in batch.items()}
    model = method
    if world > 1:
        method = distributed.sync_batchnorm(method, "cpu")
        model = distributed.wrap_ddp(method, torch.device("cpu"))
    return method, model, local


def two_steps(arm: str, rank: int, world: int) -> dict:
    """Two training steps of one arm on this process's share of a batch; which parameters got no gradient."""
    torch.manual_seed(rank)
    name = arm.split()[0]
    method = build_method(name, small_backbone(name), num_classes=4, num_videos=8,
                          size=32 if method_class(name).vit_only else 28, **ALL_ARMS[arm])
    batch = fixed_batch(clips=3 if name == "vcop" else 2)
    method, model, local = on_this_process(method, batch, rank, world)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.01)
    losses = []
    for _ in range(2):  # DDP finds a parameter without a gradient at the step after
        loss, _ = model(local)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "no_grad": [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]}


def one_step(name: str, rank: int, world: int) -> dict:
    """Loss, gradients and buffers after one step on this process's share of ``fixed_batch``."""
    torch.manual_seed(0)
    method = build_method(name, small_backbone(name), num_videos=8, size=32 if method_class(name).vit_only else 28,
                          **STEP_METHODS[name])
    batch = {**fixed_batch(), **given_masks(name)}
    method, model, local = on_this_process(method, batch, rank, world)
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


def arms_worker(rank: int, world: int, port: int, out: str) -> None:
    join(rank, world, port)
    results = {}
    for arm in ALL_ARMS:
        try:
            results[arm] = two_steps(arm, rank, world)
        except Exception as e:  # reported by the test, with the arm's name
            results[arm] = {"error": f"{type(e).__name__}: {e}"}
    torch.save(results, Path(out) / f"arms{rank}.pt")
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
