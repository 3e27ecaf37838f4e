"""The attentive probe: frozen evaluation through a learnt attention pool, then a linear layer
(Bardes et al., *V-JEPA*, 2024, section 4; ``AttentivePooler`` and ``AttentiveClassifier`` in
facebookresearch/jepa ``src/models/attentive_pooler.py``).

A linear probe on the mean of a backbone's tokens asks whether the classes are linearly
separable after average pooling; features that keep *where* something happens in their tokens
(as masked-modelling features do) lose it in the mean. The attentive probe learns a query
token that cross-attends to all the frozen tokens of a clip, so it chooses what to pool: one
cross-attention block (LayerNorm, multi-head cross-attention from the query, a residual MLP),
then a linear classifier on the pooled query. The backbone never trains.

It works for any backbone: a ViT's tokens, or a 3D CNN's last feature map read as
(t h w) tokens of C channels. The query reads the tokens of all the clips of a video at once
(the public evaluation's ``attend_across_segments``), so a video is one sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader

from .augment import AugmentConfig, augment, center_crop
from .methods.common import normalize
from .models.vit import init_weights
from .video import before_fork


class CrossAttentionBlock(nn.Module):
    """q + attention(q, norm(x)), then q + mlp(norm(q)): learnt queries read a set of tokens. As the public
    code runs it, the attention output has no projection (``CrossAttention.proj`` in ``src/models/utils/modules.py``
    is defined but never applied)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)  # jepa's AttentivePooler: nn.LayerNorm as it is (eps 1e-5),
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)  # not its encoders' partial(nn.LayerNorm, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, q, x):  # q: B x Q x D, x: B x N x D
        x = self.norm1(x)
        k, v = rearrange(self.kv(x), "b n (two h e) -> two b h n e", two=2, h=self.heads)
        qh = rearrange(self.q(q), "b q (h e) -> b h q e", h=self.heads)
        y = rearrange(F.scaled_dot_product_attention(qh, k, v), "b h q e -> b q (h e)")  # B x Q x D
        q = q + y
        return q + self.mlp(self.norm2(q))


class AttentiveProbe(nn.Module):
    """Tokens B x N x D -> class logits B x K through ``queries`` learnt queries (averaged) and a linear layer."""

    def __init__(self, dim: int, num_classes: int, *, heads: int | None = None, queries: int = 1):
        super().__init__()
        heads = heads or math.gcd(dim, 16)  # V-JEPA's 16 heads where the width allows
        self.query = nn.Parameter(torch.zeros(1, queries, dim))
        self.pool = CrossAttentionBlock(dim, heads)
        self.fc = nn.Linear(dim, num_classes)
        init_weights(self)
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.query.expand(tokens.shape[0], -1, -1), tokens)  # B x Q x D
        return self.fc(pooled.mean(1))  # B x K


def clip_tokens(backbone: nn.Module, clips: torch.Tensor, *, size: int | None = None) -> torch.Tensor:
    """uint8 clips N x C x T x H x W -> the backbone's last feature map as tokens, N x (t h w) x D."""
    x = clips.float() / 255
    if size and min(x.shape[-2:]) > size:
        x = center_crop(x, size)
    return rearrange(backbone.forward_features(normalize(x)), "n d t h w -> n (t h w) d")


@torch.no_grad()
def extract_tokens(backbone: nn.Module, dataset, *, device="cpu", batch_size: int = 8, num_workers: int = 0,
                   size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens V x S x N x D in float16, labels V): every clip's tokens, S clips per video."""
    backbone = backbone.to(device).eval()
    tokens, labels = [], []
    before_fork(num_workers)
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        clips = batch["clips"].to(device)  # B x S x C x T x H x W
        t = clip_tokens(backbone, rearrange(clips, "b s c t h w -> (b s) c t h w"), size=size)
        tokens.append(rearrange(t, "(b s) n d -> b s n d", b=clips.shape[0]).half().cpu())
        labels.append(batch["label"])
    return torch.cat(tokens), torch.cat(labels)


