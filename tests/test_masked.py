"""Masked video modelling: the video ViT, tube / random / multi-block masks, VideoMAE's per-patch normalised
target and encoder on visible tokens, V-JEPA's EMA target and L1 latent loss, and the attentive probe; each
checked against a value computed here by hand."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.attentive import AttentiveProbe, attentive_probe
from course_lib.data import ClipDataset
from course_lib.evaluate import linear_probe
from course_lib.methods import build_method, sampler_for
from course_lib.methods.common import normalize
from course_lib.methods.masking import (block_size, multiblock_mask, random_mask, trimmed_indices, tube_mask,
                                        visible_and_masked)
from course_lib.methods.videomae import patch_targets
from course_lib.methods.vjepa import linear_momentum
from course_lib.models import complexity, create_model, input_problem
from course_lib.models.vit import position_code, sinusoid
from course_lib.train import METRICS, TrainConfig, train

FIXED = {"crop": "center", "flip": 0.0}


def tiny_vit():
    torch.manual_seed(0)
    return create_model("vit_course", width=0.125)  # 24 channels, 3 heads, patch 8, tubelet 2


def clips(n=4, t=4, size=32, seed=0, smooth=False):
    """uint8 clips B x 1 x 3 x t x size x size: noise, or (``smooth``) noise at 4 x 4 upsampled, which a masked
    model can learn to fill in."""
    g = torch.Generator().manual_seed(seed)
    if not smooth:
        return {"clips": torch.randint(0, 256, (n, 1, 3, t, size, size), generator=g, dtype=torch.uint8)}
    low = torch.rand(n, 3 * t, 4, 4, generator=g)
    x = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).view(n, 1, 3, t, size, size)
    return {"clips": (255 * x).to(torch.uint8)}


# ----------------------------------------------------------------------------- the backbone
def test_vit_tokens_map_and_sizes():
    vit = tiny_vit()
    x = torch.randn(2, 3, 8, 48, 48)
    assert vit.grid(x.shape) == (4, 6, 6)
    assert vit.forward_features(x).shape == (2, 24, 4, 6, 6)  # a feature map, as every backbone's
    assert vit(x).shape == (2, 24)
    torch.testing.assert_close(vit(x), vit.tokens(x).mean(1))  # the pooled feature: the mean of the tokens
    assert input_problem("vit_course", 8, 64, 0.5) is None and input_problem("vit_b", 16, 224) is None
    assert "multiples of its patch (8)" in input_problem("vit_course", 8, 50, 0.5)
    assert "multiples of its tubelet (2)" in input_problem("vit_course", 7, 48, 0.5)


def test_vit_b_complexity_matches_the_paper():
    """ViT-B on 16 x 224 x 224: 87M parameters and 180 G multiply-adds (VideoMAE, table 6: 180 GFLOPs,
    counted as multiply-adds), attention's N x N products included."""
    c = complexity(create_model("vit_b"), (1, 3, 16, 224, 224))
    assert c["params"] / 1e6 == pytest.approx(86.2, abs=0.2)
    n, d, blocks = 8 * 14 * 14, 768, 12
    by_hand = blocks * (n * 12 * d * d + 2 * n * n * d) + n * d * 3 * 2 * 16 * 16  # linear + attention + embedding
    assert c["gmacs"] * 1e9 == pytest.approx(by_hand, rel=0.01)
    assert c["gmacs"] == pytest.approx(180, rel=0.01)


def test_position_codes_by_hand():
    code = sinusoid(torch.tensor([0, 3]), 4)
    expected = torch.tensor([[0, 1, 0, 1], [math.sin(3), math.cos(3), math.sin(3 / 100), math.cos(3 / 100)]])
    torch.testing.assert_close(code, expected.float())
    torch.testing.assert_close(position_code((2, 3, 3), 8, "1d"), sinusoid(torch.arange(18), 8))
    three = position_code((2, 3, 4), 14)  # jepa: 2 ceil(14 / 6) = 6 channels per axis, cut to 14: w keeps 2 sines
    t, h, w = 1, 2, 3
    i = (t * 3 + h) * 4 + w  # the (t h w) order
    torch.testing.assert_close(three[i], torch.cat([sinusoid(torch.tensor([v]), 6)[0] for v in (t, h)]
                                                   + [sinusoid(torch.tensor([w]), 6)[0, [0, 2]]]))


