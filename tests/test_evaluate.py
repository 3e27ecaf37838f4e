"""Evaluation protocols against brute-force references and separable toy data."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from course_lib.course import default_config
from course_lib.data import ClipDataset, UniformClipSampler
from course_lib.evaluate import attribute_probe, extract_features, knn, linear_probe, retrieval
from course_lib.models import create_model


def brute_force_retrieval(train_f, train_y, test_f, test_y, k):
    hits = 0
    for q, y in zip(test_f, test_y):
        sims = [float(np.dot(q, t) / (np.linalg.norm(q) * np.linalg.norm(t))) for t in train_f]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        hits += any(train_y[i] == y for i in order)
    return 100 * hits / len(test_y)


def test_retrieval_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    train_f, test_f = torch.randn(120, 16, generator=g), torch.randn(30, 16, generator=g)
    train_y, test_y = torch.randint(0, 6, (120,), generator=g), torch.randint(0, 6, (30,), generator=g)
    got = retrieval(train_f, train_y, test_f, test_y)
    for k in (1, 5, 10, 20, 50):
        assert got[f"R@{k}"] == pytest.approx(brute_force_retrieval(train_f.numpy(), train_y.tolist(),
                                                                    test_f.numpy(), test_y.tolist(), k))
    assert got["R@1"] <= got["R@5"] <= got["R@50"]


def test_retrieval_centering_is_mean_subtraction_and_matters_under_an_offset():
    xtr, ytr = separable(80, noise=1.5)
    xte, yte = separable(40, seed=3, noise=1.5)
    offset = torch.full((1, xtr.shape[1]), 40.0)  # a large shared component swamps cosine similarity
    centred = retrieval(xtr + offset, ytr, xte + offset, yte, center=True)
    mean = (xtr + offset).mean(0, keepdim=True)
    assert centred == retrieval(xtr + offset - mean, ytr, xte + offset - mean, yte)
    # by hand: train [1, 0] (label 0) and [3, 1] (label 1), query [2, 0.4] (label 1). Raw cosines 0.981 vs
    # 0.992 pick [3, 1]; after subtracting the mean [2, 0.5] they are 0.447 vs -0.447 and pick [1, 0]
    train, labels, query = torch.tensor([[1.0, 0.0], [3.0, 1.0]]), torch.tensor([0, 1]), torch.tensor([[2.0, 0.4]])
    assert retrieval(train, labels, query, torch.tensor([1]), ks=(1,))["R@1"] == 100
    assert retrieval(train, labels, query, torch.tensor([1]), ks=(1,), center=True)["R@1"] == 0


def separable(n, d=8, classes=4, seed=0, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + noise * torch.randn(n, d, generator=g), y


def test_linear_probe_and_knn_on_separable_and_random_data():
    xtr, ytr = separable(200)
    xte, yte = separable(100, seed=1)
    assert linear_probe(xtr, ytr, xte, yte)["test_acc"] > 95
    assert knn(xtr, ytr, xte, yte, k=10)["test_acc"] > 95
    shuffled = ytr[torch.randperm(200, generator=torch.Generator().manual_seed(0))]
    assert linear_probe(xtr, shuffled, xte, yte)["test_acc"] < 50  # 4 classes: chance is 25 %


def test_attribute_probe_reports_chance():
    xtr, ytr = separable(100)
    xte, yte = separable(40, seed=2)
    names = ["a", "b", "c", "d"]
    res = attribute_probe(xtr, xte, [names[i] for i in ytr], [names[i] for i in yte])
    assert res["test_acc"] > 90 and res["chance"] == pytest.approx(100 * np.bincount(yte.numpy()).max() / 40)


def test_features_average_the_clips_of_each_video(synth_quick):
    ds = ClipDataset(synth_quick, UniformClipSampler(clip_len=4, num_clips=3), split="test", size=(32, 32))
    backbone = create_model("r3d_vcop", width=0.125).eval()
    feats, labels, index = extract_features(backbone, ds, batch_size=4)
    assert feats.shape == (len(ds), backbone.feature_dim) and labels.tolist() == ds.labels
    from course_lib.methods.common import to_float
    with torch.no_grad():
        manual = backbone(to_float(ds[2]["clips"])).mean(0)  # the 3 clips of video 2, averaged
    torch.testing.assert_close(feats[2], manual, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("height, width", [(32, 80), (72, 40)])  # landscape and portrait
def test_three_test_crops_differ_and_cover_the_frame(tmp_path, height, width):
    """CVRL's test views: frames at a short side of 24 px, aspect kept, three 24 x 24 crops at the start,
    centre and end of the long side; together they cover every pixel of the frame."""
    from course_lib.data import Manifest, VideoEntry
    from course_lib.evaluate import eval_set
    from course_lib.video import write_video

    g = np.random.default_rng(0)
    write_video(tmp_path / "a" / "v.mp4", g.integers(0, 256, (20, height, width, 3), dtype=np.uint8), crf=0)
    manifest = Manifest(tmp_path, ["a"], [VideoEntry("a/v.mp4", "a", "test", 20, 25.0)])
    cfg = default_config("test", clip_len=4, stride=1, test_clips=2, size=24)
    views = eval_set(cfg, manifest, "test", frames=24, crops=3)[0]["clips"]  # 6 x 3 x 4 x 24 x 24
    full = ClipDataset(manifest, UniformClipSampler(clip_len=4, num_clips=2), split="test", short_side=24)[0]["clips"]
    long = max(full.shape[-2:])
    assert views.shape == (6, 3, 4, 24, 24) and long > 24
    covered = torch.zeros(long, dtype=torch.bool)
    for k, offset in enumerate((0, round(long / 2 - 12), long - 24)):
        part = full[..., offset:offset + 24, :] if height > width else full[..., offset:offset + 24]
        assert torch.equal(views[k::3], part)  # crop k of every clip
        covered[offset:offset + 24] = True
    assert covered.all()
    for i, j in ((0, 1), (1, 2), (0, 2)):
        assert (views[i::3].float() - views[j::3].float()).abs().max() > 0  # three different views


def test_iic_feature_is_the_max_pooled_last_map_of_centre_crops():
    """retrieve_clips.py of BestJuly/IIC: MaxPool3d((1, 2, 2)) on the last conv block, flattened, from the
    centre 112 of 128 x 171 frames; --merge concatenates the RGB and residual features."""
    from course_lib.evaluate import clip_features

    torch.manual_seed(0)
    bb = create_model("r3d_vcop", width=0.125).eval()
    clips = torch.randint(0, 256, (2, 3, 8, 37, 37), dtype=torch.uint8)
    x = clips.float()[..., 2:34, 2:34] / 255  # the centre 32 x 32
    from course_lib.methods.common import normalize
    with torch.no_grad():
        fmap = bb(normalize(x), return_map=True)[1]  # 2 x 64 x 1 x 2 x 2
        expected = torch.nn.functional.max_pool3d(fmap, (1, 2, 2)).flatten(1)
        got = clip_features(bb, clips, feature="iic", size=32)
        res = clip_features(bb, clips, feature="iic", view="residual", size=32)
        diff = (x - torch.roll(x, 1, dims=2) + 1) / 2
        res_expected = torch.nn.functional.max_pool3d(bb(normalize(diff), return_map=True)[1], (1, 2, 2)).flatten(1)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(res, res_expected)
    assert got.shape == (2, fmap.shape[1] * fmap.shape[2]) and not torch.allclose(got, res, atol=1e-3)


def test_retrieval_centres_each_set_on_its_own_mean():
    """DualVar's test_retrieval: test features minus the test mean, train features minus the train mean."""
    xtr, ytr = separable(60)
    xte, yte = separable(30, seed=4)
    shift = torch.full((1, xtr.shape[1]), 25.0)
    got = retrieval(xtr, ytr, xte + shift, yte, center="each")  # only the test set is offset
    assert got == retrieval(xtr - xtr.mean(0), ytr, xte - xte.mean(0), yte)
    assert got != retrieval(xtr, ytr, xte + shift, yte, center="train")
    with pytest.raises(ValueError, match="center 'both'"):
        retrieval(xtr, ytr, xte, yte, center="both")