def attentive_probe(train_tokens, train_labels, test_tokens, test_labels, *, epochs: int = 20, lr: float = 1e-3,
                    weight_decay: float = 0.01, batch_size: int = 16, heads: int | None = None, seed: int = 0,
                    device="cpu") -> dict[str, float]:
    """Accuracy (%) of an attentive probe on frozen tokens (V x S x N x D; labels V).

    The tokens of a video's S clips are pooled together (V-JEPA's ``attend_across_segments``): one sample of
    S N tokens per video. AdamW, the learning rate annealed from ``lr`` to 0 by a cosine over ``epochs``
    (``evals/video_classification_frozen/eval.py``: 20 epochs, lr 1e-3, weight decay 0.01).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe = AttentiveProbe(train_tokens.shape[-1], int(max(train_labels.max(), test_labels.max())) + 1,
                               heads=heads).to(device)
    x = rearrange(train_tokens, "v s n d -> v (s n) d")
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    probe.train()
    correct = seen = 0
    for epoch in range(epochs):
        correct = seen = 0
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            logits = probe(x[idx].to(device).float())
            loss = F.cross_entropy(logits, train_labels[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            correct += (logits.argmax(1).cpu() == train_labels[idx]).sum().item()
            seen += len(idx)
    probe.eval()
    with torch.no_grad():
        xt = rearrange(test_tokens, "v s n d -> v (s n) d")
        pred = torch.cat([probe(xt[i:i + batch_size].to(device).float()).argmax(1).cpu()
                          for i in range(0, len(xt), batch_size)])
    return {"test_acc": 100 * (pred == test_labels).float().mean().item(),
            "train_acc_last_epoch": 100 * correct / max(1, seen)}


# ------------------------------------------------------------------------------ V-JEPA's own training recipe
@dataclass(frozen=True)
class ProbeRecipe:
    """How jepa trains and tests its attentive probe (``evals/video_classification_frozen/eval.py`` and ``utils.py``;
    ``configs/evals/vitl16_k400_16x8x3.yaml``). Named departures: torchvision's RandAugment (``num_ops`` ops of
    magnitude ``magnitude``) for timm's ``rand-m7-n4-mstd0.5-inc1``, whose magnitude jitters around 7, and a rejected
    erasing box stays un-erased after 10 tries, as timm's."""

    epochs: int = 20
    segments: int = 8  # clips per video, drawn again every epoch (num_segments), their tokens attended together
    views: int = 3  # spatial views per test clip (num_views_per_segment), softmax averaged
    batch_size: int = 256  # 4 per GPU x 64 GPUs
    lr: float = 1e-3  # start_lr = lr = 1e-3, warm-up 0, cosine to final_lr
    final_lr: float = 0.0
    weight_decay: float = 0.01  # cosine to final_weight_decay; none on biases and 1-D parameters
    final_weight_decay: float = 1e-6
    clip_norm: float = 1.0
    scale: tuple[float, float] = (0.08, 1.0)  # random resized crop, no flip
    ratio: tuple[float, float] = (0.75, 4 / 3)
    num_ops: int = 4
    magnitude: int = 7
    erase: float = 0.25  # random erasing per frame, filled with normal noise ("pixel" mode)


def random_erase(x: torch.Tensor, p: float, g: torch.Generator | None = None, *, area=(0.02, 1 / 3),
                 aspect=(0.3, 1 / 0.3), tries: int = 10) -> torch.Tensor:
    """timm's ``RandomErasing(mode="pixel", max_count=1)`` on every frame of N x C x T x H x W on its own: with
    probability ``p`` a box of ``area`` of the frame and log-uniform ``aspect`` is filled with N(0, 1) noise."""
    n, c, t, h, w = x.shape
    frames = n * t
    hit = torch.rand(frames, generator=g) < p
    bh = bw = torch.zeros(frames, dtype=torch.long)
    found = torch.zeros(frames, dtype=torch.bool)
    for _ in range(tries):  # as timm: try again while the box does not fit
        target = (area[0] + torch.rand(frames, generator=g) * (area[1] - area[0])) * h * w
        ar = torch.exp(math.log(aspect[0]) + torch.rand(frames, generator=g) * (math.log(aspect[1]) - math.log(aspect[0])))
        th, tw = (target * ar).sqrt().round().long(), (target / ar).sqrt().round().long()
        fits = (th < h) & (tw < w) & ~found
        bh, bw = torch.where(fits, th, bh), torch.where(fits, tw, bw)
        found |= fits
    hit &= found
    top = (torch.rand(frames, generator=g) * (h - bh + 1).clamp_min(1)).long()
    left = (torch.rand(frames, generator=g) * (w - bw + 1).clamp_min(1)).long()
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    box = ((rows >= top[:, None, None]) & (rows < (top + bh)[:, None, None]) & (cols >= left[:, None, None])
           & (cols < (left + bw)[:, None, None]) & hit[:, None, None])  # (N T) x H x W
    box = rearrange(box, "(n t) h w -> n 1 t h w", n=n).to(x.device)
    noise = torch.randn(x.shape, generator=g).to(x.device, x.dtype)
    return torch.where(box, noise, x)


