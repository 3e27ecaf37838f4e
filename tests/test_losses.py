"""Contrastive losses against hand-computed values; MoCo queue, momentum and memory-bank updates."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import losses as L


def unit(v):
    v = torch.tensor(v, dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True)


def test_info_nce_by_hand():
    q = unit([[1.0, 0.0], [0.6, 0.8]])
    k = unit([[0.8, 0.6], [0.0, 1.0]])
    t = 0.5
    sim = [[0.8, 0.0], [0.6 * 0.8 + 0.8 * 0.6, 0.8]]  # q_i . k_j written out
    row = [-math.log(math.exp(sim[i][i] / t) / sum(math.exp(s / t) for s in sim[i])) for i in range(2)]
    col = [-math.log(math.exp(sim[j][j] / t) / sum(math.exp(sim[i][j] / t) for i in range(2))) for j in range(2)]
    assert L.info_nce(q, k, t, symmetric=False).item() == pytest.approx(sum(row) / 2, abs=1e-12)
    assert L.info_nce(q, k, t).item() == pytest.approx((sum(row) + sum(col)) / 4, abs=1e-12)
    # scale does not matter: the embeddings are normalised inside
    assert L.info_nce(3 * q, 0.1 * k, t).item() == pytest.approx(L.info_nce(q, k, t).item(), abs=1e-12)


def test_nt_xent_equals_its_definition():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    t = 0.2
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    total = 0.0
    for i in range(10):  # l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t), j = i's pair
        j = (i + 5) % 10
        den = sum(math.exp(z[i] @ z[k] / t) for k in range(10) if k != i)
        total += -math.log(math.exp(z[i] @ z[j] / t) / den)
    assert L.nt_xent(z1, z2, t).item() == pytest.approx(total / 10, abs=1e-10)
    assert L.nt_xent(z2, z1, t).item() == pytest.approx(total / 10, abs=1e-10)


def test_nt_xent_is_low_for_matching_views_and_high_for_swapped_ones():
    z = F.normalize(torch.randn(16, 32, generator=torch.Generator().manual_seed(1)), dim=1)
    assert L.nt_xent(z, z, 0.1) < 0.5 < L.nt_xent(z, z.roll(1, 0), 0.1)


def test_moco_loss_by_hand():
    q, k = unit([[1.0, 0.0]]), unit([[0.6, 0.8]])
    queue = unit([[0.0, 1.0], [-1.0, 0.0]])
    loss, logits = L.moco_loss(q, k, queue, temperature=0.1)
    expected = -math.log(math.exp(6) / (math.exp(6) + math.exp(0) + math.exp(-10)))
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert logits.shape == (1, 3)


def test_moco_queue_is_fifo_and_wraps_around():
    queue = L.MoCoQueue(5, 2)
    keys = [F.normalize(torch.tensor([[float(i + 1), 1.0]]), dim=1) for i in range(7)]
    for k in (torch.cat(keys[:3]), torch.cat(keys[3:6]), keys[6]):
        queue.enqueue(k)
    # 7 keys into 5 slots: slots 0 and 1 were overwritten by keys 5 and 6
    expected = torch.cat([keys[5], keys[6], keys[2], keys[3], keys[4]])
    torch.testing.assert_close(queue.keys, expected)
    assert int(queue.ptr) == 2
    queue.enqueue(torch.cat(keys))  # more keys than room: the newest 5 go in from slot 2 on
    torch.testing.assert_close(queue.keys, torch.cat([keys[5], keys[6], keys[2], keys[3], keys[4]]))
    assert int(queue.ptr) == 2


def test_momentum_update():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = copy.deepcopy(target)
    L.momentum_update(target, online, 0.9)
    torch.testing.assert_close(target.weight, 0.9 * before.weight + 0.1 * online.weight)
    torch.testing.assert_close(target.bias, 0.9 * before.bias + 0.1 * online.bias)


def test_memory_bank_update_and_init():
    bank = L.MemoryBank(6, 4, momentum=0.5)
    s = 1 / math.sqrt(4 / 3)
    assert bank.memory.abs().max() <= s
    old = bank.memory.clone()
    new = torch.randn(2, 4)
    bank.update(torch.tensor([4, 1]), new)
    expected = F.normalize(0.5 * old[[4, 1]] + 0.5 * new, dim=1)
    torch.testing.assert_close(bank[torch.tensor([4, 1])], expected)
    untouched = [0, 2, 3, 5]
    assert torch.equal(bank.memory[untouched], old[untouched])


def test_bank_nce_by_hand():
    q = unit([[1.0, 0.0]])
    cand = unit([[[1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]]])  # positive first
    loss, _ = L.bank_nce(q.float(), cand.float(), temperature=0.5)
    s = [math.sqrt(0.5) / 0.5, 0.0, -2.0]
    assert loss.item() == pytest.approx(-math.log(math.exp(s[0]) / sum(math.exp(v) for v in s)), abs=1e-6)


def test_alignment_and_uniformity_by_hand():
    z1, z2 = unit([[1.0, 0.0], [0.0, 1.0]]), unit([[0.0, 1.0], [0.0, 1.0]])
    assert L.alignment(z1, z2).item() == pytest.approx(1.0)  # (|e1 - e2|^2 + 0) / 2 = 1
    z = unit([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])  # squared distances 4, 2, 2
    expected = math.log((math.exp(-8) + 2 * math.exp(-4)) / 3)
    assert L.uniformity(z).item() == pytest.approx(expected, abs=1e-9)


def test_shuffle_rank_by_hand():
    # one video, S = 2 segments in 2-D: anchor segments e1, e2; shuffled (re-ordered) segments at 30 and 80 degrees
    a = unit([[[1.0, 0.0], [0.0, 1.0]]])
    ang = [math.radians(30), math.radians(80)]
    p = torch.tensor([[[math.cos(x), math.sin(x)] for x in ang]], dtype=torch.float64)
    s = a[0] @ p[0].T  # s[i, j] = anchor i . shuffled j
    theta = 0.05
    terms = [math.log1p(math.exp((s[i, j] - s[i, i]) / theta)) for i in range(2) for j in range(2) if i != j]
    assert L.shuffle_rank(a, p, theta, form="anchor").item() == pytest.approx(sum(terms) / 2, abs=1e-9)
    # a perfectly ranked pair costs almost nothing, a swapped one a lot
    assert L.shuffle_rank(a, a, theta, form="anchor") < 1e-8 < 10 < L.shuffle_rank(a, a.flip(1), theta, form="anchor")


def test_temporal_coherent_by_hand():
    g = torch.Generator().manual_seed(0)
    e1 = F.normalize(torch.randn(3, 2, 4, generator=g, dtype=torch.float64), dim=2)
    e2 = F.normalize(torch.randn(3, 2, 4, generator=g, dtype=torch.float64), dim=2)
    t = 0.07
    sim = [[sum(float(e1[b, i] @ e2[c, j]) for i in range(2) for j in range(2)) / 4 for c in range(3)]
           for b in range(3)]
    rows = [-math.log(math.exp(sim[b][b] / t) / sum(math.exp(sim[b][c] / t) for c in range(3))) for b in range(3)]
    cols = [-math.log(math.exp(sim[c][c] / t) / sum(math.exp(sim[b][c] / t) for b in range(3))) for c in range(3)]
    assert L.temporal_coherent(e1, e2, t, form="cross").item() == pytest.approx((sum(rows) + sum(cols)) / 6, abs=1e-9)


# ----------------------------------------------------------------------------- the official formulas, written out
def official_cvrl_loss(h1, h2, t):
    """CVRL's loss as official/projects/video_ssl/losses/losses.py computes it (one replica): L2-normalise,
    subtract LARGE_NUM on the self-similarity, logits [ab, aa] and [ba, bb], loss_a + loss_b."""
    h1, h2 = F.normalize(h1, dim=1), F.normalize(h2, dim=1)
    n = len(h1)
    labels = F.one_hot(torch.arange(n), 2 * n).to(h1.dtype)
    mask = F.one_hot(torch.arange(n), n).to(h1.dtype)
    aa, bb = h1 @ h1.T / t - 1e9 * mask, h2 @ h2.T / t - 1e9 * mask
    ab, ba = h1 @ h2.T / t, h2 @ h1.T / t
    loss_a = -(labels * torch.cat([ab, aa], 1).log_softmax(1)).sum(1).mean()
    loss_b = -(labels * torch.cat([ba, bb], 1).log_softmax(1)).sum(1).mean()
    return loss_a + loss_b


def test_cvrl_loss_is_the_official_sum_of_two_directions():
    g = torch.Generator().manual_seed(0)
    h1, h2 = torch.randn(6, 16, generator=g, dtype=torch.float64), torch.randn(6, 16, generator=g, dtype=torch.float64)
    official = official_cvrl_loss(h1, h2, 0.1)
    assert L.nt_xent(h1, h2, 0.1, reduction="sum").item() == pytest.approx(official.item(), rel=1e-12)
    assert L.nt_xent(h1, h2, 0.1).item() == pytest.approx(official.item() / 2, rel=1e-12)  # SimCLR's mean


def test_the_cvrl_method_computes_the_official_loss():
    from course_lib.methods import build_method
    from course_lib.models import create_model

    torch.manual_seed(0)
    m = build_method("cvrl", create_model("r3d_vcop", width=0.125), size=24, hidden=32)
    seen = []
    m.projector.register_forward_hook(lambda mod, args, out: seen.append(out.detach()))
    clips = torch.randint(0, 256, (4, 2, 3, 4, 28, 28), dtype=torch.uint8)
    loss, _ = m({"clips": clips, "index": torch.arange(4)})
    assert loss.item() == pytest.approx(official_cvrl_loss(seen[0].double(), seen[1].double(), 0.1).item(), rel=1e-5)
    m_mean = build_method("cvrl", create_model("r3d_vcop", width=0.125), size=24, hidden=32, loss_sum=False)
    assert m_mean.loss_sum is False


def official_ranking_loss(anchor, cal, theta, cap):
    """DualVar's calc_ranking_loss (model/simclr.py; model/moco.py without the cap), written with loops:
    rows are the anchor's and the calibrated shuffled clip's segments; row r's positive is its pair."""
    b, s = anchor.shape[:2]
    values = []
    for i in range(b):
        f = torch.cat([anchor[i], cal[i]])  # 2S x D
        sim = f @ f.T
        for r in range(2 * s):
            pos = (r + s) % (2 * s)
            for c in range(2 * s):
                if c in (r, pos):
                    continue
                d = (sim[r, c] - sim[r, pos]) / theta
                d = min(float(d), cap) if cap is not None else float(d)
                values.append(math.log(1 + math.exp(d)))
    return sum(values) / len(values)


