"""Contrastive losses and the memories they draw negatives from.

- ``info_nce``: InfoNCE (van den Oord et al., *Representation Learning with Contrastive
  Predictive Coding*, 2018) between two batches of embeddings; row i of each is a
  positive pair, the other rows are negatives.
- ``nt_xent``: SimCLR's normalised temperature-scaled cross entropy (Chen et al., ICML
  2020) over the 2N views of N samples; CVRL's loss.
- ``MoCoQueue``, ``momentum_update``, ``moco_loss``: MoCo (He et al., CVPR 2020): keys
  from a momentum encoder, negatives from a queue of past keys.
- ``MemoryBank``, ``bank_nce``: the memory bank of Wu et al. (CVPR 2018) as CMC and IIC
  use it: one slowly updated, L2-normalised entry per training video.
- ``shuffle_rank``, ``temporal_coherent``: the two terms of DualVar (Zhang et al., *Inter-intra
  Variant Dual Representations for Self-supervised Video Recognition*, BMVC 2021), over
  per-segment embeddings of clips.
- ``alignment``, ``uniformity``: Wang & Isola (ICML 2020), two numbers that describe an
  embedding.

Every loss runs in float32, outside autocast (``in_fp32``): similarities divided by a
temperature of 0.07-0.1 need more than bf16's 8-bit mantissa, and the batches are small.

Under ``torchrun`` the batch losses contrast against every process's embeddings
(``distributed.all_gather``, with gradients) and queues and banks take every process's
keys, so N processes with B clips each compute what one process computes with N * B.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .distributed import all_gather, gather_no_grad, local_rows
from .runtime import full_precision


def in_fp32(fn):
    """Run loss ``fn`` outside autocast, with its half-precision tensor arguments as float32."""
    def up(a):
        return a.float() if torch.is_tensor(a) and a.dtype in (torch.bfloat16, torch.float16) else a

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with full_precision(*args):
            return fn(*map(up, args), **{k: up(v) for k, v in kwargs.items()})

    return wrapper


@in_fp32
def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.1, *, symmetric: bool = True) -> torch.Tensor:
    """q, k: N x D (normalised here). Logits q k^T / t; the positive of q_i is k_i.

    ``symmetric`` averages the loss of q against k and of k against q.
    """
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    target = local_rows(len(q), q.device)  # the positives' columns among every process's rows
    loss = F.cross_entropy(q @ all_gather(k).T / temperature, target)  # N x N (one process)
    if not symmetric:
        return loss
    return (loss + F.cross_entropy(k @ all_gather(q).T / temperature, target)) / 2


@in_fp32
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, *, reduction: str = "mean",
            normalized: bool = False, negatives: torch.Tensor | None = None) -> torch.Tensor:
    """SimCLR's NT-Xent: each of the 2N views has one positive (its pair) and 2N - 2 negatives.

    z1, z2: N x D, L2-normalised here unless ``normalized``. ``reduction``: "mean" over the 2N
    rows (SimCLR), or "sum" of the two directions, loss_a + loss_b, each a mean over N rows:
    twice the mean, the official CVRL loss (``official/projects/video_ssl/losses/losses.py``).
    ``negatives``: N x D, one more negative for both views of sample i, its intra-video negative
    (``debias="intra"``): each row's logits get the column z . n_i / t.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"nt_xent reduction {reduction!r} is not mean or sum.")
    if not normalized:
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    keys = torch.cat([all_gather(z1), all_gather(z2)])  # 2M x D, M = N on one process
    m = len(keys) // 2
    rows = local_rows(len(z1), z1.device)  # where this process's views sit among the M
    own = torch.cat([rows, rows + m])  # the column of each query itself
    sim = torch.cat([z1, z2]) @ keys.T / temperature  # 2N x 2M
    sim = sim.masked_fill(F.one_hot(own, 2 * m).bool(), float("-inf"))  # never yourself
    if negatives is not None:  # one more column: each view against its own sample's intra-negative
        n = negatives if normalized else F.normalize(negatives, dim=1)
        sim = torch.cat([sim, (torch.cat([z1, z2]) * torch.cat([n, n])).sum(1, keepdim=True) / temperature], 1)
    target = torch.cat([rows + m, rows])  # view i <-> view i + M
    loss = F.cross_entropy(sim, target)
    return 2 * loss if reduction == "sum" else loss


