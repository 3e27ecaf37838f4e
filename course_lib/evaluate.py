"""Evaluation protocols for frozen (or fine-tuned) video representations, behind one table.

``PROTOCOLS`` maps a name to a function ``(EvalContext, **options) -> dict``; its keyword
options are the protocol's own (``RunConfig.eval_options``), and ``train_defaults`` the
training settings a protocol that trains starts from (before a config file and ``key=value``
overrides). The building blocks are public, for notebooks and research code:

* ``eval_set``, ``train_clips``: the clips a protocol tests and trains on.
* ``extract_features``, ``frozen_features``: clip-averaged features of N evenly spaced clips
  per video: the backbone's pooled feature, or IIC's (``feature="iic"``: the last conv block's
  output max-pooled (1, 2, 2) and flattened, from centre-cropped frames, as
  ``retrieve_clips.py`` of BestJuly/IIC); RGB or residual input (``view``).
* ``retrieval``: every test video queries the training set by cosine similarity; a top-k hit
  if any of the k nearest shares the label (IIC, DualVar), k in {1, 5, 10, 20, 50}; optional
  mean-centring (DualVar's public code: each set minus its own mean).
* ``linear_probe``: a linear classifier on frozen, L2-normalised features.
* ``knn``: a similarity-weighted k-nearest-neighbour vote (Wu et al., 2018).
* ``finetune``: the whole network trained with labels on randomly cropped (and flipped, where a
  flip keeps the class: ``label_safe_flip``) clips, tested on centre crops with averaged clip logits.
* ``linear_eval``: CVRL's linear evaluation: a linear layer on the frozen, L2-normalised
  feature of augmented training clips (crop area 0.3-1, aspect 0.5-2, flip where a flip keeps
  the class), tested with N clips x 3 crops along the long side, softmax averaged.
* ``attentive``: V-JEPA's attentive probe, a learnt query pooling the frozen tokens (``course_lib.attentive``).
* ``attribute_probe``: a linear probe of any manifest attribute, to see what a
  representation encodes (motion class versus shape or colour).
* ``bias_probes``: the motion class on the static-bias twin and on the plain data, and the
  appearance attributes, for one representation.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader

from .augment import AugmentConfig, VideoAugment, center_crop, crop_room, residual_frames, reverse
from .data import ClipDataset, Manifest, RandomClipSampler, UniformClipSampler
from .data.synth import MIRRORED
from .attentive import ProbeRecipe, attentive_probe, attentive_probe_recipe, extract_tokens
from .machine import get_device
from .methods import Supervised
from .methods.common import accuracy, normalize
from .train import train
from .video import before_fork

RETRIEVAL_KS = (1, 5, 10, 20, 50)


FEATURES = ("pooled", "iic")
VIEWS = ("rgb", "residual")


def clip_features(backbone: nn.Module, clips: torch.Tensor, *, feature: str = "pooled", view: str = "rgb",
                  size: int | None = None) -> torch.Tensor:
    """Features of uint8 clips N x C x T x H x W: N x D.

    ``feature="pooled"``: the backbone's pooled feature. ``feature="iic"``: its last feature map
    max-pooled over (1, 2, 2) windows and flattened (IIC's ``return_conv``). Frames larger than
    ``size`` are centre-cropped first; ``view="residual"`` feeds residual frames.
    """
    x = clips.float() / 255
    if size and min(x.shape[-2:]) > size:
        x = center_crop(x, size)
    x = normalize(residual_frames(x) if view == "residual" else x)
    if feature == "pooled":
        return backbone(x)  # N x D
    fmap = backbone(x, return_map=True)[1]  # N x C x t x h x w
    return F.max_pool3d(fmap, (1, 2, 2), (1, 2, 2)).flatten(1) if min(fmap.shape[-2:]) >= 2 else fmap.flatten(1)


@torch.no_grad()
def extract_features(backbone: nn.Module, dataset, *, device="cpu", batch_size: int = 8, num_workers: int = 0,
                     feature: str = "pooled", view: str = "rgb", size: int | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features (N, D), labels (N,), video indices (N,)); features averaged over each video's clips.

    ``feature``, ``view`` and ``size`` as ``clip_features``.
    """
    if feature not in FEATURES or view not in VIEWS:
        raise ValueError(f"feature must be one of {', '.join(FEATURES)} and view one of {', '.join(VIEWS)} "
                         f"(got {feature!r}, {view!r}).")
    backbone = backbone.to(device).eval()
    feats, labels, index = [], [], []
    before_fork(num_workers)
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        clips = batch["clips"].to(device)  # B x S x C x T x H x W
        b = clips.shape[0]
        f = clip_features(backbone, rearrange(clips, "b s c t h w -> (b s) c t h w"), feature=feature, view=view,
                          size=size)  # (B*S) x D
        feats.append(rearrange(f, "(b s) d -> b s d", b=b).mean(1).float().cpu())
        labels.append(batch["label"])
        index.append(batch["index"])
    return torch.cat(feats), torch.cat(labels), torch.cat(index)


CENTERING = ("none", "train", "each")


def retrieval(train_feats, train_labels, test_feats, test_labels, *, ks=RETRIEVAL_KS,
              center: str | bool = "none") -> dict[str, float]:
    """Top-k retrieval accuracy (%): test queries train by cosine similarity.

    ``center``: "none"; "train", both sets minus the training mean; "each", each set minus its
    own mean (DualVar's public code, ``classifier.py`` ``test_retrieval``). ``True`` means "train".
    """
    center = {True: "train", False: "none"}.get(center, center)
    if center not in CENTERING:
        raise ValueError(f"retrieval center {center!r} is not one of {', '.join(CENTERING)}.")
    if center == "train":
        mean = train_feats.mean(0, keepdim=True)
        train_feats, test_feats = train_feats - mean, test_feats - mean
    elif center == "each":
        train_feats, test_feats = train_feats - train_feats.mean(0), test_feats - test_feats.mean(0)
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


# fine-tuning's training clips: a random crop from larger frames and a horizontal flip, no colour changes
FINETUNE_AUGMENT = AugmentConfig(crop="random", flip=0.5, jitter=0.0, grayscale=0.0, blur=0.0, solarize=0.0)


def label_safe_flip(classes) -> float:
    """The flip probability for training with labels: the papers' 0.5, or 0 where a horizontal flip
    turns one of ``classes`` into another (the built-in data's ``synth.MIRRORED`` pairs). There, a
    flipped move_left clip still labelled move_left teaches that left and right are one class, and
    caps the accuracy at 75% (half of the four mirrored classes' clips, in expectation)."""
    return 0.0 if any(MIRRORED.get(c) in classes for c in classes) else 0.5


def finetune_augment(classes) -> AugmentConfig:
    """``FINETUNE_AUGMENT`` with ``label_safe_flip(classes)``."""
    return replace(FINETUNE_AUGMENT, flip=label_safe_flip(classes))


def finetune(backbone: nn.Module, train_set, test_set, cfg, out, *, num_classes: int, device=None,
             progress: bool = True, size: int | None = None, augment: AugmentConfig | str | None = "auto",
             view: str = "rgb") -> dict:
    """Train the whole network with labels (``course_lib.train``), then test with averaged clip logits.

    With ``augment`` (and ``size``), training clips are cropped (and flipped) on the device from
    the larger frames of ``train_set``; test clips larger than ``size`` are centre-cropped.
    ``augment="auto"`` is ``finetune_augment`` of ``train_set``'s classes: it flips only where a
    flip keeps the class. ``view="residual"`` trains and tests on residual frames.
    """
    if augment == "auto":
        augment = finetune_augment(train_set.manifest.classes)
    model = Supervised(backbone, num_classes, size=size, augment=augment if size else None, view=view)
    summary = train(model, train_set, cfg, out, device=device, progress=progress)
    return {"test_acc": classify(model, test_set, device=summary["device"]),
            "train_acc_last_epoch": 100 * summary["final"]["acc"]}


# CVRL's linear evaluation (cvrl_linear_eval_k600.yaml): crop area 0.3-1, aspect 0.5-2, flip, no colour
LINEAR_EVAL_AUGMENT = AugmentConfig(scale=(0.3, 1.0), ratio=(0.5, 2.0), flip=0.5, jitter=0.0, grayscale=0.0)


class FrozenLinear(nn.Module):
    """A linear classifier on a frozen backbone's L2-normalised pooled feature (CVRL, section 4.1).

    Training clips are augmented (``LINEAR_EVAL_AUGMENT``); the backbone stays in eval mode, so
    its batch-norm statistics do not move either. At test time every clip and crop is
    classified and the softmax probabilities averaged, as the official evaluation does.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, size: int,
                 augment: AugmentConfig = LINEAR_EVAL_AUGMENT):
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
        return loss, {"loss": loss.detach(), "acc": accuracy(logits, batch["label"])}

    @torch.no_grad()
    def logits(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 B x V x C x T x H x W (V views: clips x crops) -> log of the mean softmax over the views, B x K."""
        b = clips.shape[0]
        x = rearrange(clips, "b v c t h w -> (b v) c t h w").float() / 255
        probs = self.fc(self.features(x)).softmax(1)  # (B*V) x K
        return rearrange(probs, "(b v) k -> b v k", b=b).mean(1).log()


def linear_eval(backbone: nn.Module, train_set, test_set, cfg, out, *, num_classes: int, size: int, device=None,
                progress: bool = True, augment: AugmentConfig | str = "auto") -> dict:
    """Train ``FrozenLinear`` with ``course_lib.train`` (config ``cfg``), then test on every view of ``test_set``.
    ``augment="auto"``: ``LINEAR_EVAL_AUGMENT``, flipping only where a flip keeps ``train_set``'s classes."""
    if augment == "auto":
        augment = replace(LINEAR_EVAL_AUGMENT, flip=label_safe_flip(train_set.manifest.classes))
    model = FrozenLinear(backbone, num_classes, size=size, augment=augment)
    summary = train(model, train_set, cfg, out, device=device, progress=progress)
    return {"test_acc": classify(model, test_set, device=summary["device"]),
            "train_acc_last_epoch": 100 * summary["final"]["acc"]}


# ----------------------------------------------------------------------------- the protocols, by name
def eval_set(cfg, manifest: Manifest, split: str, *, frames: int | None = None, crops: int = 1) -> ClipDataset:
    """``cfg.test_clips`` evenly spaced clips per video of one split: what protocols test on.

    Frames are decoded square at ``frames`` px (default ``cfg.size``); with ``crops=3``, at a short
    side of ``frames`` px, aspect kept, and cut into three square crops along the long side.
    """
    sampler = UniformClipSampler(clip_len=cfg.clip_len, stride=cfg.stride, num_clips=cfg.test_clips)
    frames = frames or cfg.size
    if crops == 3:
        return ClipDataset(manifest, sampler, split=split, short_side=frames, crops=3)
    return ClipDataset(manifest, sampler, split=split, size=(frames, frames))


def train_clips(cfg, manifest: Manifest, size: int) -> ClipDataset:
    """One random clip per training video, frames decoded at size x size (protocols that train)."""
    return ClipDataset(manifest, RandomClipSampler(clip_len=cfg.clip_len, stride=cfg.stride), split="train",
                       size=(size, size), seed=cfg.seed)


def frozen_features(backbone: nn.Module, cfg, manifest: Manifest, device, *, feature: str = "pooled",
                    view: str = "rgb") -> tuple:
    """(train features, train labels, test features, test labels), clip-averaged, from ``eval_set``.

    ``feature="iic"`` decodes frames at ``crop_room(cfg.size)`` and centre-crops them to ``cfg.size``
    (IIC's 112 of 128 x 171).
    """
    frames = crop_room(cfg.size) if feature == "iic" else cfg.size
    (a, ya, _), (b, yb, _) = (extract_features(backbone, eval_set(cfg, manifest, s, frames=frames), device=device,
                                               num_workers=cfg.num_workers, feature=feature, view=view,
                                               size=cfg.size) for s in ("train", "test"))
    return a, ya, b, yb


def frozen_scores(backbone: nn.Module, cfg, manifest: Manifest, *, device=None, ks: tuple[int, ...] = (1, 5, 10),
                  feature: str = "pooled", view: str = "rgb", center: str = "none") -> dict:
    """Linear-probe accuracy and retrieval R@k (%) of a frozen backbone, from one feature extraction."""
    a, ya, b, yb = frozen_features(backbone, cfg, manifest, get_device(device or cfg.device), feature=feature,
                                   view=view)
    return {"linear": linear_probe(a, ya, b, yb)["test_acc"], **retrieval(a, ya, b, yb, ks=ks, center=center)}


APPEARANCE = ("color", "background", "shape")  # the attributes the static-bias twin ties to the class


def bias_probes(backbone: nn.Module, cfg, plain: Manifest, twin: Manifest, device, *,
                attributes: tuple[str, ...] = APPEARANCE, view: str = "rgb", extract=None) -> dict[str, float]:
    """Both sides of the static-bias twin, for one frozen representation (accuracies and R@1 in %).

    ``twin`` and ``R@1 twin``: the linear probe and retrieval of the motion class on the twin, where
    appearance names the class. ``plain``: the linear probe on the built-in data, where it does not.
    One linear probe per attribute, read on the plain data: there the attributes are independent of
    the class, so each probe reads only its attribute. ``backbone`` is any module from clips to one
    vector per clip (a backbone, or a backbone followed by a projection head); ``view`` the input it was
    trained on ("residual": residual frames). ``extract``: how features are made, ``frozen_features`` (None) or
    a function with its arguments (one that reads them from a cache: ``results.Scoring.frozen``).
    """
    extract = extract or frozen_features
    a, ya, b, yb = extract(backbone, cfg, plain, device, view=view)
    t = extract(backbone, cfg, twin, device, view=view)
    row = {"twin": linear_probe(*t)["test_acc"], "R@1 twin": retrieval(*t, ks=(1,))["R@1"],
           "plain": linear_probe(a, ya, b, yb)["test_acc"]}
    train, test = plain.split("train").entries, plain.split("test").entries
    for attr in attributes:
        row[attr] = attribute_probe(a, b, [e.attrs[attr] for e in train], [e.attrs[attr] for e in test])["test_acc"]
    return row


def test_centre_clips(cfg, manifest: Manifest) -> torch.Tensor:
    """One centre clip per test video, uint8 N x C x T x H x W at ``cfg``'s clip length, stride and size."""
    test = ClipDataset(manifest, UniformClipSampler(clip_len=cfg.clip_len, stride=cfg.stride, num_clips=1),
                       split="test", size=(cfg.size, cfg.size))
    return torch.stack([test[i]["clips"][0] for i in range(len(test))])


@torch.no_grad()
def paired_similarity(backbone: nn.Module, clips: torch.Tensor, change, *, device="cpu", view: str = "rgb",
                      batch_size: int = 16) -> float:
    """Mean cosine similarity between the features of uint8 clips N x C x T x H x W and of ``change(clips)``
    (``reverse``: played backwards; a flip of the last axis: mirrored). Near 1: the feature barely notices the
    change. ``view="residual"`` feeds residual frames, as a run trained on them sees its input."""
    backbone.to(device).eval()
    sims = []
    for x in clips.split(batch_size):
        x = x.to(device).float() / 255
        a, b = (backbone(normalize(residual_frames(v) if view == "residual" else v)) for v in (x, change(x)))
        sims.append(F.cosine_similarity(a, b, dim=1))
    return torch.cat(sims).mean().item()


def reversal_similarity(backbone: nn.Module, clips: torch.Tensor, **kwargs) -> float:
    """cos(clip, reversed clip): how little the feature cares about the direction of time (``paired_similarity``)."""
    return paired_similarity(backbone, clips, reverse, **kwargs)


def mirror_similarity(backbone: nn.Module, clips: torch.Tensor, **kwargs) -> float:
    """cos(clip, mirrored clip): how little the feature cares about left and right (``paired_similarity``)."""
    return paired_similarity(backbone, clips, lambda x: x.flip(-1), **kwargs)


def mirror_pairs(classes: list[str]) -> list[tuple[int, int]]:
    """Index pairs of ``classes`` that a horizontal flip swaps (``synth.MIRRORED``), each pair once."""
    return [(i, classes.index(MIRRORED[c])) for i, c in enumerate(classes)
            if MIRRORED.get(c) in classes and i < classes.index(MIRRORED[c])]


def direction_probe(train_feats, train_labels, test_feats, test_labels, pairs: list[tuple[int, int]]) -> float:
    """Mean test accuracy (%) over ``pairs`` of a linear probe trained on the two classes of a pair only
    (chance 50): does the feature tell a motion from its mirror image?"""
    accs = []
    for i, j in pairs:
        train, test = (train_labels == i) | (train_labels == j), (test_labels == i) | (test_labels == j)
        accs.append(linear_probe(train_feats[train], (train_labels[train] == j).long(), test_feats[test],
                                 (test_labels[test] == j).long())["test_acc"])
    return sum(accs) / len(accs)


@dataclass
class EvalContext:
    """What a protocol works with: the backbone, the run config, the data, and where to write."""

    backbone: nn.Module
    cfg: Any  # a RunConfig
    manifest: Manifest
    device: torch.device
    out: Path
    progress: bool = True

    def features(self, feature: str = "pooled", view: str = "rgb") -> tuple:
        return frozen_features(self.backbone, self.cfg, self.manifest, self.device, feature=feature, view=view)


@dataclass(frozen=True)
class Protocol:
    run: Callable[..., dict]  # (EvalContext, **options) -> results
    train_defaults: Callable[[Any], dict] = lambda cfg: {}  # RunConfig changes a training protocol starts from

    @property
    def options(self) -> list[str]:
        return [n for n in inspect.signature(self.run).parameters if n != "ctx"]


PROTOCOLS: dict[str, Protocol] = {}


def protocol(name: str, **kwargs):
    """Decorator: add ``fn(ctx, **options) -> dict`` to ``PROTOCOLS`` under ``name``."""

    def add(fn):
        PROTOCOLS[name] = Protocol(fn, **kwargs)
        return fn

    return add


def check_eval_options(options: dict) -> None:
    """ValueError naming the first eval option that no protocol takes."""
    known = sorted({o for p in PROTOCOLS.values() for o in p.options})
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"no protocol has the option {unknown[0]!r}; options: {', '.join(known)}.")


