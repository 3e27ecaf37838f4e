"""Precision switches against a float64 reference: channels_last_3d on the CPU and the GPU, bf16 autocast on a GPU.

The reference is float64, not the fp32 result: both layouts only reorder float sums, so each is some
distance from the exact gradient, and the switch passes when it is about as close as the default
layout. The objective is the backbone's features against a fixed random readout, a well-conditioned
gradient. (A SimCLR step at random init on noise clips is not: every clip looks alike to an untrained
network and the logits are divided by t = 0.1, so its gradient is a difference of nearly equal terms,
and fp32 itself lands 0.7% of its norm away from float64 there for R3D-18 x0.5 on the CPU; the two
layouts differed by 1.1% on an H200, which such a test cannot tell from a bug.)
"""
import pytest
import torch

from course_lib.models import create_model

CUDA = pytest.param("cuda", marks=[pytest.mark.gpu,
                                   pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])


def readout_gradient(model, x, readout, dtype=torch.float32, channels_last=False, bf16=False):
    """(features, every parameter's gradient) of sum(features * readout), as float64, with the model in ``dtype``."""
    model.to(dtype).zero_grad(set_to_none=True)
    x = x.to(dtype)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        f = model(x)
    (f.double() * readout).sum().backward()
    return f.double(), torch.cat([p.grad.flatten().double() for p in model.parameters()])


def setting(device, model="r3d_18"):
    torch.manual_seed(0)
    m = create_model(model, width=0.25).to(device).train()  # BatchNorm on batch statistics, as in training
    x = torch.rand(4, 3, 8, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)
    readout = torch.randn(4, m.feature_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(device)
    return m, x, readout


def error(a, ref):
    return ((a - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("model", ["r3d_18", "r3d_vcop"])
def test_channels_last_3d_is_as_exact_as_the_default_layout(device, model, true_fp32):
    m, x, readout = setting(device, model)
    f64, g64 = readout_gradient(m, x, readout, torch.float64)
    f32, g32 = readout_gradient(m, x, readout)
    fcl, gcl = readout_gradient(m, x, readout, channels_last=True)
    assert next(p for p in m.parameters() if p.ndim == 5).is_contiguous(memory_format=torch.channels_last_3d)
    assert 0 < error(g32, g64) < 1e-4  # fp32's own error: real, and small
    assert error(fcl, f64) <= 3 * error(f32, f64) + 1e-6
    assert error(gcl, g64) <= 3 * error(g32, g64) + 1e-6  # a wrong gradient would be off by its whole norm


@pytest.mark.parametrize("device", [CUDA])
def test_bf16_autocast_is_exact_to_bf16_precision(device, true_fp32):
    """bf16 keeps 8 significant bits (a rounding error up to 2^-9 = 0.2%) and rounds at every layer's inputs and
    outputs; through 18 layers and back the features and gradient stay within a few percent of float64."""
    m, x, readout = setting(device)
    f64, g64 = readout_gradient(m, x, readout, torch.float64)
    f16, g16 = readout_gradient(m, x, readout, bf16=True)
    fcl, gcl = readout_gradient(m, x, readout, bf16=True, channels_last=True)
    assert error(f16, f64) < 0.05 and error(fcl, f64) < 0.05
    assert error(g16, g64) < 0.1 and error(gcl, g64) < 0.1  # a wrong gradient would be off by about 100%