# ----------------------------------------------------------------------------- masks
def test_tube_masks_are_the_same_at_every_time_step_and_hit_the_ratio():
    grid = (4, 6, 6)
    mask = tube_mask(5, grid, 0.9)
    per_frame = mask.view(5, 4, 36)
    assert (per_frame == per_frame[:, :1]).all()  # one spatial mask, repeated through time
    assert (per_frame[:, 0].sum(1) == int(0.9 * 36)).all()  # 32 of 36 patches in every frame
    assert not (per_frame[0, 0] == per_frame[1, 0]).all()  # drawn per clip
    rand = random_mask(5, grid, 0.75)
    assert (rand.sum(1) == int(0.75 * 144)).all()
    assert not (rand.view(5, 4, 36) == rand.view(5, 4, 36)[:, :1]).all()  # not a tube


def test_visible_and_masked_indices():
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    visible, masked = visible_and_masked(mask)
    assert visible.tolist() == [[1, 3], [0, 1]] and masked.tolist() == [[0, 2], [2, 3]]
    with pytest.raises(ValueError, match="same number"):
        visible_and_masked(torch.tensor([[True, False], [True, True]]))


def test_block_size_floors_the_token_count_as_jepa():
    """jepa's multiblock3d.py: spatial_num_keep = int(h * w * scale), then h = int(round(sqrt(keep * ar))),
    w = int(round(sqrt(keep / ar))), each at most the frame's side; the aspect ratio drawn uniformly."""
    import math
    for grid in ((8, 8, 8), (4, 6, 6), (8, 14, 14)):
        for scale in (0.15, 0.7):
            for seed in range(20):
                ar = 0.75 + torch.rand(1, generator=torch.Generator().manual_seed(seed)).item() * (1.5 - 0.75)
                keep = int(grid[1] * grid[2] * scale)
                official = (min(int(round(math.sqrt(keep * ar))), grid[1]), min(int(round(math.sqrt(keep / ar))), grid[2]))
                assert block_size(grid, scale, (0.75, 1.5), torch.Generator().manual_seed(seed)) == official
    # the float area gives larger blocks for some draws: 8 x 8 x 0.15 = 9.6 tokens at aspect 1.5 is 4 x 3, 9 is 4 x 2
    assert block_size((2, 8, 8), 0.15, (1.5, 1.5)) == (4, 2)


def test_multiblock_masks():
    """Each clip's mask is a union of ``blocks`` rectangles of the batch's one size, the same in every frame;
    trimming keeps the first K context and M target tokens of each clip, K and M the batch's smallest."""
    g = torch.Generator().manual_seed(0)
    grid = (2, 8, 8)
    bh, bw = block_size(grid, 0.15, (0.75, 1.5), torch.Generator().manual_seed(0))
    assert bh * bw == pytest.approx(0.15 * 64, abs=4) and 0.75 * 0.6 <= bh / bw <= 1.5 / 0.6
    mask = multiblock_mask(6, grid, blocks=2, scale=0.15, generator=torch.Generator().manual_seed(0))
    frames = mask.view(6, 2, 8, 8)
    assert (frames[:, 0] == frames[:, 1]).all()
    for clip in frames[:, 0]:  # the union of 2 rectangles of bh x bw: covered area between one and two
        assert bh * bw <= clip.sum() <= 2 * bh * bw
        corners = [(r, c) for r in range(8 - bh + 1) for c in range(8 - bw + 1) if clip[r:r + bh, c:c + bw].all()]
        assert corners  # at least one whole block inside
    context, targets = trimmed_indices(mask)
    counts = mask.sum(1)
    assert targets.shape == (6, int(counts.min())) and context.shape == (6, int((128 - counts).min()))
    for i in range(6):
        assert targets[i].tolist() == mask[i].nonzero().flatten()[:targets.shape[1]].tolist()
        assert not mask[i, context[i]].any() and mask[i, targets[i]].all()
    one = multiblock_mask(4, grid, blocks=8, scale=0.15, generator=g)
    assert one.float().mean() > 0.3  # eight blocks of 15% cover a good part of the frame