def test_frozen_linear_trains_only_the_classifier_and_keeps_bn_frozen():
    from course_lib.evaluate import FrozenLinear
    from course_lib.models import create_model
    bb = create_model("r3d_vcop", width=0.125)
    m = FrozenLinear(bb, 8, size=24)
    m.train()
    assert not bb.training and all(not p.requires_grad for p in bb.parameters())
    stats = [b.clone() for b in bb.buffers()]
    batch = {"clips": torch.randint(0, 256, (4, 1, 3, 4, 28, 28), dtype=torch.uint8), "label": torch.arange(4)}
    loss, _ = m(batch)
    loss.backward()
    assert m.fc.weight.grad is not None
    assert all(torch.equal(a, b) for a, b in zip(stats, bb.buffers()))
    assert m.logits(batch["clips"]).shape == (4, 8)


def test_finetune_clips_are_randomly_cropped_and_flipped_and_test_clips_centre_cropped():
    from course_lib.evaluate import FINETUNE_AUGMENT
    from course_lib.methods import Supervised
    from course_lib.methods.common import MEAN, STD

    torch.manual_seed(0)
    bb = create_model("r3d_vcop", width=0.125)
    model = Supervised(bb, 4, size=24, augment=FINETUNE_AUGMENT)
    seen = []
    bb.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    ramp = (torch.arange(28 * 28).view(28, 28) % 251).to(torch.uint8)  # every pixel tells where it is
    clips = ramp.expand(16, 1, 3, 2, 28, 28).contiguous()
    model.train()
    model({"clips": clips, "label": torch.zeros(16, dtype=torch.long)})
    model.eval()
    model.logits(clips)
    mean, std = torch.tensor(MEAN).view(3, 1, 1, 1), torch.tensor(STD).view(3, 1, 1, 1)
    train_in, test_in = (((x * std + mean) * 255).round()[:, 0, 0] for x in seen)  # N x 24 x 24: channel 0, frame 0
    windows = {(i, j): ramp[i:i + 24, j:j + 24].float() for i in range(5) for j in range(5)}
    offsets, flips = set(), 0
    for v in train_in:
        match = [(k, f) for k, w in windows.items() for f in (False, True) if torch.equal(v, w.flip(-1) if f else w)]
        assert len(match) == 1  # a 24 x 24 window of the 28 x 28 frame, flipped or not
        offsets.add(match[0][0])
        flips += match[0][1]
    assert len(offsets) > 3 and 0 < flips < 16  # random crops, about half of them flipped
    assert all(torch.equal(v, windows[(2, 2)]) for v in test_in)  # test: the centre crop
    residual = Supervised(bb, 4, size=24, view="residual").eval()
    seen.clear()
    residual.logits(clips)
    assert torch.allclose(seen[0] * std[None] + mean[None], torch.full_like(seen[0], 0.5), atol=1e-5)  # a still clip