@in_fp32
def positive_rank_accuracy(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Fraction of rows of z1 whose most similar row of z2 is their own positive (a training log).

    Under torchrun the candidates are every process's z2, so the mean over the processes
    is the accuracy of one process holding the whole global batch.
    """
    with torch.no_grad():
        keys = gather_no_grad(F.normalize(z2, dim=1))
        sim = F.normalize(z1, dim=1) @ keys.T
        return (sim.argmax(1) == local_rows(len(z1), z1.device)).float().mean()  # 0-d, on the device


# ----------------------------------------------------------------------------- MoCo
class MoCoQueue(nn.Module):
    """A FIFO queue of K normalised keys (K x D), oldest overwritten first.

    With ``parts`` > 1 each key is ``parts`` vectors of D / parts laid end to end (DualVar's
    segment embeddings), and each part is normalised on its own.
    """

    def __init__(self, size: int, dim: int, *, parts: int = 1):
        super().__init__()
        self.parts = parts
        self.register_buffer("keys", self._normalize(torch.randn(size, dim)))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def _normalize(self, k: torch.Tensor) -> torch.Tensor:
        return rearrange(F.normalize(rearrange(k, "n (p d) -> n p d", p=self.parts), dim=2), "n p d -> n (p d)")

    @torch.no_grad()
    def enqueue(self, k: torch.Tensor) -> None:
        """Write the N keys k (N x D) after the last ones, wrapping around (every process's keys, in rank order)."""
        size = len(self.keys)
        k = gather_no_grad(k)[-size:]  # more keys than room: keep the newest
        pos = (self.ptr + torch.arange(len(k), device=k.device)) % size
        self.keys[pos] = self._normalize(k.detach().to(self.keys.dtype))
        self.ptr.copy_((self.ptr + len(k)) % size)


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """target <- m * target + (1 - m) * online, parameter by parameter; buffers (BN statistics) copied."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o.detach(), 1 - m)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's EMA momentum at ``progress`` (0 to 1) of training: from ``base`` up to 1 along a cosine,
    1 - (1 - base) (cos(pi progress) + 1) / 2 (Grill et al. 2020; SlowFast's ``momentum_anneal_cosine``)."""
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


@in_fp32
def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's loss over rho clips per video, every ordered pair of different clips a positive.

    p: rho x N x D predictions of the online network; z: rho x N x D projections of the target
    network (no gradient). With d(i, j) = ||p_i / |p_i| - z_j / |z_j| ||^2 = 2 - 2 cos(p_i, z_j),
    averaged over the N videos: the sum over online clips i of the mean over target clips j != i.
    At rho = 2 that is BYOL's symmetrised loss (both directions summed); it is SlowFast's
    ``contrastive.py`` form (-cos / T with T = 0.5, one backward per online clip) up to a constant.
    """
    rho = len(p)
    cos = torch.einsum("snd,tnd->stn", F.normalize(p, dim=-1), F.normalize(z.detach(), dim=-1))  # rho x rho x N
    pairs = ~torch.eye(rho, dtype=torch.bool, device=p.device)[:, :, None]  # i != j
    # the mean over the rho (rho - 1) N pairs, as a masked sum (indexing with a mask would wait for the GPU)
    return torch.where(pairs, 2 - 2 * cos, 0).sum() / (rho * (rho - 1) * cos.shape[-1]) * rho


@in_fp32
def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.07, *,
              normalized: bool = False, negatives: torch.Tensor | None = None):
    """InfoNCE with one positive key per query and the queue as negatives.

    q, k: N x D (L2-normalised here unless ``normalized``), queue: K x D. ``negatives``: N x D, one more
    negative key of each query (its intra-video negative, ``debias="intra"``), as the column after the
    positive. Returns (loss, logits N x (1 + K), or N x (2 + K) with ``negatives``); column 0 is the positive.
    """
    if not normalized:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    pos = (q * k).sum(1, keepdim=True)  # N x 1
    neg = q @ queue.T  # N x K
    if negatives is not None:
        n = negatives if normalized else F.normalize(negatives, dim=1)
        neg = torch.cat([(q * n).sum(1, keepdim=True), neg], 1)  # N x (1 + K)
    logits = torch.cat([pos, neg], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device)), logits


# ----------------------------------------------------------------------------- memory bank
class MemoryBank(nn.Module):
    """One entry per training video (N x D), updated as m * old + (1 - m) * new and re-normalised.

    Initialised uniformly in [-s, s] with s = 1 / sqrt(D / 3), as CMC and IIC do.
    """

    def __init__(self, num_items: int, dim: int, momentum: float = 0.5):
        super().__init__()
        self.momentum = momentum
        s = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory", torch.rand(num_items, dim).mul_(2 * s).sub_(s))

    def __len__(self) -> int:
        return len(self.memory)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self.memory[index]

    @torch.no_grad()
    def update(self, index: torch.Tensor, features: torch.Tensor) -> None:
        """Move the entries of the videos ``index`` (N) towards ``features`` (N x D); every process's, in rank order."""
        index, features = gather_no_grad(index), gather_no_grad(features.detach())
        new = self.memory[index] * self.momentum + features.detach().to(self.memory.dtype) * (1 - self.momentum)
        self.memory.index_copy_(0, index, F.normalize(new, dim=1))


@in_fp32
def bank_nce(query: torch.Tensor, candidates: torch.Tensor, temperature: float = 0.07):
    """Softmax NCE over bank entries: candidate 0 is the positive, the rest negatives.

    query: N x D, candidates: N x M x D. Returns (loss, logits N x M).
    """
    logits = torch.einsum("nmd,nd->nm", candidates, query) / temperature
    return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long, device=query.device)), logits


