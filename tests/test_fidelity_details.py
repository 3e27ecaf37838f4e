"""Small fidelity details (docs/fidelity.md), each computed here in its official form, written from the official
code, and compared with course_lib's: rho-BYOL's head initialisation (SlowFast), the 3D position code's channels per
axis (jepa) and VideoMAE's 1D code, the attentive probe's LayerNorm eps (jepa), and VideoMAE's epoch counts."""
import inspect
import math

import numpy as np
import pytest
import torch
from torch import nn

from course_lib.attentive import AttentiveProbe
from course_lib.course import default_config
from course_lib.methods import build_method
from course_lib.models import create_model
from course_lib.models.vit import position_code
from course_lib.train import lr_factor


# ----------------------------------------------------------------------------- 1. rho-BYOL's heads
def test_byol_heads_start_as_slowfast_xavier_fill():
    """SlowFast (287ec00): ``MLPHead`` marks its linear layers ``xavier_init`` (``slowfast/models/head_helper.py``),
    which ``init_weights`` (``slowfast/utils/weight_init_helper.py``) fills with fvcore's ``c2_xavier_fill``: Caffe2's
    XavierFill, weights uniform in +-sqrt(3 / fan_in) (std 1 / sqrt(fan_in)), biases 0. PyTorch's default would give
    +-1 / sqrt(fan_in) (std 1 / sqrt(3 fan_in)) and non-zero biases."""
    torch.manual_seed(0)
    byol = build_method("byol", create_model("r3d_vcop", width=0.125), size=28, hidden=512, dim=64)
    linears = [m for head in (byol.projector, byol.predictor) for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 4  # two per head: SlowFast's NUM_MLP_LAYERS 2 and PREDICTOR_DEPTHS [2]
    for m in linears:
        fan_in = m.weight.shape[1]
        bound = math.sqrt(3 / fan_in)  # XavierFill's scale
        w = m.weight.detach()
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.99 * bound  # thousands of draws reach the edge of the range
        assert w.std().item() == pytest.approx(1 / math.sqrt(fan_in), rel=0.05)  # uniform: bound / sqrt(3)
        assert w.mean().abs() < 0.05 / math.sqrt(fan_in)
        if m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0
    # the target starts as a copy of the online projector
    for a, b in zip(byol.projector.parameters(), byol.target_projector.parameters()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- 2. position codes
def jepa_3d_code(grid, dim):
    """jepa ``get_3d_sincos_pos_embed(dim, ..., uniform_power=True)`` (``src/models/utils/pos_embs.py``), as read:
    every axis gets 2 ceil(dim / 6) channels, all its sines then all its cosines, frequency 10000^(-2j / channels);
    the (t, h, w) codes are concatenated and the whole cut to ``dim``. Tokens in (t h w) order. float64."""
    t, h, w = grid
    per_axis = int(np.ceil(dim / 6) * 2)
    d, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    omega = 1.0 / 10000 ** (np.arange(per_axis // 2) / (per_axis / 2))
    codes = []
    for pos in (d, hh, ww):
        angle = pos.reshape(-1)[:, None] * omega[None]
        codes.append(np.concatenate([np.sin(angle), np.cos(angle)], axis=1))
    return np.concatenate(codes, axis=1)[:, :dim], per_axis


def videomae_1d_code(n, dim):
    """VideoMAE ``get_sinusoid_encoding_table(n, dim)`` (``modeling_finetune.py``), as read: channel c of token i is
    i / 10000^(2 (c // 2) / dim), through sin at even c and cos at odd c. float64."""
    angle = np.array([[i / 10000 ** (2 * (c // 2) / dim) for c in range(dim)] for i in range(n)])
    angle[:, 0::2], angle[:, 1::2] = np.sin(angle[:, 0::2]), np.cos(angle[:, 1::2])
    return angle


def same_columns(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-6) -> bool:
    """Whether a and b (N x D) hold the same columns, in any order (a multiset match, duplicates included)."""
    if a.shape != b.shape:
        return False
    dist = torch.cdist(a.T.double(), b.T.double(), p=float("inf"))  # D x D, max |difference| over the N rows
    free = torch.ones(b.shape[1], dtype=torch.bool)
    for row in dist:
        hit = torch.nonzero((row < tol) & free)
        if len(hit) == 0:
            return False
        free[hit[0, 0]] = False
    return True


@pytest.mark.parametrize("dim, split", [(1024, (342, 342, 340)), (768, (256, 256, 256)), (14, (6, 6, 2)),
                                        (189, (64, 64, 61))])
def test_3d_position_code_splits_channels_as_jepa(dim, split):
    """ViT-L (1024): jepa gives t and h 342 channels each and w the 340 left by the cut (its 2 lowest-frequency
    cosines dropped); ViT-B (768): 256 each. The course's code holds the same channels, in its own order."""
    n = 64  # one axis long enough that its lowest-frequency cosines differ from 1 and from each other in float32
    for axis in range(3):
        grid = tuple(n if a == axis else 1 for a in range(3))
        official, per_axis = jepa_3d_code(grid, dim)
        assert min(per_axis, dim - axis * per_axis) == split[axis]
        ours = position_code(grid, dim)
        varying = (ours.max(0).values - ours.min(0).values > 0).sum().item()  # the channels of the moving axis
        assert varying == split[axis], f"axis {axis}"
        assert same_columns(torch.from_numpy(official).float(), ours), f"axis {axis}"
    official, _ = jepa_3d_code((2, 3, 4), dim)
    assert same_columns(torch.from_numpy(official).float(), position_code((2, 3, 4), dim))


@pytest.mark.parametrize("dim", [768, 1024])
def test_1d_position_code_is_videomae_table(dim):
    """VideoMAE's code has no split: one sinusoid over the flattened token index, on all the channels."""
    grid = (8, 2, 3)
    expected = torch.from_numpy(videomae_1d_code(48, dim)).float()
    torch.testing.assert_close(position_code(grid, dim, "1d"), expected, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- 3. the attentive probe's LayerNorms
def test_attentive_probe_layernorms_have_jepa_eps():
    """jepa ``AttentivePooler(norm_layer=nn.LayerNorm)`` (``src/models/attentive_pooler.py``) gives its
    ``CrossAttentionBlock`` (``src/models/utils/modules.py``) two ``norm_layer(dim)``, PyTorch's default eps; the
    frozen evaluation (``evals/video_classification_frozen/eval.py``) passes no norm_layer, and depth 1 adds no other
    block. The encoders' ``partial(nn.LayerNorm, eps=1e-6)`` (``src/models/vision_transformer.py``) stays theirs."""
    official_eps = inspect.signature(nn.LayerNorm).parameters["eps"].default
    assert official_eps == 1e-5
    norms = [m for m in AttentiveProbe(48, 5).modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2
    assert [m.eps for m in norms] == [official_eps, official_eps]
    vit = create_model("vit_course", width=0.25)
    assert {m.eps for m in vit.modules() if isinstance(m, nn.LayerNorm)} == {1e-6}


# ----------------------------------------------------------------------------- 4. VideoMAE's epochs
# MCG-NJU/VideoMAE 14ef8d8: the pretraining script's --epochs and --warmup_epochs, and the epoch index of the
# checkpoint its fine-tuning reads (FINETUNE.md; the UCF101 fine-tuning reads an unnumbered checkpoint.pth, taken
# as Kinetics': the paper's epoch count). --epochs is the paper's count + 1, against a crash in the last epoch
# (INSTALL.md).
VIDEOMAE = {"videomae_vitb_k400": dict(epochs=801, warmup=40, checkpoint=799),
            "videomae_vitb_ucf101": dict(epochs=3201, warmup=40, checkpoint=3199)}


def videomae_lr(epochs, warmup_epochs, steps_per_epoch):
    """VideoMAE ``utils.cosine_scheduler(lr, min_lr, epochs, niter_per_ep, warmup_epochs)`` with lr 1 and min_lr 0
    (the course's cosine ends at 0: a difference of its own), as read: ``np.linspace(0, 1, warmup)`` (the script
    passes no start value), then 0.5 (1 + cos(pi i / L)) for i < L, L the steps after the warm-up."""
    warmup = warmup_epochs * steps_per_epoch
    after = epochs * steps_per_epoch - warmup
    return np.concatenate([np.linspace(0, 1, warmup), 0.5 * (1 + np.cos(np.pi * np.arange(after) / after))])


@pytest.mark.parametrize("name", sorted(VIDEOMAE))
def test_videomae_epochs_are_the_trained_span_of_the_script(name):
    official = VIDEOMAE[name]
    cfg = default_config("full").with_overrides(name)
    assert cfg.epochs == official["checkpoint"] + 1 == official["epochs"] - 1  # the model VideoMAE reports
    assert cfg.warmup_epochs == official["warmup"]
    steps = 4  # per epoch; the schedules depend on the share of training only
    theirs = videomae_lr(official["epochs"], official["warmup"], steps)[:cfg.epochs * steps]  # the epochs trained
    train = cfg.train_config()
    ours = np.array([lr_factor(s, steps, train) for s in range(cfg.epochs * steps)])
    after = official["warmup"] * steps
    bound = 1 / (official["epochs"] - official["warmup"])  # of the peak: cosines over L and L - 1 epochs, about 0.91 / L
    assert np.abs(ours[after:] - theirs[after:]).max() < bound
    assert np.abs(ours[:after] - theirs[:after]).max() < 1.5 / after  # linear warm-ups from 0, a step apart
