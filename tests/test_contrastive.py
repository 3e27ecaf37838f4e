"""SimCLR, MoCo and IIC as modules: what they update, where gradients flow, the command line wiring."""
import json
from dataclasses import replace

import pytest
import torch

from course_lib.course import default_config
from course_lib.evaluate import FrozenLinear
from course_lib.experiment import pretrain
from course_lib.methods import build_method
from course_lib.models import create_model


def tiny():
    return create_model("r3d_vcop", width=0.125)


def batch(b=4, s=2, t=8, size=36):
    g = torch.Generator().manual_seed(0)
    return {"clips": torch.randint(0, 256, (b, s, 3, t, size, size), dtype=torch.uint8, generator=g),
            "index": torch.tensor([3, 0, 7, 5])[:b], "label": torch.zeros(b, dtype=torch.long)}


def test_moco_queue_takes_the_keys_and_the_key_encoder_follows_by_momentum():
    torch.manual_seed(0)
    m = build_method("moco", tiny(), num_videos=40, size=32, momentum=0.9)
    assert len(m.queue.keys) == 20  # cut to half the training set
    assert all(not p.requires_grad for p in m.key_backbone.parameters())
    with torch.no_grad():  # make online and key weights differ, as they do after some steps
        for p in m.backbone.parameters():
            p.add_(0.01)
    online = [p.detach().clone() for p in m.backbone.parameters()]
    before = [p.detach().clone() for p in m.key_backbone.parameters()]
    loss, _ = m(batch())
    loss.backward()
    for o, b, k in zip(online, before, m.key_backbone.parameters()):
        torch.testing.assert_close(k, 0.9 * b + 0.1 * o)
        assert k.grad is None
    assert int(m.queue.ptr) == 4
    norms = m.queue.keys[:4].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(4))


def test_iic_updates_the_banks_of_the_batch_videos_only():
    torch.manual_seed(0)
    m = build_method("iic", tiny(), num_videos=10, size=32, negatives=16)
    banks = {n: b.memory.clone() for n, b in (("1", m.bank1), ("2", m.bank2), ("intra", m.bank_intra))}
    m(batch())
    for n, bank in (("1", m.bank1), ("2", m.bank2), ("intra", m.bank_intra)):
        changed = (bank.memory != banks[n]).any(1).nonzero()[:, 0].tolist()
        assert changed == [0, 3, 5, 7], n


@pytest.mark.parametrize("intra_grad", [True, False])
def test_iic_intra_negatives_carry_gradient_only_when_asked(intra_grad):
    torch.manual_seed(0)
    m = build_method("iic", tiny(), num_videos=10, size=32, negatives=16, intra_grad=intra_grad)
    seen = []
    real_embed = m.embed

    def embed(x):  # record every embedding the loss is built from
        f = real_embed(x)
        f.retain_grad()
        seen.append(f)
        return f

    m.embed = embed
    loss, _ = m(batch())
    loss.backward()
    rgb, second, intra = seen
    assert rgb.grad.abs().sum() > 0 and second.grad.abs().sum() > 0
    if intra_grad:
        assert intra.grad is not None and intra.grad.abs().sum() > 0
    else:  # the public code's form: intra-negatives only enter through the detached bank
        assert intra.grad is None or intra.grad.abs().sum() == 0


def test_iic_negatives_are_other_videos_drawn_uniformly():
    from course_lib.methods.iic import sample_others
    torch.manual_seed(0)
    index = torch.tensor([0, 3, 4])
    others = sample_others(index, 5, 4000)  # B x K
    assert not (others == index[:, None]).any()
    for row, own in zip(others, index.tolist()):
        counts = torch.bincount(row, minlength=5).float()
        assert counts[own] == 0 and ((counts[counts > 0] / 1000 - 1).abs() < 0.1).all()  # 4 others, 1000 each


def test_iic_views_and_option_errors():
    m = build_method("iic", tiny(), num_videos=10, size=32, view2="rgb", intra="none")
    assert m.bank_intra is None
    m(batch())
    with pytest.raises(ValueError, match="options.intra='flip' is not allowed"):
        build_method("iic", tiny(), num_videos=10, intra="flip")
    with pytest.raises(ValueError, match="no option 'queue'"):
        build_method("iic", tiny(), num_videos=10, queue=5)
    with pytest.raises(ValueError, match="augment has no setting 'zoom'"):
        build_method("simclr", tiny(), augment={"zoom": 2})