# ----------------------------------------------------------------------------- DualVar
RANK_FORMS = ("matrix", "anchor")
COHERENT_FORMS = ("nt_xent", "cross")


@in_fp32
def shuffle_rank(anchor: torch.Tensor, shuffled: torch.Tensor, theta: float = 0.05, *, form: str = "matrix",
                 cap: float | None = None) -> torch.Tensor:
    """Rank the matching segment above the others: mean softplus((s_neg - s_pos) / theta).

    anchor, shuffled: B x S x D normalised segment embeddings; ``shuffled`` comes from the
    time-shuffled clip, already put back in the original segment order, so anchor segment i
    and shuffled segment i are a positive pair.

    * ``form="matrix"`` (DualVar's public code, ``model/simclr.py`` ``calc_ranking_loss``): the
      2S x 2S similarities of the anchor's and the shuffled clip's segments; every row, anchor
      or shuffled, has its pair as positive and the 2S - 2 other segments as negatives.
    * ``form="anchor"`` (the paper's description): only the S anchor rows, with the S - 1 other
      shuffled segments as negatives.

    ``cap`` clamps (s_neg - s_pos) / theta from above (5 in the public SimCLR form, none in its MoCo form).
    """
    s_count = anchor.shape[1]
    if form == "anchor":
        s = torch.einsum("bid,bjd->bij", anchor, shuffled)  # B x S x S
        pos = s.diagonal(dim1=1, dim2=2)[:, :, None]  # B x S x 1
        neg = ~torch.eye(s_count, dtype=torch.bool, device=s.device)  # S x S, j != i
        negatives = s_count - 1  # per row
    elif form == "matrix":
        f = torch.cat([anchor, shuffled], 1)  # B x 2S x D
        s = f @ f.transpose(1, 2)  # B x 2S x 2S
        pair = (torch.arange(2 * s_count, device=s.device) + s_count) % (2 * s_count)  # row r's positive column
        pos = s.gather(2, pair.expand(len(s), -1)[:, :, None])  # B x 2S x 1
        neg = ~(torch.eye(2 * s_count, dtype=torch.bool, device=s.device) | F.one_hot(pair, 2 * s_count).bool())
        negatives = 2 * s_count - 2  # per row
    else:
        raise ValueError(f"shuffle_rank form {form!r} is not one of {', '.join(RANK_FORMS)}.")
    d = (s - pos) / theta
    if cap is not None:
        d = d.clamp(max=cap)
    # the mean over every row's negatives, as a masked sum (indexing with a mask would wait for the GPU)
    return torch.where(neg, F.softplus(d), 0).sum() / (len(d) * len(neg) * negatives)