def test_training_with_labels_flips_only_where_a_flip_keeps_the_class(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import course_lib.evaluate as ev
    from course_lib.data import SYNTH_CLASSES
    from course_lib.evaluate import FINETUNE_AUGMENT, LINEAR_EVAL_AUGMENT, PROTOCOLS, finetune_augment, label_safe_flip

    assert label_safe_flip(SYNTH_CLASSES) == 0.0  # move_left <-> move_right, rotate_cw <-> rotate_ccw
    assert label_safe_flip(["move_up", "move_down", "grow", "shrink"]) == 0.5  # no class has its mirror image
    assert label_safe_flip(["ApplyEyeMakeup", "Archery", "BabyCrawling"]) == 0.5  # UCF101: DualVar's flip
    assert finetune_augment(SYNTH_CLASSES) == replace(FINETUNE_AUGMENT, flip=0.0)
    for name in ("finetune", "cvrl-linear"):  # both protocols ask label_safe_flip unless told
        assert PROTOCOLS[name].run.__kwdefaults__["flip"] is None
    # and so do the library functions by default: the augmentation each builds its classifier with
    built = []
    monkeypatch.setattr(ev, "Supervised", lambda *a, **k: built.append(k["augment"]) or nn.Identity())
    monkeypatch.setattr(ev, "FrozenLinear", lambda *a, **k: built.append(k["augment"]) or nn.Identity())
    monkeypatch.setattr(ev, "train", lambda *a, **k: {"device": "cpu", "final": {"acc": 0.0}})
    monkeypatch.setattr(ev, "classify", lambda *a, **k: 0.0)
    for classes, flip in ((SYNTH_CLASSES, 0.0), (["ApplyEyeMakeup", "Archery"], 0.5)):
        train_set = SimpleNamespace(manifest=SimpleNamespace(classes=classes))
        ev.finetune(None, train_set, None, None, tmp_path, num_classes=len(classes), size=24)
        ev.linear_eval(None, train_set, None, None, tmp_path, num_classes=len(classes), size=24)
        assert built[-2:] == [replace(FINETUNE_AUGMENT, flip=flip), replace(LINEAR_EVAL_AUGMENT, flip=flip)]


def test_bias_probes_find_an_appearance_reader_on_the_twin_only():
    """A 'representation' that is only the clip's mean and spread of colour reads the twin's classes
    (appearance names them there) and the colour attribute, but not the plain data's classes."""
    from course_lib.data import builtin_dataset
    from course_lib.evaluate import bias_probes
    from course_lib.course import budget

    class ColourStats(nn.Module):
        def forward(self, x):  # N x C x T x H x W -> N x 2C
            return torch.cat([x.mean((2, 3, 4)), x.std((2, 3, 4))], 1)

    plain = builtin_dataset(quick=True, progress=False)
    twin = builtin_dataset(quick=True, static_bias=1, progress=False)
    row = bias_probes(ColourStats(), budget("test"), plain, twin, "cpu")
    assert list(row) == ["twin", "R@1 twin", "plain", "color", "background", "shape"]
    chance = 100 / len(plain.classes)
    assert row["twin"] >= row["plain"] + 40 and row["R@1 twin"] >= 3 * chance
    assert row["plain"] <= 2.5 * chance  # colour tells nothing about the motion there
    assert row["color"] >= 4 * chance  # and the colour probe reads the right video's colour (8 colours)
