"""Evaluation protocols for frozen (or fine-tuned) video representations.

* ``extract_features``: pooled backbone features of N evenly spaced clips per video, averaged.
* ``retrieval``: every test video queries the training set by cosine similarity; a top-k
  hit if any of the k nearest shares the label (the IIC / DualVar protocol), k in
  {1, 5, 10, 20, 50}.
* ``linear_probe``: a linear classifier on frozen, L2-normalised features.
* ``knn``: a similarity-weighted k-nearest-neighbour vote (Wu et al., 2018).
* ``finetune``: the whole network trained with labels, tested with averaged clip logits.
* ``linear_eval``: CVRL's linear evaluation: a linear layer on the frozen, L2-normalised
  feature of augmented training clips (crop area 0.3-1, flip), tested with N clips x 3
  crops averaged.
* ``attribute_probe``: a linear probe of any manifest attribute, to see what a
  representation encodes (motion class versus shape or colour).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader

from .augment import AugmentConfig, VideoAugment, resized_crop
from .methods.common import accuracy, normalize, to_float

RETRIEVAL_KS = (1, 5, 10, 20, 50)


@torch.no_grad()
def extract_features(backbone: nn.Module, dataset, *, device="cpu", batch_size: int = 8,
                     num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features (N, D), labels (N,), video indices (N,)); features averaged over each video's clips."""
    backbone = backbone.to(device).eval()
    feats, labels, index = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        clips = batch["clips"].to(device)  # B x S x C x T x H x W
        b = clips.shape[0]
        f = backbone(to_float(rearrange(clips, "b s c t h w -> (b s) c t h w")))  # (B*S) x D
        feats.append(rearrange(f, "(b s) d -> b s d", b=b).mean(1).float().cpu())
        labels.append(batch["label"])
        index.append(batch["index"])
    return torch.cat(feats), torch.cat(labels), torch.cat(index)


def retrieval(train_feats, train_labels, test_feats, test_labels, *, ks=RETRIEVAL_KS,
              center: bool = False) -> dict[str, float]:
    """Top-k retrieval accuracy (%): test queries train by cosine similarity.

    ``center=True`` subtracts the training mean first (DualVar's protocol).
    """
    if center:
        mean = train_feats.mean(0, keepdim=True)
        train_feats, test_feats = train_feats - mean, test_feats - mean
    sim = F.normalize(test_feats, dim=1) @ F.normalize(train_feats, dim=1).T  # Q x N
    k_max = min(max(ks), len(train_labels))
    nearest = sim.topk(k_max, dim=1).indices  # Q x k
    hits = train_labels[nearest] == test_labels[:, None]  # Q x k
    return {f"R@{k}": 100 * hits[:, :min(k, k_max)].any(1).float().mean().item() for k in ks}


