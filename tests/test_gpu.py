"""The GPU paths (``pytest -m gpu``): skipped without CUDA, run on any machine that has it.

bf16 autocast must train the same thing as fp32 up to bf16 precision; torch.compile and
channels_last_3d must not change the numbers; the batched augmentation must give on the
GPU what it gives on the CPU for the same parameters.
"""
import pytest
import torch
import torch.nn.functional as F

from course_lib.augment import AugmentConfig, apply, sample_params
from course_lib.bench import train_benchmark
from course_lib.methods import build_method
from course_lib.models import create_model
from course_lib.train import use_channels_last

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
FIXED_VIEWS = {"crop": "center", "flip": 0.0, "jitter": 0.0, "grayscale": 0.0, "blur": 0.0}


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 would make 'fp32' itself approximate on Ampere and later; the comparisons want true fp32."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def simclr_and_batch(model="r3d_18", width=0.5, batch=8, clip_len=8, size=64):
    torch.manual_seed(0)
    method = build_method("simclr", create_model(model, width=width), size=size, augment=FIXED_VIEWS).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    clips = torch.randint(0, 256, (batch, 2, 3, clip_len, size + 8, size + 8), generator=g, dtype=torch.uint8,
                          device="cuda")
    return method, {"clips": clips, "index": torch.arange(batch, device="cuda")}


def loss_and_grads(method, batch, **autocast):
    method.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bool(autocast)):
        loss, _ = method(batch)
    loss.backward()
    return loss.detach().float(), torch.cat([p.grad.flatten().float() for p in method.parameters() if p.grad is not None])


def test_bf16_loss_and_gradient_stay_close_to_fp32():
    method, batch = simclr_and_batch()
    l32, g32 = loss_and_grads(method, batch)
    l16, g16 = loss_and_grads(method, batch, bf16=True)
    # bf16 keeps 8 bits of mantissa (about 3 significant digits); the logits are divided by t = 0.1
    assert abs(l16 - l32) <= 0.05 * l32
    assert F.cosine_similarity(g16, g32, dim=0) > 0.95  # the same descent direction


def test_compiled_backbone_equals_eager():
    torch.manual_seed(0)
    model = create_model("r3d_18", width=0.5).cuda().eval()
    x = torch.randn(4, 3, 8, 64, 64, device="cuda")
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-3)  # fused kernels sum in another order


def test_channels_last_3d_gives_the_same_step():
    method, batch = simclr_and_batch()
    l0, g0 = loss_and_grads(method, batch)
    use_channels_last(method)
    l1, g1 = loss_and_grads(method, batch)
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-5)
    assert (g1 - g0).norm() <= 1e-3 * g0.norm()


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