def test_simclr_options_change_its_augmentation():
    m = build_method("simclr", tiny(), size=24, augment={"scale": [0.3, 1.0], "blur": 0.5})
    assert m.augment.cfg.scale == (0.3, 1.0) and m.augment.cfg.blur == 0.5 and m.augment.cfg.size == 24
    iic = build_method("iic", tiny(), num_videos=4, augment={"crop": "center"})
    assert iic.augment.cfg.crop == "center" and iic.augment.cfg.jitter == 0.0  # IIC's defaults kept


def test_pretrain_iic_with_options_from_the_command_line_form(tmp_path, synth_quick):
    cfg = default_config("test").with_overrides(None, [
        "method=iic", "width=0.125", "clip_len=4", "size=28", "epochs=1", "steps_per_epoch=2", "num_workers=0",
        "options.intra=shuffle", "options.negatives=32"])
    assert cfg.options == {"intra": "shuffle", "negatives": 32} and cfg.frames_size == 32
    summary = pretrain(cfg, str(synth_quick.root), tmp_path / "run", progress=False)
    assert summary["epochs_done"] == 1
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["options"] == {"intra": "shuffle", "negatives": 32}


def test_cvrl_head_augmentations_and_sampler_options(tmp_path, synth_quick, monkeypatch):
    from course_lib.data import TemporalIntervalSampler
    from course_lib.methods import sampler_for
    m = build_method("cvrl", tiny(), size=24)
    linears = [l for l in m.projector if isinstance(l, torch.nn.Linear)]
    assert [l.out_features for l in linears] == [2048, 2048, 2048, 128]
    assert sum(isinstance(l, torch.nn.BatchNorm1d) for l in m.projector) == 3
    a1, a2 = m.augment1.cfg, m.augment2.cfg
    assert (a1.scale, a1.ratio, a1.hue, a1.blur, a1.solarize) == ((0.3, 1.0), (0.5, 2.0), 0.2, 1.0, 0.0)
    assert (a2.blur, a2.solarize) == (0.1, 0.2)  # the second clip: rare blur, some solarize
    with pytest.raises(ValueError, match="2 clips"):
        m(batch(s=1))
    s = sampler_for("cvrl", clip_len=8, interval="increasing", power=2.0)
    assert isinstance(s, TemporalIntervalSampler) and (s.mode, s.power) == ("increasing", 2.0)
    cfg = default_config("test").with_overrides(None, [
        "method=cvrl", "width=0.125", "clip_len=4", "size=28", "epochs=1", "steps_per_epoch=1", "num_workers=0",
        "options.interval=uniform", "options.hidden=64"])
    assert pretrain(cfg, str(synth_quick.root), tmp_path / "cvrl", progress=False)["epochs_done"] == 1
    from course_lib.experiment import eval_config, evaluate
    lin = eval_config("cvrl-linear", tmp_path / "cvrl", pairs=["test_clips=2", "epochs=1", "steps_per_epoch=1",
                                                             "num_workers=0"])
    import course_lib.evaluate as ev
    built = []  # the augmentation the protocol's classifier trains with
    monkeypatch.setattr(ev, "FrozenLinear", lambda *a, **k: built.append(k["augment"]) or FrozenLinear(*a, **k))
    r = evaluate("cvrl-linear", lin, str(synth_quick.root), checkpoint=str(tmp_path / "cvrl"), out_dir=tmp_path / "lin",
                 progress=False)
    assert 0 <= r["test_acc"] <= 100 and (tmp_path / "lin" / "checkpoint.pt").exists()
    # CVRL's protocol flips (LINEAR_EVAL_AUGMENT), but not where a flip turns move_left into move_right
    assert r["flip"] == 0.0 and built == [replace(ev.LINEAR_EVAL_AUGMENT, flip=0.0)]
    assert json.loads((tmp_path / "lin" / "summary.json").read_text())["config"]["optimizer"] == "sgd"
    with pytest.raises(ValueError, match="method simclr has no option .interval."):
        pretrain(cfg.with_overrides(None, ["method=simclr"]), str(synth_quick.root), tmp_path / "x", progress=False)


def test_shuffle_segments_and_back():
    from course_lib.methods.dualvar import shuffle_segments
    x = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(50, 3, 8, 2, 2).contiguous()  # frame t holds t
    shuffled, perm = shuffle_segments(x, 2, torch.Generator().manual_seed(0))
    order = shuffled[:, 0, :, 0, 0].long()  # B x T
    for o, p in zip(order, perm):
        assert o.tolist() == [f for s in p.tolist() for f in range(4 * s, 4 * s + 4)]  # segment k = original p[k]
    assert (perm[:, 0] == 1).any() and (perm[:, 0] == 0).any()  # both orders occur


