"""The fixes of the static shortcut (``course_lib.debias``): each equals its official code, computed here
independently, reaches the right view of every clip-contrast method, and is refused where it cannot apply."""
import json

import pytest
import torch
import torch.nn.functional as F

from course_lib import debias
from course_lib.augment import AugmentConfig, VideoAugment, apply, augment
from course_lib.cli import main
from course_lib.losses import moco_loss, nt_xent
from course_lib.methods import build_method
from course_lib.methods.common import normalize
from course_lib.models import create_model
from course_lib.settings import SettingError

CONTRAST = ("simclr", "moco", "cvrl", "dualvar")  # the clip contrasts with negatives; BYOL has none
FIXED = {"crop": "center", "flip": 0.0, "jitter": 0.0, "grayscale": 0.0, "blur": 0.0, "solarize": 0.0}


def clips(b=4, s=2, t=8, size=36, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, s, 3, t, size, size), dtype=torch.uint8, generator=g)


# ----------------------------------------------------------------------------- BE
def official_spatial_mixup(x, lam, frames):
    """FingerRec/BE mixup_methods.py, SpatialMixup.mixup_data, version 2 (trace=False), with its draws given."""
    b, c, t, h, w = x.shape
    mixed = torch.zeros_like(x)
    for i in range(b):
        static = x[i, :, frames[i], :, :]
        for j in range(t):
            mixed[i, :, j, :, :] = (1 - lam) * x[i, :, j, :, :] + lam * static
    return mixed


def test_background_erase_is_the_official_mix_with_one_lambda_per_batch():
    x = torch.rand(5, 3, 6, 10, 12)
    g, again = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    out = debias.background_erase(x, g=g)
    lam = torch.rand((), generator=again) * debias.BE_ALPHA  # one draw for the batch, in [0, 0.3)
    frames = torch.randint(0, 6, (5,), generator=again)  # one frame of each clip
    torch.testing.assert_close(out, official_spatial_mixup(x, float(lam), frames))
    assert 0 <= lam < 0.3 and not torch.equal(out, x)
    # given draws are used as they are
    torch.testing.assert_close(debias.background_erase(x, lam=torch.tensor(0.25), frames=torch.tensor([0, 1, 2, 3, 4])),
                               official_spatial_mixup(x, 0.25, [0, 1, 2, 3, 4]))


# ----------------------------------------------------------------------------- FAME
def kornia_rgb_to_hsv(image, eps=1e-8):
    """kornia.color.rgb_to_hsv (hue in radians, [0, 2 pi)), written out."""
    max_rgb, argmax_rgb = image.max(-3)
    min_rgb = image.min(-3)[0]
    deltac = max_rgb - min_rgb
    v = max_rgb
    s = deltac / (max_rgb + eps)
    deltac = torch.where(deltac == 0, torch.ones_like(deltac), deltac)
    rc, gc, bc = torch.unbind(max_rgb.unsqueeze(-3) - image, dim=-3)
    h1, h2, h3 = bc - gc, (rc - bc) + 2.0 * deltac, (gc - rc) + 4.0 * deltac
    h = torch.stack((h1, h2, h3), dim=-3) / deltac.unsqueeze(-3)
    h = torch.gather(h, dim=-3, index=argmax_rgb.unsqueeze(-3)).squeeze(-3)
    h = 2 * torch.pi * ((h / 6.0) % 1.0)
    return torch.stack((h, s, v), dim=-3)