@pytest.mark.parametrize("segments", [2, 3])
@pytest.mark.parametrize("cap", [5.0, None])
def test_shuffle_rank_is_the_official_matrix_form(segments, cap):
    g = torch.Generator().manual_seed(segments)
    a = F.normalize(torch.randn(3, segments, 8, generator=g, dtype=torch.float64), dim=2)
    p = F.normalize(torch.randn(3, segments, 8, generator=g, dtype=torch.float64), dim=2)
    theta = 0.05
    got = L.shuffle_rank(a, p, theta, form="matrix", cap=cap).item()
    assert got == pytest.approx(official_ranking_loss(a, p, theta, cap), rel=1e-10)
    if cap is not None:  # random segments at theta 0.05 reach the cap: it changes the value
        assert got != pytest.approx(official_ranking_loss(a, p, theta, None), rel=1e-3)


def official_coherent_simclr(e1, e2, t):
    """DualVar's calc_tc_contrast_loss: 2N clips (view-major), similarity = mean of the S x S segment dot
    products, the self entry removed, the other view's clip positive, CE averaged over the 2N rows."""
    clips = torch.cat([e1, e2])  # 2N x S x D
    n = len(e1)
    rows = []
    for r in range(2 * n):
        sims = [float(torch.einsum("id,jd->", clips[r], clips[c])) / (e1.shape[1] ** 2) for c in range(2 * n)]
        pos = (r + n) % (2 * n)
        others = [sims[c] for c in range(2 * n) if c != r]
        rows.append(-sims[pos] / t + math.log(sum(math.exp(x / t) for x in others)))
    return sum(rows) / len(rows)