# ----------------------------------------------------------------------------- VideoMAE
def test_per_patch_normalised_target_by_hand():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 4, 16, 16, generator=g)
    target = patch_targets(x, tubelet=2, patch=8)  # 2 x 2 x 2 tubelets of 2 x 8 x 8 pixels x 3 channels
    assert target.shape == (1, 8, 2 * 8 * 8 * 3)
    t, h, w = 1, 0, 1  # the token (1, 0, 1) is number (1 * 2 + 0) * 2 + 1 = 5
    cube = x[0, :, 2:4, 0:8, 8:16]  # 3 x 2 x 8 x 8
    c = 2
    pixels = cube[c].flatten()
    expected = (pixels - pixels.mean()) / (pixels.std(unbiased=True) + 1e-6)
    got = target[0, 5].view(2 * 8 * 8, 3)[:, c]  # pixels in (t h w) order, channels last
    torch.testing.assert_close(got, expected)
    raw = patch_targets(x, tubelet=2, patch=8, norm_pix=False)[0, 5].view(128, 3)[:, c]
    torch.testing.assert_close(raw, pixels)


def test_videomae_encoder_sees_only_the_visible_tokens():
    m = build_method("videomae", tiny_vit(), size=32, augment=FIXED)
    seen = []
    m.backbone.blocks[0].register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
    loss, logs = m(clips())
    grid_tokens = 2 * 4 * 4
    visible = grid_tokens - 2 * int(0.9 * 16)  # 14 of 16 patches hidden per frame: 2 per frame visible
    assert seen == [torch.Size([4, visible, 24])]
    assert logs["visible"] == visible and logs["masked"] == grid_tokens - visible
    # the loss is the MSE on the hidden tokens only: given a mask, changing a visible token's pixels changes
    # the input but not the target
    mask = tube_mask(4, (2, 4, 4), 0.5, generator=torch.Generator().manual_seed(1))
    batch = clips()
    with torch.no_grad():
        x = batch["clips"][:, 0].float() / 255
        visible, masked = visible_and_masked(mask)
        latent = m.backbone.tokens(normalize(x), keep=visible)
        pred = m.decoder(latent, visible, masked, (2, 4, 4))
        target = torch.gather(patch_targets(x, 2, 8), 1, masked[..., None].expand(-1, -1, 384))
        expected = F.mse_loss(pred, target)
        got, _ = m({**batch, "mask": mask})
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="needs a ViT backbone"):
        build_method("videomae", create_model("r3d_vcop", width=0.125))


@pytest.mark.parametrize("name, options", [("videomae", {}), ("vjepa", {"predictor_depth": 2}),
                                           ("videomae", {"masking": "random", "mask_ratio": 0.75})])