def run_protocol(name: str, ctx: EvalContext, options: dict | None = None) -> dict:
    """Run protocol ``name``; of ``options``, it takes the ones it has (the others belong to other protocols)."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose {', '.join(PROTOCOLS)}.")
    options = options or {}
    check_eval_options(options)
    p = PROTOCOLS[name]
    return p.run(ctx, **{k: v for k, v in options.items() if k in p.options})


def _frozen(ctx: EvalContext, feature: str, merge: bool, view: str) -> tuple:
    """Frozen features; ``merge`` concatenates the RGB and residual features (IIC's ``--merge``)."""
    a, ya, b, yb = ctx.features(feature, view)
    if merge:
        other = "residual" if view == "rgb" else "rgb"
        a2, _, b2, _ = ctx.features(feature, other)
        a, b = torch.cat([a, a2], 1), torch.cat([b, b2], 1)
    return a, ya, b, yb


@protocol("retrieval")
def _retrieval(ctx: EvalContext, *, feature: str = "pooled", view: str = "rgb", merge: bool = False,
               center: str = "none") -> dict:
    a, ya, b, yb = _frozen(ctx, feature, merge, view)
    return {**retrieval(a, ya, b, yb, ks=RETRIEVAL_KS, center=center), "feature": feature, "view": view,
            "merge": merge, "center": center}


@protocol("linear")
def _linear(ctx: EvalContext, *, feature: str = "pooled", view: str = "rgb", merge: bool = False) -> dict:
    return linear_probe(*_frozen(ctx, feature, merge, view))


@protocol("knn")
def _knn(ctx: EvalContext, *, feature: str = "pooled", view: str = "rgb", merge: bool = False, k: int = 20) -> dict:
    return knn(*_frozen(ctx, feature, merge, view), k=k)


@protocol("finetune")
def _finetune(ctx: EvalContext, *, view: str = "rgb", flip: float | None = None) -> dict:
    """Random crops of ``cfg.size`` from frames decoded at ``crop_room(cfg.size)`` (and flips: 0.5, or none where a
    flip changes the class, ``label_safe_flip``), then centre crops."""
    cfg, room = ctx.cfg, crop_room(ctx.cfg.size)
    flip = label_safe_flip(ctx.manifest.classes) if flip is None else flip
    result = finetune(ctx.backbone, train_clips(cfg, ctx.manifest, room), eval_set(cfg, ctx.manifest, "test",
                                                                                   frames=room),
                      cfg.train_config(), ctx.out, num_classes=len(ctx.manifest.classes), device=ctx.device,
                      progress=ctx.progress, size=cfg.size, augment=replace(FINETUNE_AUGMENT, flip=flip), view=view)
    return {**result, "view": view, "flip": flip}


def _linear_eval_defaults(cfg) -> dict:
    """CVRL's linear evaluation: SGD, lr 32 at batch 1024 (scaled to the batch), cosine, a linear warm-up
    over the first 5% of the epochs (1,787 of 35,744 steps), no weight decay."""
    return dict(optimizer="sgd", momentum=0.9, weight_decay=0.0, schedule="cosine", lr=32 * cfg.batch_size / 1024,
                warmup_epochs=cfg.epochs / 20)


@protocol("cvrl-linear", train_defaults=_linear_eval_defaults)
def _cvrl_linear(ctx: EvalContext, *, test_size: int | None = None, flip: float | None = None) -> dict:
    """Training clips at ``crop_room(size)``, cropped (and flipped: 0.5, or none where a flip changes the class,
    ``label_safe_flip``) on the device; test frames at a short side of ``test_size`` (default
    ``crop_room(size)``, the official 256 for 224), three crops each."""
    cfg, room = ctx.cfg, crop_room(ctx.cfg.size)
    test_size = test_size or room
    flip = label_safe_flip(ctx.manifest.classes) if flip is None else flip
    result = linear_eval(ctx.backbone, train_clips(cfg, ctx.manifest, room),
                         eval_set(cfg, ctx.manifest, "test", frames=test_size, crops=3), cfg.train_config(), ctx.out,
                         num_classes=len(ctx.manifest.classes), size=cfg.size, device=ctx.device,
                         progress=ctx.progress, augment=replace(LINEAR_EVAL_AUGMENT, flip=flip))
    return {**result, "test_size": test_size, "views_per_video": 3 * cfg.test_clips, "flip": flip}


@protocol("attentive")
def _attentive(ctx: EvalContext, *, probe_epochs: int = 20, probe_lr: float = 1e-3, recipe: str = "tokens") -> dict:
    """V-JEPA's attentive probe (``course_lib.attentive``), the tokens of a video's clips pooled together.
    ``recipe="tokens"``: trained on the frozen tokens of ``cfg.test_clips`` evenly spaced clips per video,
    extracted once (cheap, the course notebooks' default); ``recipe="jepa"``: trained as V-JEPA trains it
    (``attentive.ProbeRecipe``: new augmented clips every epoch, 8 segments x 3 views at test)."""
    cfg = ctx.cfg
    heads = getattr(ctx.backbone, "heads", None)  # a ViT's own head count, as the public probe; else up to 16
    if recipe == "jepa":
        plan = replace(ProbeRecipe(), epochs=probe_epochs, lr=probe_lr)
        train = ClipDataset(ctx.manifest, RandomClipSampler(clip_len=cfg.clip_len, stride=cfg.stride,
                                                            num_clips=plan.segments),
                            split="train", size=(crop_room(cfg.size),) * 2, seed=cfg.seed)
        test = eval_set(replace(cfg, test_clips=plan.segments), ctx.manifest, "test", frames=cfg.size,
                        crops=plan.views)
        result = attentive_probe_recipe(ctx.backbone, train, test, size=cfg.size, recipe=plan, heads=heads,
                                        seed=cfg.seed, device=ctx.device)
        return {**result, "recipe": recipe, "probe_epochs": probe_epochs, "probe_lr": probe_lr}
    if recipe != "tokens":
        raise ValueError(f"attentive recipe {recipe!r} is not one of tokens, jepa.")
    (a, ya), (b, yb) = (extract_tokens(ctx.backbone, eval_set(cfg, ctx.manifest, split), device=ctx.device,
                                       num_workers=cfg.num_workers, size=cfg.size) for split in ("train", "test"))
    result = attentive_probe(a, ya, b, yb, epochs=probe_epochs, lr=probe_lr, heads=heads, seed=cfg.seed,
                             device=ctx.device)
    return {**result, "recipe": recipe, "tokens_per_clip": a.shape[2], "probe_epochs": probe_epochs,
            "probe_lr": probe_lr}