def test_temporal_coherent_is_the_official_simclr_form():
    g = torch.Generator().manual_seed(1)
    e1 = F.normalize(torch.randn(4, 2, 6, generator=g, dtype=torch.float64), dim=2)
    e2 = F.normalize(torch.randn(4, 2, 6, generator=g, dtype=torch.float64), dim=2)
    assert L.temporal_coherent(e1, e2, 0.07).item() == pytest.approx(official_coherent_simclr(e1, e2, 0.07), rel=1e-10)


def test_temporal_coherent_is_the_official_moco_form():
    """model/moco.py: pos = mean_ij q_i . k_j; negative m = mean_ij q_i . Q_m,j over the queue of past key
    clips (each S segments laid end to end); CE with label 0, one direction."""
    g = torch.Generator().manual_seed(2)
    q = F.normalize(torch.randn(3, 2, 5, generator=g, dtype=torch.float64), dim=2)
    k = F.normalize(torch.randn(3, 2, 5, generator=g, dtype=torch.float64), dim=2)
    queue = F.normalize(torch.randn(7, 2, 5, generator=g, dtype=torch.float64), dim=2)
    t = 0.07
    expected = 0.0
    for i in range(3):
        pos = float(torch.einsum("id,jd->", q[i], k[i])) / 4
        negs = [float(torch.einsum("id,jd->", q[i], queue[m])) / 4 for m in range(7)]
        expected += (-pos / t + math.log(math.exp(pos / t) + sum(math.exp(x / t) for x in negs))) / 3
    loss, logits = L.temporal_coherent_moco(q, k, queue.flatten(1), t)
    assert loss.item() == pytest.approx(expected, rel=1e-10) and logits.shape == (3, 8)