def recipe_views(clips: torch.Tensor, size: int, recipe: ProbeRecipe, g: torch.Generator) -> torch.Tensor:
    """Training views of uint8 clips N x C x T x H x W, as jepa's ``VideoTransform``: RandAugment (one draw per
    clip, every frame alike), a random resized crop to ``size`` (no flip), normalisation, random erasing."""
    from torchvision.transforms import v2  # here: torchvision costs a second at import

    randaug = v2.RandAugment(num_ops=recipe.num_ops, magnitude=recipe.magnitude)
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))  # RandAugment draws from torch's RNG
        clips = torch.stack([rearrange(randaug(rearrange(c, "c t h w -> t c h w")), "t c h w -> c t h w")
                             for c in clips])
    crop = AugmentConfig(size=size, crop="resized", scale=recipe.scale, ratio=recipe.ratio, flip=0.0, jitter=0.0,
                         grayscale=0.0, blur=0.0, solarize=0.0)
    return random_erase(normalize(augment(clips, crop, g)), recipe.erase, g)


def attentive_probe_recipe(backbone: nn.Module, train_set, test_set, *, size: int, recipe: ProbeRecipe = ProbeRecipe(),
                           heads: int | None = None, seed: int = 0, device="cpu") -> dict[str, float]:
    """Accuracy (%) of an attentive probe trained as V-JEPA trains it (``ProbeRecipe``): every epoch draws new clips
    (``train_set`` yields ``recipe.segments`` random clips per video, decoded larger than ``size``), augments them and
    encodes them with the frozen backbone; AdamW with a cosine learning rate and weight decay, gradients clipped.
    ``test_set`` yields ``recipe.segments`` clips x ``recipe.views`` spatial views per video (``crops=3``); the
    probe reads each view's segments together and their softmax is averaged."""
    g = torch.Generator().manual_seed(seed)
    backbone = backbone.to(device).eval()
    num_classes = len(train_set.manifest.classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        dim = clip_tokens(backbone, next(iter(DataLoader(test_set, batch_size=1)))["clips"][0, :1].to(device)).shape[-1]
        probe = AttentiveProbe(dim, num_classes, heads=heads).to(device)
    decay = [p for p in probe.parameters() if p.ndim > 1]
    opt = torch.optim.AdamW([{"params": decay}, {"params": [p for p in probe.parameters() if p.ndim <= 1],
                                                 "weight_decay": 0.0, "no_decay": True}], lr=recipe.lr)
    steps_per_epoch = math.ceil(len(train_set) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch

    def cosine(start, end, step):
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * step / total))

    step = 0
    correct = seen = 0
    for epoch in range(recipe.epochs):
        train_set.set_epoch(epoch)  # new clips every epoch
        probe.train()
        correct = seen = 0
        order = torch.randperm(len(train_set), generator=g).tolist()
        for first in range(0, len(order), recipe.batch_size):
            for group in opt.param_groups:  # jepa steps its schedulers before each step
                group["lr"] = cosine(recipe.lr, recipe.final_lr, step + 1)
                if not group.get("no_decay"):
                    group["weight_decay"] = cosine(recipe.weight_decay, recipe.final_weight_decay, step + 1)
            batch = [train_set[i] for i in order[first:first + recipe.batch_size]]
            clips = torch.stack([b["clips"] for b in batch])  # B x S x C x T x H x W uint8
            labels = torch.tensor([b["label"] for b in batch])
            b = clips.shape[0]
            views = recipe_views(rearrange(clips, "b s c t h w -> (b s) c t h w"), size, recipe, g).to(device)
            with torch.no_grad():
                tokens = rearrange(backbone.forward_features(views), "(b s) d t h w -> b (s t h w) d", b=b)
            logits = probe(tokens)
            loss = F.cross_entropy(logits, labels.to(device))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(probe.parameters(), recipe.clip_norm)
            opt.step()
            step += 1
            correct += (logits.argmax(1).cpu() == labels).sum().item()
            seen += b
    probe.eval()
    hits = []
    with torch.no_grad():
        for batch in DataLoader(test_set, batch_size=8):
            clips = batch["clips"].to(device)  # B x (S V) x C x T x s x s, the V crops of clip i at V i ... V i + V - 1
            b = clips.shape[0]
            x = normalize(rearrange(clips, "b sv c t h w -> (b sv) c t h w").float() / 255)
            if x.shape[-1] > size:
                x = center_crop(x, size)
            tokens = rearrange(backbone.forward_features(x), "(b s v) d t h w -> b v (s t h w) d", b=b, v=recipe.views)
            probs = torch.stack([probe(tokens[:, v]).softmax(1) for v in range(recipe.views)]).mean(0)  # B x K
            hits.append((probs.argmax(1).cpu() == batch["label"]))
    return {"test_acc": 100 * torch.cat(hits).float().mean().item(), "train_acc_last_epoch": 100 * correct / max(1, seen),
            "steps": step}