@pytest.mark.parametrize("base", ["simclr", "moco"])
def test_dualvar_switches_each_term(base):
    torch.manual_seed(0)
    for rank, coherent in ((False, False), (True, False), (False, True), (True, True)):
        m = build_method("dualvar", tiny(), num_videos=40, size=32, base=base, rank=rank, coherent=coherent)
        loss, logs = m(batch(t=8))
        terms = logs["clip"] + logs.get("rank", 0.0) + logs.get("coherent", 0.0)
        assert ("rank" in logs, "coherent" in logs) == (rank, coherent)
        assert loss.item() == pytest.approx(float(terms), rel=1e-5)  # logs are 0-d tensors (read at log points)
        loss.backward()
    assert hasattr(m, "queue") == (base == "moco")


def test_dualvar_takes_the_public_code_forms_for_its_base():
    simclr = build_method("dualvar", tiny(), size=32)
    moco = build_method("dualvar", tiny(), num_videos=40, size=32, base="moco")
    assert (simclr.rank_form, simclr.rank_cap, simclr.coherent_form) == ("matrix", 5.0, "nt_xent")
    assert (moco.rank_form, moco.rank_cap, moco.coherent_form) == ("matrix", None, "queue")
    assert moco.segment_queue.keys.shape == (moco.queue.keys.shape[0], 2 * 64) and moco.moco.bn_groups == 1
    assert simclr.augment.cfg.flip == 0.0 and simclr.reverse == 0.5  # time reversal, no spatial flip
    paper = build_method("dualvar", tiny(), size=32, rank_form="anchor", rank_cap=None, coherent_form="cross")
    assert (paper.rank_form, paper.rank_cap, paper.coherent_form) == ("anchor", None, "cross")
    alone = build_method("dualvar", tiny(), size=32, rank=False, coherent=False)
    assert not hasattr(alone, "segment_head")  # nothing left without a gradient (DDP refuses that)
    with pytest.raises(ValueError, match="coherent_form 'queue'"):
        build_method("dualvar", tiny(), size=32, coherent_form="queue")


