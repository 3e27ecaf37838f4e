"""The GPU paths (``pytest -m gpu``): skipped without CUDA, run on any machine that has it.

torch.compile must not change the numbers; the batched augmentation must give on the GPU what
it gives on the CPU for the same parameters; a training step must never wait for the GPU. bf16
autocast and channels_last_3d are checked against float64 in ``test_numerics.py`` (their GPU
cases carry the same marker).
"""
import pytest
import torch

from course_lib.augment import AugmentConfig, apply, sample_params
from course_lib.bench import train_benchmark
from course_lib.methods import METHODS, build_method, method_class, sampler_for
from course_lib.models import create_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
              pytest.mark.usefixtures("true_fp32")]


def test_compiled_backbone_equals_eager():
    torch.manual_seed(0)
    model = create_model("r3d_18", width=0.5).cuda().eval()
    x = torch.randn(4, 3, 8, 64, 64, device="cuda")
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-3)  # fused kernels sum in another order


def test_augmentation_on_the_gpu_matches_the_cpu():
    cfg = AugmentConfig(size=56, blur=0.5, solarize=0.3)
    clips = torch.randint(0, 256, (6, 3, 8, 64, 80), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    params = sample_params(cfg, 6, 64, 80, torch.Generator().manual_seed(1))
    on_gpu = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in params.items()}
    torch.testing.assert_close(apply(clips.cuda(), on_gpu, cfg).cpu(), apply(clips, params, cfg), rtol=1e-4, atol=1e-4)


def test_train_benchmark_reports_a_fraction_of_the_peak():
    r = train_benchmark(model="r3d_18", method="simclr", batch=8, clip_len=16, size=112, device="cuda", steps=3,
                        amp=True)
    assert r["gflops_per_step"] > 8 * 2 * 3 * 81 * 0.8  # about 3 x 81 GFLOP per 16x112x112 clip, 2 clips per video
    if r["peak_tflops"]:
        assert 0 < r["ceiling_fraction"] < 1


SYNC = "called a synchronizing CUDA operation"


def synchronisations_by_step(run) -> list[tuple[str, list[str]]]:
    """Run ``run()`` under ``torch.cuda.set_sync_debug_mode("warn")``; for every synchronisation, the source line
    of the training loop that caused it and the course_lib frames below it (innermost last)."""
    import inspect
    import traceback
    import warnings

    from course_lib import train as loop

    lines, first = inspect.getsourcelines(loop.train)
    body = next(first + i for i, s in enumerate(lines) if "for step in range(steps):" in s)
    log_point = next(first + i for i, s in enumerate(lines) if "% cfg.log_every == 0" in s)
    found = []

    def record(message, category, filename, lineno, file=None, line=None):
        if SYNC not in str(message):
            return
        ours = [f for f in traceback.extract_stack()[:-1] if "course_lib" in f.filename]
        in_loop = [f for f in ours if f.filename == loop.__file__ and f.name == "train"]  # helpers: their caller's line
        where = "outside the loop" if not in_loop else (
            "step" if body < in_loop[-1].lineno < log_point else "log point or epoch end")
        found.append((where, [f"{f.filename.split('course_lib')[-1]}:{f.lineno} {f.line}" for f in ours]))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return found


@pytest.mark.parametrize("name", list(METHODS))
def test_a_step_never_waits_for_the_gpu(name, tmp_path, synth_quick):
    """Issue 17: over 12 steps with log_every=4, the host waits for the device only at the log points and at the
    epoch's end, never inside a step (data, transfer, augmentation, method, backward, optimiser), in every method."""
    from course_lib.data import ClipDataset
    from course_lib.train import TrainConfig, train

    torch.manual_seed(0)
    if method_class(name).vit_only:
        method, clip_len, crop = build_method(name, create_model("vit_course", width=0.125), size=32), 4, 40
    else:
        method, clip_len, crop = build_method(name, create_model("r3d_vcop", width=0.125), size=28,
                                              num_videos=64, num_classes=8), 4, 32
    ds = ClipDataset(synth_quick, sampler_for(name, clip_len=clip_len), split="train", size=(crop, crop))
    cfg = TrainConfig(epochs=1, batch_size=2, lr=0.01, num_workers=0, steps_per_epoch=12, log_every=4)
    found = synchronisations_by_step(lambda: train(method, ds, cfg, tmp_path, device="cuda", progress=False))
    assert any(w == "log point or epoch end" for w, _ in found)  # the probe works: the log points do wait
    in_steps = [stack for w, stack in found if w != "log point or epoch end"]
    sites = list(dict.fromkeys(" <- ".join(reversed(stack)) for stack in in_steps))  # innermost first
    assert not in_steps, f"{len(in_steps)} waits inside steps, at: " + " || ".join(sites)