def test_masked_methods_reduce_their_loss_on_a_fixed_batch(name, options):
    m = build_method(name, tiny_vit(), size=32, augment=FIXED, **options)
    batch = clips(n=6, smooth=True)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(40):
        torch.manual_seed(0)  # the same masks at every step
        loss, _ = m(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses  # per-patch normalised pixels: slow to memorise


# ----------------------------------------------------------------------------- V-JEPA
def test_vjepa_target_is_an_ema_with_a_linear_schedule_and_the_loss_is_l1():
    assert linear_momentum(0.998, 1.0, 0.0, 1.25) == pytest.approx(0.998)
    assert linear_momentum(0.998, 1.0, 0.5, 1.25) == pytest.approx(0.998 + 0.002 * 0.4)
    assert linear_momentum(0.998, 1.0, 1.0, 1.0) == pytest.approx(1.0)
    m = build_method("vjepa", tiny_vit(), size=32, augment=FIXED, predictor_depth=1, momentum=0.9)
    m.set_progress(0.5)
    assert m.momentum == pytest.approx(0.9 + 0.1 * 0.5 / 1.25)
    online = {k: v.detach().clone() for k, v in m.backbone.named_parameters()}
    with torch.no_grad():
        for p in m.target.parameters():
            p.add_(1.0)
    before = {k: v.detach().clone() for k, v in m.target.named_parameters()}
    batch = clips()
    mask = torch.zeros(4, 1, 32, dtype=torch.bool)
    mask[:, 0, :8] = True  # the first 8 tokens are the targets of one mask set
    loss, logs = m({**batch, "mask": mask})
    for k, v in m.target.named_parameters():
        torch.testing.assert_close(v, m.momentum * before[k] + (1 - m.momentum) * online[k])
    with torch.no_grad():  # the loss by hand: L1 between the prediction and the layer-normed target features
        x = normalize(batch["clips"][:, 0].float() / 255)
        h = m.target.tokens(x)
        h = (h - h.mean(-1, keepdim=True)) / (h.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        context, targets = torch.arange(8, 32).repeat(4, 1), torch.arange(8).repeat(4, 1)
        pred = m.predictor(m.backbone.tokens(x, keep=context), context, targets, (2, 4, 4))
        expected = (pred - h[:, :8]).abs().mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert logs["masked_share"] == pytest.approx(8 / 32)


# ----------------------------------------------------------------------------- attentive probe
def test_attentive_probe_shapes_and_a_separable_toy_problem():
    """The class is which direction e_y a pair of tokens carries as +e_y and -e_y, among noise tokens in a random
    order: the mean over tokens cancels it (a linear probe on the mean is at chance), a learnt query finds it."""
    probe = AttentiveProbe(16, 3)
    assert probe(torch.randn(5, 7, 16)).shape == (5, 3)
    g = torch.Generator().manual_seed(0)

    def toy(n):  # V x S x N x D tokens: 2 clips of 6 tokens of 16 channels per video
        y = torch.randint(0, 3, (n,), generator=g)
        x = 0.1 * torch.randn(n, 2, 6, 16, generator=g)
        x[torch.arange(n), :, 0, y] += 3.0
        x[torch.arange(n), :, 1, y] -= 3.0
        order = torch.rand(n, 6, generator=g).argsort(1)
        return torch.stack([x[i][:, order[i]] for i in range(n)]), y

    (a, ya), (b, yb) = toy(120), toy(60)
    assert linear_probe(a.mean((1, 2)), ya, b.mean((1, 2)), yb)["test_acc"] < 50
    assert attentive_probe(a, ya, b, yb, epochs=40, lr=1e-2)["test_acc"] > 95


def test_training_a_masked_method_resumes_exactly(tmp_path, synth_quick):
    def run(out, stop=None):
        torch.manual_seed(0)
        m = build_method("vjepa", tiny_vit(), size=32, predictor_depth=1, momentum=0.9)
        ds = ClipDataset(synth_quick, sampler_for("vjepa", clip_len=4), split="train", size=(36, 36))
        cfg = TrainConfig(epochs=2, batch_size=4, lr=0.001, num_workers=0, steps_per_epoch=2)
        train(m, ds, cfg, out, progress=False, stop_after_epochs=stop)
        if stop:
            train(m, ds, cfg, out, progress=False)
        return m, [json.loads(x) for x in (out / METRICS).read_text().splitlines()]

    m, history = run(tmp_path / "a")
    assert m.momentum == pytest.approx(linear_momentum(0.9, 1.0, 3 / 4, 1.25))
    resumed, again = run(tmp_path / "b", stop=1)
    assert [h["loss"] for h in again] == [h["loss"] for h in history]
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), resumed.state_dict().values()))


@pytest.mark.slow
def test_masked_pretraining_and_the_attentive_probe_from_the_command_line(tmp_path, synth_quick, capsys):
    """pretrain --method videomae|vjepa picks the course's ViT, and evaluate --protocol attentive reads any backbone."""
    from course_lib.cli import main

    small = ["width=0.125", "clip_len=4", "size=32", "batch_size=4", "epochs=1", "steps_per_epoch=1", "num_workers=0",
             "test_clips=1"]
    for method in ("videomae", "vjepa"):
        out = tmp_path / method
        assert main(["pretrain", "--method", method, "--data", str(synth_quick.root), "--out", str(out), "--no-progress", *small,
                     "options.predictor_depth=1" if method == "vjepa" else "options.decoder_depth=1"]) == 0
        assert json.loads((out / "run.json").read_text())["model"] == "vit_course"
    result = tmp_path / "attentive.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "vjepa"), "--protocol", "attentive", "--data",
                 str(synth_quick.root), "--out", str(result), "--no-progress", "eval_options.probe_epochs=2"]) == 0
    r = json.loads(result.read_text())
    assert r["tokens_per_clip"] == 2 * 4 * 4 and 0 <= r["test_acc"] <= 100
    cnn = tmp_path / "cnn.json"  # a random 3D CNN: its last feature map read as tokens
    assert main(["evaluate", "--random-init", "--protocol", "attentive", "--data", str(synth_quick.root), "--out",
                 str(cnn), "--no-progress", "model=r3d_vcop", "width=0.125", "clip_len=8", "size=32", "test_clips=1",
                 "num_workers=0", "eval_options.probe_epochs=2"]) == 0
    assert json.loads(cnn.read_text())["tokens_per_clip"] == 1 * 2 * 2  # r3d_vcop: T / 8 x H / 16 x W / 16
    assert main(["pretrain", "--method", "videomae", "--out", str(tmp_path / "bad"), "model=r3d_vcop"]) == 2
    assert "method videomae needs a ViT backbone" in capsys.readouterr().err