def kornia_blur(m, k):
    """kornia GaussianBlur2d((k, k), (k / 3, k / 3)) of B x 1 x H x W maps: reflect padding, a normalised kernel."""
    d = torch.arange(k, dtype=m.dtype) - k // 2
    w = torch.exp(-d ** 2 / (2 * (k / 3) ** 2))
    w = w / w.sum()
    m = F.pad(m, (k // 2,) * 4, mode="reflect")
    return F.conv2d(F.conv2d(m, w.view(1, 1, 1, k)), w.view(1, 1, k, 1))


def official_fame_mask(video, beta=0.5, eps=1e-8):
    """Mark12Ding/FAME moco/loader.py, FAME.getmask and getSeg, step by step."""
    B, C, T, H, W = video.shape
    k = int(0.1 * W) // 2 * 2 + 1

    def norm(m):
        m = m.flatten(1).clone()
        m -= m.min(dim=-1, keepdim=True)[0]
        m /= m.max(dim=-1, keepdim=True)[0] + eps
        return m.reshape(B, H, W)

    def bincount(x):
        return torch.zeros(B, 1000, dtype=x.dtype).scatter_add_(1, x, torch.ones_like(x))

    diff = (video[:, :, :-1] - video[:, :, 1:]).abs().sum(dim=1).mean(dim=1)
    mask = norm(kornia_blur(diff.reshape(-1, 1, H, W), k).reshape(-1, H, W))
    hsv = kornia_rgb_to_hsv(video.mean(dim=2))
    fg_index = torch.topk(mask.reshape(B, -1), k=int(0.5 * H * W), dim=-1)[1]
    bg_index = torch.topk(mask.reshape(B, -1), k=int(0.1 * H * W), dim=-1, largest=False)[1]
    img_h, img_s, img_v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    hx = (img_s * torch.cos(img_h * 2 * torch.pi) + 1) / 2
    hy = (img_s * torch.sin(img_h * 2 * torch.pi) + 1) / 2
    h, s, v = torch.round(hx * 9 + 1), torch.round(hy * 9 + 1), torch.round(img_v * 9 + 1)
    color_map = (h + (s - 1) * 10 + (v - 1) * 100).reshape(B, -1).long() - 1  # 1-based in the official code
    dict_fg = bincount(color_map.gather(index=fg_index, dim=-1)).float()
    dict_bg = bincount(color_map.gather(index=bg_index, dim=-1)).float() + 1
    dict_fg /= dict_fg.sum(dim=-1, keepdim=True) + eps
    dict_bg /= dict_bg.sum(dim=-1, keepdim=True) + eps
    pr_fg, pr_bg = dict_fg.gather(dim=1, index=color_map), dict_bg.gather(dim=1, index=color_map)
    refine = pr_fg / (pr_bg + pr_fg)
    mask = norm(kornia_blur(refine.reshape(-1, 1, H, W), k).reshape(-1, H, W))
    num_fg = int(beta * H * W)
    idx = torch.topk(mask.reshape(B, -1), k=num_fg, dim=-1)[1]
    out = torch.zeros(B, H * W)
    out[torch.arange(B).repeat_interleave(num_fg), idx.reshape(-1)] = 1
    return out.reshape(B, H, W)


def moving_square(b=3, t=8, size=40, seed=0):
    """Clips of a square moving right over a static, textured background; B x 3 x T x size x size in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(b, 3, 1, size, size, generator=g) * 0.5 + 0.25).repeat(1, 1, t, 1, 1)
    colour = torch.rand(b, 3, generator=g)
    for i in range(t):
        x[:, :, i, 12:24, 4 + 2 * i:16 + 2 * i] = colour[:, :, None, None]
    return x


def test_fame_mask_is_the_official_mask():
    grey = moving_square()
    grey[:, :, :, 30:, :] = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1)[torch.arange(3) % 3]  # black, grey, white
    specks = torch.rand(3, 3, 6, 28, 28, generator=torch.Generator().manual_seed(1))
    specks[:, :, :, :10] = specks[:, :1, :, :10]  # grey pixels (saturation 0): FAME's colour bins round halves
    for x in (moving_square(), grey, specks, torch.rand(3, 3, 6, 28, 28, generator=torch.Generator().manual_seed(2))):
        assert torch.equal(debias.fame_mask(x), official_fame_mask(x))


def test_fame_keeps_the_moving_foreground_and_takes_another_clips_background():
    x = moving_square()
    mask = debias.fame_mask(x)
    assert mask.sum((1, 2)).tolist() == [0.5 * 40 * 40] * 3  # beta = 0.5 of the pixels
    path = torch.zeros(40, 40, dtype=torch.bool)
    path[12:24, 4:30] = True  # where the square passes
    assert mask[:, path].mean() > 0.95  # the moving square is foreground
    perm = torch.tensor([2, 0, 1])
    out = debias.fame(x, perm=perm)
    m = mask.bool()[:, None, None].expand_as(x)
    assert torch.equal(out[m], x[m]) and torch.equal(out[~m], x[perm][~m])


def test_fame_goes_between_the_crop_and_the_colour():
    """FAME's train.py merges the cropped clips before their colour augmentation; ``between`` sees exactly the
    crop and the colour follows with the same parameters. With an identity in between nothing changes."""
    x = clips()[:, 0]
    cfg = AugmentConfig(size=32, blur=0.5, solarize=0.3)
    plain, p = augment(x, cfg, torch.Generator().manual_seed(0), return_params=True)
    seen = []
    out = augment(x, cfg, torch.Generator().manual_seed(0), between=lambda v: seen.append(v.clone()) or v)
    torch.testing.assert_close(out, plain)
    torch.testing.assert_close(seen[0], apply(x, p, cfg, stages=("crop",)))
    merged = augment(x, cfg, torch.Generator().manual_seed(0), between=lambda v: v.flip(0))
    torch.testing.assert_close(merged, apply(seen[0].flip(0), p, cfg, stages=("colour",)))


# ----------------------------------------------------------------------------- intra-negatives in the losses
def test_nt_xent_takes_each_samples_intra_negative_as_one_more_column():
    torch.manual_seed(0)
    z1, z2, n = torch.randn(5, 8), torch.randn(5, 8), torch.randn(5, 8)
    t = 0.2
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    nn_ = F.normalize(n, dim=1)
    losses = []
    for r in range(10):  # each of the 2N views: its pair, the 2N - 2 others, and its sample's intra-negative
        pos = (r + 5) % 10
        logits = [z[r] @ z[c] / t for c in range(10) if c != r] + [z[r] @ nn_[r % 5] / t]
        losses.append(-(z[r] @ z[pos] / t) + torch.logsumexp(torch.stack(logits), 0))
    torch.testing.assert_close(nt_xent(z1, z2, t, negatives=n), torch.stack(losses).mean())
    torch.testing.assert_close(nt_xent(z1, z2, t, negatives=n, reduction="sum"), 2 * torch.stack(losses).mean())
    assert nt_xent(z1, z2, t, negatives=n) > nt_xent(z1, z2, t)  # one more negative only adds to the sum


def test_moco_loss_takes_each_querys_intra_negative_after_the_positive():
    torch.manual_seed(0)
    q, k, n, queue = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6), F.normalize(torch.randn(10, 6), dim=1)
    t = 0.1
    qn, kn, nn_ = (F.normalize(v, dim=1) for v in (q, k, n))
    want = torch.stack([-(qn[i] @ kn[i] / t) + torch.logsumexp(
        torch.cat([(qn[i] @ kn[i])[None], (qn[i] @ nn_[i])[None], queue @ qn[i]]) / t, 0) for i in range(4)]).mean()
    loss, logits = moco_loss(q, k, queue, t, negatives=n)
    torch.testing.assert_close(loss, want)
    assert logits.shape == (4, 12)


# ----------------------------------------------------------------------------- in the methods
def spy(module):
    """The inputs a module is called with, in order."""
    seen = []
    module.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    return seen


def build(name, **options):
    torch.manual_seed(0)
    extra = {"dualvar": {"reverse": 0.0}, "moco": {"bn_groups": 1}, "cvrl": {"blur2": 0.0, "solarize2": 0.0}}.get(name, {})
    return build_method(name, create_model("r3d_vcop", width=0.125), size=32, num_videos=8, augment=FIXED,
                        **extra, **options)


@pytest.mark.parametrize("name", CONTRAST + ("byol",))
def test_be_and_fame_change_the_first_view_only(name):
    """The augmentation is fixed (a centre crop, nothing random), so the clean views are known: the first view
    reaches the network changed, the second as it is."""
    x = {"clips": clips(), "index": torch.arange(4)}
    for fix in ("be", "fame"):
        m = build(name, debias=fix, **({"rank": False} if name == "dualvar" else {}))
        seen = spy(m.backbone)
        second = spy(m.key_backbone if name == "moco" else m.target_backbone if name == "byol" else m.backbone)
        m(x)
        augs = (m.augment1, m.augment2) if name == "cvrl" else (m.augment, m.augment)
        clean = [normalize(aug(x["clips"][:, i])) for i, aug in enumerate(augs)]
        if name == "dualvar":  # one batch: c1 then c2
            first, other = seen[0][:4], seen[0][4:8]
        elif name == "byol":  # the online network sees clip 0, then clip 1; so does the target
            first, other = seen[0], second[1]
            torch.testing.assert_close(second[0], first)  # the target reads the same changed clip
        else:
            first, other = seen[0], second[-1]
        assert not torch.allclose(first, clean[0], atol=1e-3), fix
        torch.testing.assert_close(other, clean[1])


@pytest.mark.parametrize("name", ("simclr", "cvrl", "moco", "dualvar", "dualvar-moco"))
def test_intra_negative_is_the_query_with_one_frame_repeated(name):
    x = {"clips": clips(), "index": torch.arange(4)}
    extra = {"rank": False, "coherent": False, **({"base": "moco"} if name == "dualvar-moco" else {})}
    m = build(name.split("-")[0], debias="intra", **(extra if name.startswith("dualvar") else {}))
    network = m.key_backbone if name == "moco" else m.moco.key_backbone if name == "dualvar-moco" else m.backbone
    seen, query = spy(network), spy(m.backbone)
    _, logs = m(x)
    assert {"cos_pos", "cos_intra"} <= set(logs)
    if name == "dualvar":  # one batch: c1, c2, then the intra-negatives
        neg, q = seen[0][8:], seen[0][:4]
    elif name in ("moco", "dualvar-moco"):  # the key encoder: the positive keys, then the negatives
        neg, q = seen[1], query[0]
    else:  # the views, then the negatives
        neg, q = seen[2], seen[0]
    assert torch.equal(neg, neg[:, :, :1].expand_as(neg))  # no motion: one frame throughout
    for i in range(4):  # the frame is one of the query's own
        assert any(torch.allclose(neg[i, :, 0], q[i, :, f]) for f in range(q.shape[2]))


def test_with_residual_the_intra_negative_swaps_chunks_instead():
    """The residual frames of a repeated frame are one constant clip, the same for every video: with residual the
    intra-negative is IIC's chunk shuffle, whose residual frames still move."""
    x = torch.rand(2, 3, 8, 6, 6)
    both = debias.Debias(["intra", "residual"])
    neg = both.negative(x)
    assert not torch.equal(neg, neg[:, :, :1].expand_as(neg)) and torch.equal(neg.sort(2).values, x.sort(2).values)
    residual = both.seen(debias.Debias("intra").negative(x))
    torch.testing.assert_close(residual, torch.full_like(residual, 0.5))  # what a repeated frame would give


@pytest.mark.parametrize("name", CONTRAST + ("byol",))
def test_residual_feeds_every_clip_as_residual_frames(name):
    x = {"clips": clips(), "index": torch.arange(4)}
    m = build(name, debias="residual")
    seen = spy(m.backbone)
    m(x)
    from course_lib.methods.common import MEAN, STD
    for v in seen:  # residual frames (x_t - x_{t-1} + 1) / 2 of a clip: their mean over time is 1/2
        raw = v * torch.tensor(STD).view(1, 3, 1, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1, 1)
        torch.testing.assert_close(raw.mean(2), torch.full_like(raw.mean(2), 0.5), atol=1e-5, rtol=0)


def test_parse_and_the_refusals_are_one_line():
    assert debias.parse("none") == () and debias.parse(["be", "intra"]) == ("intra", "be")
    assert debias.parse(["none"]) == () and debias.parse("fame") == ("fame",)
    with pytest.raises(SettingError, match=r"^setting options.debias='intra' is not allowed: BYOL has no negatives"):
        build_method("byol", create_model("r3d_vcop", width=0.125), debias="intra")
    with pytest.raises(SettingError, match=r"^setting options.debias=\['be', 'flow'\] is not allowed: debias 'flow' "):
        build_method("cvrl", create_model("r3d_vcop", width=0.125), debias=["be", "flow"])
    with pytest.raises(ValueError, match="method iic has no option .debias."):  # IIC has its own intra and view2
        build_method("iic", create_model("r3d_vcop", width=0.125), num_videos=4, debias="be")
    from course_lib.experiment import RunConfig
    for fix in ("fame", "be"):  # BE mixes another frame of the clip in: one frame has none
        with pytest.raises(SettingError, match=f"clip_len=1 is not allowed: debias {fix} needs clips of at least 2"):
            RunConfig(method="simclr", clip_len=1, options={"debias": fix}).check()
    with pytest.raises(SettingError, match="clip_len=6 is not allowed: debias intra with residual takes IIC's chunk"):
        RunConfig(method="simclr", clip_len=6, options={"debias": ["intra", "residual"]}).check()
    assert debias.input_view({"debias": ["residual", "be"]}) == "residual"
    assert debias.input_view({"view": "residual"}) == "residual" and debias.input_view({}) == "rgb"


@pytest.mark.slow
def test_debias_works_from_the_command_line(tmp_path, synth_quick, capsys):
    small = ["width=0.125", "size=28", "clip_len=4", "batch_size=4", "epochs=1", "steps_per_epoch=1",
             "num_workers=0", "options.hidden=32"]
    out = tmp_path / "run"
    assert main(["pretrain", "--method", "cvrl", "--data", str(synth_quick.root), "--out", str(out), "--no-progress",
                 *small, "options.debias=[be, intra]"]) == 0, capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["method_settings"]["debias"] == ["be", "intra"]
    from course_lib.experiment import eval_config
    assert "view" not in eval_config("linear", checkpoint=out).eval_options  # RGB runs are read on RGB
    residual = tmp_path / "residual"
    assert main(["pretrain", "--method", "simclr", "--data", str(synth_quick.root), "--out", str(residual),
                 "--no-progress", *small[:-1], "options.debias=residual"]) == 0, capsys.readouterr().err
    assert eval_config("linear", checkpoint=residual).eval_options["view"] == "residual"  # and residual on residual


def test_a_dualvar_run_cached_with_the_old_view_option_is_the_same_run(tmp_path):
    """DualVar's view="residual" became debias="residual": a run cached before is recognised, not refused."""
    from course_lib.experiment import CHECKPOINT, RUN_FILE, _check_same_setting
    from course_lib.methods.registry import resolved_options
    now = {"method": "dualvar", "method_settings": resolved_options("dualvar", {"debias": "residual"})}
    old = {k: v for k, v in now["method_settings"].items() if k != "debias"}
    (tmp_path / CHECKPOINT).write_bytes(b"")
    for view, fix in (("residual", "residual"), ("rgb", "none")):
        (tmp_path / RUN_FILE).write_text(json.dumps({"method": "dualvar", "options": {"base": "simclr", "view": view},
                                                     "method_settings": {**old, "view": view}}))
        options = {"base": "simclr", **({"debias": fix} if fix != "none" else {})}
        _check_same_setting(tmp_path, {"method": "dualvar", "options": options,
                                       "method_settings": resolved_options("dualvar", {"debias": fix})})
    with pytest.raises(ValueError, match="debias"):
        _check_same_setting(tmp_path, {**now, "options": {"base": "simclr"}})  # the file says view="rgb": not residual


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_fix_runs_on_the_gpu_without_a_host_sync():
    x = torch.rand(4, 3, 8, 32, 32, device="cuda")
    aug = VideoAugment(AugmentConfig(size=28)).cuda()
    raw = torch.randint(0, 256, (4, 3, 8, 36, 36), dtype=torch.uint8, device="cuda")
    for value in ("intra", "residual", "be", "fame"):
        d = debias.Debias(value)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            q = d.query(aug, raw)
            d.seen(q, d.negative(q))
            debias.fame(x)
            debias.background_erase(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("name", ("simclr", "cvrl", "moco"))
def test_the_log_records_how_far_the_intra_negative_is_pushed(name):
    x = {"clips": clips(), "index": torch.arange(4)}
    _, logs = build(name, debias="intra")(x)
    assert set(logs) >= {"cos_pos", "cos_intra"} and all(-1 <= float(logs[k]) <= 1 for k in ("cos_pos", "cos_intra"))
    assert "cos_intra" not in build(name)(x)[1]