def test_dualvar_plays_both_clips_backwards_with_probability_reverse():
    fixed = {"crop": "center", "flip": 0.0, "jitter": 0.0, "grayscale": 0.0, "blur": 0.0}
    x = batch(t=8)
    losses = []
    for reverse, clips in ((1.0, x["clips"]), (0.0, x["clips"].flip(3))):
        torch.manual_seed(0)
        m = build_method("dualvar", tiny(), size=32, rank=False, reverse=reverse, augment=fixed)
        losses.append(m({**x, "clips": clips})[0].item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_dualvar_residual_debias_feeds_the_network_residual_frames():
    """With debias="residual" every clip reaches the backbone as IIC's residual frames of its augmented self
    (normalised as any input), with "none" (the paper) as it is."""
    from course_lib.augment import augment, residual_frames
    from course_lib.methods.common import normalize

    fixed = {"crop": "center", "flip": 0.0, "jitter": 0.0, "grayscale": 0.0, "blur": 0.0}
    x = batch(t=8)
    for fix, expect in (("none", lambda v: v), ("residual", residual_frames)):
        m = build_method("dualvar", tiny(), size=32, rank=False, coherent=False, reverse=0.0, augment=fixed,
                         debias=fix)
        seen = []
        m.backbone.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
        m(x)
        views = [augment(x["clips"][:, i], m.augment.cfg) for i in (0, 1)]
        torch.testing.assert_close(seen[0], normalize(torch.cat([expect(v) for v in views])))
    with pytest.raises(ValueError, match="options.debias='flow' is not allowed"):
        build_method("dualvar", tiny(), debias="flow")


def test_dualvar_rank_loss_uses_the_segment_order():
    from course_lib.losses import shuffle_rank
    torch.manual_seed(0)
    m = build_method("dualvar", tiny(), size=32, coherent=False)
    e = m.segment_embeddings(torch.randn(4, m.backbone.feature_dim))  # B x 2 x 64, unit norm
    assert torch.allclose(e.norm(dim=2), torch.ones(4, 2))
    assert shuffle_rank(e, e) < shuffle_rank(e, e.flip(1))
    with pytest.raises(ValueError, match="options.base='byol' is not allowed"):
        build_method("dualvar", tiny(), base="byol")


def test_a_run_folder_is_not_reused_for_other_method_options(tmp_path, synth_quick):
    from dataclasses import replace

    from course_lib.experiment import pretrain

    cfg = default_config("test", method="iic", width=0.125, clip_len=4, size=28, epochs=1, steps_per_epoch=1,
                         num_workers=0, batch_size=4, options={"intra": "repeat", "negatives": 8})
    pretrain(cfg, str(synth_quick.root), tmp_path, progress=False)
    again = pretrain(cfg, str(synth_quick.root), tmp_path, progress=False)  # the same setting: loaded, not retrained
    assert again["epochs_done"] == 1 and again["seconds_this_call"] < 5
    with pytest.raises(ValueError, match="holds a run with options=.*'intra': 'repeat'"):
        pretrain(replace(cfg, options={"intra": "shuffle", "negatives": 8}), str(synth_quick.root), tmp_path,
                 progress=False)


def test_a_run_folder_is_not_reused_after_a_method_default_changed(tmp_path, synth_quick, monkeypatch):
    """run.json records every option with its default: when an update of course_lib changes a default (as
    MoCo's bn_groups did), a cached run with the old one is not silently loaded as the new method."""
    import inspect
    import json

    from course_lib.experiment import pretrain
    from course_lib.methods.iic import IIC

    cfg = default_config("test", method="iic", width=0.125, clip_len=4, size=28, epochs=1, steps_per_epoch=1,
                         num_workers=0, batch_size=4, options={"negatives": 8})
    pretrain(cfg, str(synth_quick.root), tmp_path, progress=False)
    settings = json.loads((tmp_path / "run.json").read_text())["method_settings"]
    assert settings["intra"] == "repeat" and settings["negatives"] == 8 and settings["bank_momentum"] == 0.5
    assert settings["augment"]["consistent"] is True  # the default augmentation, field by field
    sig = inspect.signature(IIC)
    changed = sig.replace(parameters=[p.replace(default=0.9) if p.name == "bank_momentum" else p
                                      for p in sig.parameters.values()])
    monkeypatch.setattr(IIC, "__signature__", changed, raising=False)
    with pytest.raises(ValueError, match="bank_momentum=0.5, now 0.9 \\(a changed default\\?\\)"):
        pretrain(cfg, str(synth_quick.root), tmp_path, progress=False)
    monkeypatch.undo()
    # an option added after the run was made: the run still matches while the new option holds its default,
    # what the code did before the option existed (as DualVar's view="rgb")
    run = json.loads((tmp_path / "run.json").read_text())
    del run["method_settings"]["intra_grad"]
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert pretrain(cfg, str(synth_quick.root), tmp_path, progress=False)["epochs_done"] == 1
    run["method_settings"]["intra_grad"] = False  # recorded with another value than today's default: not the same
    (tmp_path / "run.json").write_text(json.dumps(run))
    with pytest.raises(ValueError, match="intra_grad=False, now True"):
        pretrain(cfg, str(synth_quick.root), tmp_path, progress=False)


def test_moco_shuffles_keys_across_batchnorm_groups():
    """Shuffling BN in one process: queries in consecutive groups, keys in groups of a shuffled batch,
    each group with its own BatchNorm statistics, and the keys back in the batch's order."""
    m = build_method("moco", tiny(), num_videos=40, size=32, bn_groups=2)
    bn = torch.nn.BatchNorm1d(3, affine=False)
    x = torch.randn(8, 3)
    torch.testing.assert_close(m.grouped(bn, x), torch.cat([bn(x[:4]), bn(x[4:])]))
    torch.manual_seed(5)
    got = m.grouped(bn, x, shuffle=True)
    torch.manual_seed(5)
    perm = torch.randperm(8)
    expected = torch.empty_like(x)
    expected[perm] = torch.cat([bn(x[perm[:4]]), bn(x[perm[4:]])])
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, m.grouped(bn, x))  # a key's statistics come from other videos
    one = build_method("moco", tiny(), num_videos=40, size=32, bn_groups=1)
    torch.testing.assert_close(one.grouped(bn, x, shuffle=True), bn(x))
    loss, logs = m(batch(t=8))
    loss.backward()
    assert torch.isfinite(loss) and 0 <= logs["acc"] <= 1