def test_a_queue_of_segments_normalises_each_segment():
    queue = L.MoCoQueue(4, 6, parts=2)
    queue.enqueue(torch.randn(3, 6) * 5)
    assert torch.allclose(queue.keys.view(4, 2, 3).norm(dim=2), torch.ones(4, 2))


def test_losses_run_in_float32_inside_autocast():
    """Under a bf16 autocast (a GPU step's), similarities over a temperature of 0.1 would keep 8 bits of
    mantissa: each loss leaves autocast and lifts half-precision embeddings to float32, so its value is
    that of the float32 embeddings (the bf16 rounding of the inputs aside)."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = (torch.randn(16, 32, generator=g).bfloat16() for _ in range(2))
    queue = F.normalize(torch.randn(64, 32, generator=g), dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = [L.nt_xent(z1, z2, 0.1), L.moco_loss(z1, z2, queue, 0.07), L.info_nce(z1, z2, 0.1)]
        plain_mm = (z1.float() @ z2.float().T)  # what autocast does to an unguarded product
    outside = [L.nt_xent(z1.float(), z2.float(), 0.1), L.moco_loss(z1.float(), z2.float(), queue, 0.07),
               L.info_nce(z1.float(), z2.float(), 0.1)]
    assert plain_mm.dtype == torch.bfloat16
    for a, b in zip(inside, outside):
        a, b = (x[0] if isinstance(x, tuple) else x for x in (a, b))
        assert a.dtype == torch.float32 and torch.equal(a, b)