def test_vjepa_is_evaluated_with_its_ema_target_encoder(tmp_path, synth_quick):
    """jepa's frozen evaluation loads ``checkpoint_key: target_encoder`` (configs/evals/vitl16_k400_16x8x3.yaml): the
    EMA encoder, not the online one; ``network="backbone"`` still reads the online one."""
    from course_lib.course import default_config
    from course_lib.experiment import load_backbone, pretrain
    from course_lib.train import load_checkpoint

    cfg = default_config("test", method="vjepa", model="vit_course", width=0.25, clip_len=4, size=32, batch_size=4,
                         epochs=1, steps_per_epoch=2, num_workers=0, options={"predictor_depth": 1})
    pretrain(cfg, str(synth_quick.root), tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")["method"]
    target, _ = load_backbone(tmp_path)
    online, _ = load_backbone(tmp_path, network="backbone")
    for name, value in target.state_dict().items():
        torch.testing.assert_close(value, state[f"target.{name}"])
    assert any(not torch.equal(online.state_dict()[n], v) for n, v in target.state_dict().items())
    with pytest.raises(ValueError, match="holds no network 'predictor_head'"):
        load_backbone(tmp_path, network="predictor_head")


def test_random_erasing_boxes_each_frame_on_its_own():
    """timm's RandomErasing(mode="pixel"), per frame: a box of 2-33 % of the frame with probability p, noise inside."""
    from course_lib.attentive import random_erase
    x = torch.zeros(50, 3, 4, 20, 20)
    out = random_erase(x, 0.25, torch.Generator().manual_seed(0))
    erased = (out != 0).any(1)  # N x T x H x W
    share = erased.flatten(2).float().mean(2)  # each frame's erased share
    hit = share > 0
    assert 0.15 < hit.float().mean() < 0.35  # about a quarter of the frames
    assert bool(((share[hit] >= 0.015) & (share[hit] <= 0.35)).all())
    assert not torch.equal(erased[:, 0], erased[:, 1])  # frames of one clip get their own boxes
    torch.testing.assert_close(out, random_erase(x, 0.25, torch.Generator().manual_seed(0)))
    assert torch.equal(random_erase(x, 0.0), x)


def test_the_attentive_probe_trained_as_vjepa_runs_its_schedule_and_averages_the_views(synth_quick):
    from dataclasses import replace
    from course_lib.attentive import ProbeRecipe, attentive_probe_recipe
    from course_lib.augment import crop_room
    from course_lib.course import default_config
    from course_lib.data import ClipDataset, RandomClipSampler
    from course_lib.evaluate import eval_set

    cfg = default_config("test", clip_len=4, size=32, test_clips=2)
    recipe = replace(ProbeRecipe(), epochs=2, segments=2, batch_size=8)
    train = ClipDataset(synth_quick, RandomClipSampler(clip_len=4, stride=2, num_clips=2), split="train",
                        size=(crop_room(32),) * 2)
    test = eval_set(cfg, synth_quick, "test", frames=32, crops=3)
    torch.manual_seed(0)
    r = attentive_probe_recipe(create_model("vit_course", width=0.25), train, test, size=32, recipe=recipe, heads=2)
    assert r["steps"] == 2 * -(-len(train) // 8) and 0 <= r["test_acc"] <= 100
