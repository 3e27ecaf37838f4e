"""Evaluation protocols against brute-force references and separable toy data."""
import numpy as np
import pytest
import torch

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


def test_three_crops_cover_the_long_axis():
    from course_lib.evaluate import three_crops
    x = torch.arange(12.0).view(1, 1, 1, 1, 12).expand(2, 3, 4, 6, 12).contiguous()  # column j holds j
    crops = three_crops((x * 10).byte(), 6)  # 3 x 2 x 3 x 4 x 6 x 6
    cols = (crops[:, 0, 0, 0, 0] * 255 / 10).round()
    assert cols.tolist() == [[0, 1, 2, 3, 4, 5], [3, 4, 5, 6, 7, 8], [6, 7, 8, 9, 10, 11]]


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
