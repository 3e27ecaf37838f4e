"""rho-BYOL: the loss over every ordered pair of clips, the EMA target and its cosine schedule, the collapse
diagnostics, and a training run that follows the schedule and resumes exactly."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.data import ClipDataset
from course_lib.losses import byol_loss, cosine_momentum, effective_rank, embedding_std
from course_lib.methods import build_method, sampler_for
from course_lib.models import create_model
from course_lib.train import METRICS, TrainConfig, train

FIXED = {"crop": "center", "flip": 0.0, "jitter": 0.0, "grayscale": 0.0, "blur": 0.0, "solarize": 0.0}


def tiny_byol(**options):
    torch.manual_seed(0)
    return build_method("byol", create_model("r3d_vcop", width=0.125), size=28, hidden=32, dim=16, **options)


def clips(n=6, rho=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"clips": torch.randint(0, 256, (n, rho, 3, 4, 32, 32), generator=g, dtype=torch.uint8)}


def test_byol_loss_by_hand():
    """The official form: for each online clip i, the mean over target clips j != i of the squared distance of
    the normalised vectors (2 - 2 cos), averaged over videos, summed over i; the target gets no gradient."""
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(3, 5, 8, generator=g, requires_grad=True), torch.randn(3, 5, 8, generator=g, requires_grad=True)
    expected = 0
    for i in range(3):
        terms = []
        for j in range(3):
            if j != i:
                for n in range(5):
                    a, b = p[i, n] / p[i, n].norm(), z[j, n] / z[j, n].norm()
                    terms.append(((a - b) ** 2).sum())
        expected = expected + torch.stack(terms).mean()
    # SlowFast's contrastive.py: sum over online clips of the mean over the others of -<p, z> / 0.5, plus 2 rho
    slowfast = sum(-(F.normalize(p[i], dim=1) * F.normalize(z[j], dim=1)).sum(1).mean() / 0.5
                   for i in range(3) for j in range(3) if j != i) / 2 + 2 * 3
    torch.testing.assert_close(slowfast, expected)
    got = byol_loss(p, z)
    torch.testing.assert_close(got, expected)
    got.backward()
    assert z.grad is None and p.grad is not None
    assert byol_loss(z.detach()[:2], z.detach()[[1, 0]]) == pytest.approx(0, abs=1e-6)  # each predicts the other


def test_cosine_momentum_schedule():
    """1 - (1 - m0) (cos(pi t) + 1) / 2: m0 at the start, halfway to 1 at mid-training, 1 at the end."""
    assert cosine_momentum(0.99, 0.0) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 0.5) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.99, 0.25) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)


def test_the_target_is_an_ema_of_the_online_network():
    m = tiny_byol(momentum=0.9)
    m.set_progress(0.5)
    assert m.momentum == pytest.approx(cosine_momentum(0.9, 0.5))
    online = {k: v.detach().clone() for k, v in m.backbone.named_parameters()}
    with torch.no_grad():  # move the target away from the online weights, to see the average
        for p in m.target_backbone.parameters():
            p.add_(1.0)
    before = {k: v.detach().clone() for k, v in m.target_backbone.named_parameters()}
    m(clips())
    mom = m.momentum
    for k, v in m.target_backbone.named_parameters():
        torch.testing.assert_close(v, mom * before[k] + (1 - mom) * online[k])
        assert not v.requires_grad
    # no EMA (momentum 0): the target is the online network itself, under a stop-gradient
    same = tiny_byol(momentum=0.0)
    same.set_progress(0.7)
    same(clips())
    assert same.momentum == 0 and all(torch.equal(a, b) for a, b in zip(same.target_backbone.parameters(),
                                                                        same.backbone.parameters()))


def test_the_target_projects_each_clip_in_its_own_pass():
    """SlowFast's rho-BYOL (CONTRASTIVE.SEQUENTIAL: True) computes each clip's target keys in a pass of its own
    (compute_key_feat with batched_inference=False for rho >= 2), so the target's BatchNorm, in training mode,
    normalises one view of every video at a time, not all rho x B clips together."""
    byol = tiny_byol(rho=3, augment=FIXED).train()
    views = [torch.randn(6, 3, 4, 28, 28, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    got = byol.targets(views)
    with torch.no_grad():
        own = torch.stack([byol.target_projector(byol.target_backbone(v)) for v in views])
        joint = byol.target_projector(byol.target_backbone(torch.cat(views))).view(3, 6, -1)
    assert got.shape == (3, 6, 16)
    torch.testing.assert_close(got, own)
    assert not torch.allclose(got, joint, atol=1e-4)  # one joint pass would share the BatchNorm statistics


def test_rho_clips_every_pair_and_no_predictor():
    four = tiny_byol(rho=4, augment=FIXED)
    assert sampler_for("byol", clip_len=4, rho=4).num_clips == 4
    loss, logs = four(clips(rho=4))
    assert loss.ndim == 0 and 0 <= logs["acc"] <= 1
    with pytest.raises(ValueError, match="rho=4 needs 4 clips per video, got 2"):
        four(clips(rho=2))
    bare = tiny_byol(predictor=False)
    assert isinstance(bare.predictor, torch.nn.Identity)
    with pytest.raises(ValueError, match="rho must be an integer >= 2"):
        tiny_byol(rho=1)


def test_byol_reduces_its_loss_on_a_fixed_batch():
    m = tiny_byol(augment=FIXED)
    batch = clips(n=8)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        loss, _ = m(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_collapse_diagnostics_by_hand():
    g = torch.Generator().manual_seed(0)
    collapsed = torch.ones(50, 16) + 1e-7 * torch.randn(50, 16, generator=g)
    spread = torch.randn(2000, 16, generator=g)
    assert embedding_std(collapsed) < 1e-5
    assert embedding_std(spread) == pytest.approx(1 / math.sqrt(16), rel=0.05)
    line = torch.randn(50, 1, generator=g) * torch.randn(1, 16, generator=g)  # every embedding on one line
    assert effective_rank(line) == pytest.approx(1, abs=1e-3)
    assert effective_rank(spread) > 15
    eye = torch.eye(8)  # 8 orthogonal directions of equal size, after centring: rank 7, all singular values equal
    assert effective_rank(eye) == pytest.approx(7, rel=1e-4)


def test_training_follows_the_momentum_schedule_and_resumes_exactly(tmp_path, synth_quick):
    def run(out, stop=None):
        torch.manual_seed(0)
        m = build_method("byol", create_model("r3d_vcop", width=0.125), size=28, hidden=32, dim=16, momentum=0.9)
        ds = ClipDataset(synth_quick, sampler_for("byol", clip_len=4), split="train", size=(32, 32))
        cfg = TrainConfig(epochs=3, batch_size=4, lr=0.01, num_workers=0, steps_per_epoch=2)
        train(m, ds, cfg, out, progress=False, stop_after_epochs=stop)
        if stop:
            train(m, ds, cfg, out, progress=False)
        return m, [json.loads(x) for x in (out / METRICS).read_text().splitlines()]

    m, history = run(tmp_path / "a")
    assert m.momentum == pytest.approx(cosine_momentum(0.9, 5 / 6))  # the last of 6 steps starts at 5/6
    assert all(h["clips_per_s"] == pytest.approx(2 * h["videos_per_s"], rel=0.02) for h in history)  # rho = 2
    means = [h["momentum"] for h in history]  # per epoch: the mean over its two steps
    expected = [(cosine_momentum(0.9, (2 * e) / 6) + cosine_momentum(0.9, (2 * e + 1) / 6)) / 2 for e in range(3)]
    assert means == pytest.approx(expected)
    resumed, again = run(tmp_path / "b", stop=1)
    assert [h["loss"] for h in again] == [h["loss"] for h in history]
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), resumed.state_dict().values()))
