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
    assert L.shuffle_rank(a, p, theta).item() == pytest.approx(sum(terms) / 2, abs=1e-9)
    # a perfectly ranked pair costs almost nothing, a swapped one a lot
    assert L.shuffle_rank(a, a, theta) < 1e-8 < 10 < L.shuffle_rank(a, a.flip(1), theta)


def test_temporal_coherent_by_hand():
    g = torch.Generator().manual_seed(0)
    e1 = F.normalize(torch.randn(3, 2, 4, generator=g, dtype=torch.float64), dim=2)
    e2 = F.normalize(torch.randn(3, 2, 4, generator=g, dtype=torch.float64), dim=2)
    t = 0.07
    sim = [[sum(float(e1[b, i] @ e2[c, j]) for i in range(2) for j in range(2)) / 4 for c in range(3)]
           for b in range(3)]
    rows = [-math.log(math.exp(sim[b][b] / t) / sum(math.exp(sim[b][c] / t) for c in range(3))) for b in range(3)]
    cols = [-math.log(math.exp(sim[c][c] / t) / sum(math.exp(sim[b][c] / t) for b in range(3))) for c in range(3)]
    assert L.temporal_coherent(e1, e2, t).item() == pytest.approx((sum(rows) + sum(cols)) / 6, abs=1e-9)
