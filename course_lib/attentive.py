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

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader

from .augment import center_crop
from .methods.common import normalize
from .models.vit import init_weights


class CrossAttentionBlock(nn.Module):
    """q + attention(q, norm(x)), then q + mlp(norm(q)): learnt queries read a set of tokens. As the public
    code runs it, the attention output has no projection (``CrossAttention.proj`` in ``src/models/utils/modules.py``
    is defined but never applied)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
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
