"""Backbones: every registered model at a tiny size, torchvision parity, FLOP and parameter counts."""
import pytest
import torch
import torchvision

from course_lib.models import complexity, create_model, list_models


def tiny_input(name: str) -> torch.Tensor:
    # the original C3D's fc6 fixes the input to 16x112x112; every other backbone takes any size
    return torch.randn(2, 3, 16, 112, 112) if name == "c3d" else torch.randn(2, 3, 8, 32, 32)


@pytest.mark.parametrize("name", list_models())
def test_every_model_at_a_tiny_width(name):
    torch.manual_seed(0)
    model = create_model(name, width=0.125, num_classes=5)
    x = tiny_input(name)
    logits, fmap = model(x, return_map=True)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    assert fmap.ndim == 5 and fmap.shape[0] == 2 and torch.isfinite(fmap).all()
    features = create_model(name, width=0.125)(x)  # no classifier: pooled features
    assert features.shape == (2, create_model(name, width=0.125).feature_dim)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_width_multiplier_shrinks_the_model():
    full = sum(p.numel() for p in create_model("r3d_18").parameters())
    quarter = sum(p.numel() for p in create_model("r3d_18", width=0.25).parameters())
    assert 0.05 < quarter / full < 0.08  # parameters scale with width squared (1/16)


@pytest.mark.parametrize("name", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_torchvision_parity(name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models.video, name)(num_classes=7).eval()
    ours = create_model(name, num_classes=7).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)  # same module names
    x = torch.randn(2, 3, 8, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_s3d_features_match_torchvision():
    torch.manual_seed(0)
    reference = torchvision.models.video.s3d().eval()
    ours = create_model("s3d").eval()
    ours.features.load_state_dict(reference.features.state_dict(), strict=True)
    x = torch.randn(1, 3, 16, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), reference.features(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,gmacs", [("r3d_18", 40.7), ("r2plus1d_18", 40.5)])
def test_flops_agree_with_torchvision(name, gmacs):
    counted = complexity(create_model(name, num_classes=400), (1, 3, 16, 112, 112))["gmacs"]
    assert abs(counted - gmacs) / gmacs < 0.02


@pytest.mark.parametrize("name,millions", [("r3d_50", 31.7), ("r21d_vcop", 14.4)])
def test_parameter_counts_of_the_papers(name, millions):
    params = complexity(create_model(name), (1, 3, 4, 32, 32))["params"] / 1e6
    assert abs(params - millions) / millions < 0.01  # CVRL's R3D-50 and DualVar's R(2+1)D


def test_r3d50_halves_time_in_the_stem_only_and_uses_cvrl_temporal_kernels():
    """The official cvrl_pretrain_k600_200ep.yaml: stem temporal kernel 5, stride 2; pool temporal stride 1."""
    model = create_model("r3d_50", width=0.125)
    x = torch.randn(1, 3, 16, 64, 64)
    _, fmap = model(x, return_map=True)
    assert model.stem(x).shape[2] == 8 and fmap.shape[2] == 8  # 16 frames -> 8 time steps, then kept
    assert model.stem[0].kernel_size == (5, 7, 7) and model.stem[0].stride == (2, 2, 2)
    assert model.stem[3].stride == (1, 2, 2)
    full = complexity(create_model("r3d_50"), (1, 3, 16, 224, 224))["gflops"]
    every_step = complexity(create_model("r3d_50", stem_temporal_stride=1), (1, 3, 16, 224, 224))["gflops"]
    assert full == pytest.approx(every_step / 2, rel=0.01)  # half the compute
    kernels = [stage[0].conv_a.kernel_size[0] for stage in (model.res2, model.res3, model.res4, model.res5)]
    assert kernels == [1, 1, 3, 3]


def test_light_backbones_give_512_features():
    for name in ("c3d_vcop", "r3d_vcop", "r21d_vcop"):
        assert create_model(name).feature_dim == 512
        layers = [m for m in create_model(name).modules() if type(m).__name__ == "BasicBlock"]
        assert name == "c3d_vcop" or len(layers) == 4  # one residual block per stage


def test_unknown_model_is_one_clear_error():
    with pytest.raises(ValueError, match=r"unknown model 'resnet9000'; choose one of: c3d, .*s3d"):
        create_model("resnet9000")


@pytest.mark.parametrize("name", ["r3d_50", "slow_r50"])
def test_resnet50_bottlenecks_start_with_every_batchnorm_at_one(name):
    """Neither official code zero-initialises the last BatchNorm of a bottleneck (TF Model Garden's
    BottleneckBlock3D ``_norm3``; SlowFast ``ZERO_INIT_FINAL_BN: False`` for rho-BYOL); the switch does."""
    from course_lib.models.r3d50 import Bottleneck3D
    blocks = [m for m in create_model(name, width=0.125).modules() if isinstance(m, Bottleneck3D)]
    assert len(blocks) == 16 and all(bool((b.bn_c.weight == 1).all()) for b in blocks)
    zeroed = [m for m in create_model(name, width=0.125, zero_init_residual=True).modules() if isinstance(m, Bottleneck3D)]
    assert all(bool((b.bn_c.weight == 0).all()) and bool((b.bn_b.weight == 1).all()) for b in zeroed)