def linear_probe(train_feats, train_labels, test_feats, test_labels, *, epochs: int = 200, lr: float = 0.1,
                 weight_decay: float = 1e-4, seed: int = 0) -> dict[str, float]:
    """Accuracy (%) of a linear classifier on frozen, L2-normalised features (full-batch training)."""
    g = torch.Generator().manual_seed(seed)
    x, xt = F.normalize(train_feats.float(), dim=1), F.normalize(test_feats.float(), dim=1)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    w = (torch.randn(x.shape[1], classes, generator=g) * 0.01).requires_grad_()
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        loss = F.cross_entropy(x @ w + b, train_labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        train_acc = ((x @ w + b).argmax(1) == train_labels).float().mean().item()
        test_acc = ((xt @ w + b).argmax(1) == test_labels).float().mean().item()
    return {"train_acc": 100 * train_acc, "test_acc": 100 * test_acc}


def knn(train_feats, train_labels, test_feats, test_labels, *, k: int = 20, temperature: float = 0.07) -> dict:
    """Accuracy (%) of a weighted kNN vote: each neighbour votes with exp(cosine / temperature)."""
    sim = F.normalize(test_feats, dim=1) @ F.normalize(train_feats, dim=1).T  # Q x N
    k = min(k, len(train_labels))
    top, idx = sim.topk(k, dim=1)  # Q x k
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    votes = torch.zeros(len(test_labels), classes).scatter_add_(1, train_labels[idx], (top / temperature).exp())
    return {"test_acc": 100 * (votes.argmax(1) == test_labels).float().mean().item(), "k": k}


def attribute_probe(train_feats, test_feats, train_values: list, test_values: list, **kwargs) -> dict:
    """Linear-probe accuracy (%) for a categorical attribute, with its chance level (majority class)."""
    names = sorted(set(train_values) | set(test_values))
    to_id = {n: i for i, n in enumerate(names)}
    ytr = torch.tensor([to_id[v] for v in train_values])
    yte = torch.tensor([to_id[v] for v in test_values])
    result = linear_probe(train_feats, ytr, test_feats, yte, **kwargs)
    result["chance"] = 100 * np.bincount(yte.numpy(), minlength=len(names)).max() / len(yte)
    return result


@torch.no_grad()
def classify(model: nn.Module, dataset, *, device="cpu", batch_size: int = 8) -> float:
    """Accuracy (%) over ``dataset`` of a model with ``logits(clips)`` (``Supervised``, ``FrozenLinear``)."""
    model = model.to(device).eval()
    correct = total = 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        logits = model.logits(batch["clips"].to(device))
        correct += (logits.argmax(1).cpu() == batch["label"]).sum().item()
        total += len(batch["label"])
    return 100 * correct / total


def finetune(backbone: nn.Module, train_set, test_set, cfg, out, *, num_classes: int, device=None,
             progress: bool = True) -> dict:
    """Train the whole network with labels (``course_lib.train``), then test with averaged clip logits."""
    from .methods import Supervised
    from .train import train

    model = Supervised(backbone, num_classes)
    summary = train(model, train_set, cfg, out, device=device, progress=progress)
    return {"test_acc": classify(model, test_set, device=summary["device"]),
            "train_acc_last_epoch": 100 * summary["final"]["acc"]}


def three_crops(clips: torch.Tensor, size: int) -> torch.Tensor:
    """Square crops of side min(H, W) at the start, centre and end of the longer axis, resized to size.

    N x C x T x H x W uint8 -> 3 x N x C x T x size x size float in [0, 1].
    """
    n, _, _, h, w = clips.shape
    s = min(h, w)
    offsets = [0, (max(h, w) - s) // 2, max(h, w) - s]
    boxes = [torch.tensor([[o, 0, s, s] if h > w else [0, o, s, s]] * n, device=clips.device) for o in offsets]
    return torch.stack([resized_crop(clips, b, size) for b in boxes])


class FrozenLinear(nn.Module):
    """A linear classifier on a frozen backbone's L2-normalised pooled feature (CVRL, section 4.1).

    Training clips are augmented (random resized crop with area 0.3-1, flip); the backbone
    stays in eval mode, so its batch-norm statistics do not move either.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, size: int,
                 augment: AugmentConfig = AugmentConfig(scale=(0.3, 1.0), jitter=0.0, grayscale=0.0)):
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.fc = nn.Linear(backbone.feature_dim, num_classes)
        self.augment = VideoAugment(augment, size=size)
        self.size = size

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.normalize(self.backbone(normalize(x)), dim=1)  # B x D

    def forward(self, batch: dict):
        logits = self.fc(self.features(self.augment(batch["clips"][:, 0])))  # B x K
        loss = F.cross_entropy(logits, batch["label"])
        return loss, {"loss": loss.item(), "acc": accuracy(logits, batch["label"])}

    @torch.no_grad()
    def logits(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 B x S x C x T x H x W -> logits averaged over the S clips and 3 crops, B x K."""
        b = clips.shape[0]
        crops = three_crops(rearrange(clips, "b s c t h w -> (b s) c t h w"), self.size)  # 3 x BS x C x T x H x W
        out = torch.stack([self.fc(self.features(c)) for c in crops])  # 3 x BS x K
        return rearrange(out, "k (b s) n -> b (k s) n", b=b).mean(1)


def linear_eval(backbone: nn.Module, train_set, test_set, cfg, out, *, num_classes: int, size: int, device=None,
                progress: bool = True) -> dict:
    """Train ``FrozenLinear`` with ``course_lib.train`` (config ``cfg``), then test with clips x 3 crops."""
    from .train import train

    model = FrozenLinear(backbone, num_classes, size=size)
    summary = train(model, train_set, cfg, out, device=device, progress=progress)
    return {"test_acc": classify(model, test_set, device=summary["device"]),
            "train_acc_last_epoch": 100 * summary["final"]["acc"]}