@in_fp32
def coherent_similarity(e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
    """Clip-to-clip similarity, B1 x B2: the mean of the S x S segment dot products."""
    return torch.einsum("bid,cjd->bc", e1, e2) / (e1.shape[1] * e2.shape[1])


@in_fp32
def temporal_coherent(e1: torch.Tensor, e2: torch.Tensor, temperature: float = 0.07, *,
                      form: str = "nt_xent") -> torch.Tensor:
    """DualVar's temporal coherent contrast with ``coherent_similarity`` between clips.

    e1, e2: B x S x D normalised segment embeddings of two clips per video.

    * ``form="nt_xent"`` (DualVar's public SimCLR form, ``calc_tc_contrast_loss``): NT-Xent over
      the 2B clips, each with its pair as positive and the 2B - 2 other clips (the same view's
      included) as negatives, averaged over the 2B rows.
    * ``form="cross"``: InfoNCE from each clip to the other view's B clips, both directions averaged.

    The mean of S x S dot products is the dot product of the segment means, so the nt_xent
    form is NT-Xent on the (unnormalised) segment means.
    """
    if form == "nt_xent":
        return nt_xent(e1.mean(1), e2.mean(1), temperature, normalized=True)
    if form != "cross":
        raise ValueError(f"temporal_coherent form {form!r} is not one of {', '.join(COHERENT_FORMS)}.")
    target = local_rows(len(e1), e1.device)  # positives: the same video among every process's clips
    a = F.cross_entropy(coherent_similarity(e1, all_gather(e2)) / temperature, target)  # B x B on one process
    b = F.cross_entropy(coherent_similarity(e2, all_gather(e1)) / temperature, target)
    return (a + b) / 2


@in_fp32
def temporal_coherent_moco(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.07):
    """DualVar's public MoCo form of the temporal coherent contrast (``model/moco.py``).

    q: B x S x D query segments (clip 1), k: B x S x D momentum-encoder segments (clip 2),
    queue: K x (S D) past key clips' segments. Logits are ``coherent_similarity`` with the key
    (positive) and with each queued clip; one direction, query to keys. Returns (loss, logits).
    """
    past = rearrange(queue, "k (s d) -> k s d", s=q.shape[1])
    return moco_loss(q.mean(1), k.mean(1), past.mean(1), temperature, normalized=True)


# ----------------------------------------------------------------------------- diagnostics
@in_fp32
def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2) -> torch.Tensor:
    """Mean distance^alpha between positive pairs of normalised embeddings (lower: views agree)."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    return (z1 - z2).norm(dim=1).pow(alpha).mean()


@in_fp32
def uniformity(z: torch.Tensor, t: float = 2) -> torch.Tensor:
    """log E exp(-t |z_i - z_j|^2) over pairs (lower: spread more evenly over the sphere)."""
    z = F.normalize(z, dim=1)
    return torch.pdist(z).pow(2).mul(-t).exp().mean().log()


@in_fp32
def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std of L2-normalised embeddings z (N x D). A collapsed
    embedding (every input to one point) gives 0; well spread ones about 1 / sqrt(D) (SimSiam, Chen & He 2021)."""
    return F.normalize(z.float(), dim=1).std(dim=0).mean()


@in_fp32
def effective_rank(z: torch.Tensor) -> torch.Tensor:
    """exp of the entropy of the normalised singular values of the centred embeddings z (N x D)
    (Roy & Vetterli 2007): from 1 (every embedding on one line) to min(N, D) (all directions used)."""
    s = torch.linalg.svdvals(z.float() - z.float().mean(0))
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * p.clamp_min(1e-12).log()).sum())
