"""V-JEPA: latent prediction of masked space-time blocks (Bardes, Garrido, Ponce, Chen, Rabbat,
LeCun, Assran, Ballas, *Revisiting Feature Prediction for Learning Visual Representations from
Video*, 2024; code facebookresearch/jepa).

Where VideoMAE reconstructs pixels, V-JEPA predicts *features*. A target encoder, an
exponential moving average of the context encoder (the backbone) with its momentum raised
linearly from ``momentum`` towards 1, encodes every token of the clip; its outputs, layer-normed,
are the targets. The context encoder sees only the tokens outside a multi-block mask
(``masking.multiblock_mask``: large rectangles through the whole clip, about 90% of the tokens
in all for the long-range set). A narrow predictor (a Transformer of width ``predictor_dim``)
takes the encoded context and one mask token per hidden position, each with its position code,
and predicts the target features of the hidden tokens. The loss is the L1 distance, averaged
over the hidden tokens and over the mask sets (``masks``: V-JEPA's short-range set of 8 blocks of
15% of the frame each and long-range set of 2 blocks of 70% each, both through every frame).
There is no pixel target and no negative: the EMA target and the predictor keep the features
from collapsing, as in BYOL.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import AugmentConfig, VideoAugment
from ..losses import momentum_update
from ..models.vit import gather_tokens
from .common import normalize
from .masking import multiblock_mask, trimmed_indices
from ..runtime import send
from ..settings import integer, number
from .registry import Method, register_method
from .videomae import MaskedDecoder, needs_vit

# V-JEPA's pretraining augmentation (configs/pretrain/vitl16.yaml): a random resized crop of area 0.3-1 and
# aspect ratio 0.75-1.35, a horizontal flip, no colour changes
JEPA_AUGMENT = AugmentConfig(scale=(0.3, 1.0), ratio=(0.75, 1.35), flip=0.5, jitter=0.0, grayscale=0.0)


def linear_momentum(start: float, end: float, progress: float, horizon: float = 1.0) -> float:
    """The EMA momentum at ``progress`` (0 to 1) of training: linear from ``start`` to ``end`` over ``horizon``
    times the training length (jepa's ``momentum_scheduler`` spans ``ipe_scale`` = 1.25 times the iterations)."""
    return start + (end - start) * min(1.0, progress / horizon)


def l1_feature_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean |pred - target| over every hidden token and channel (jepa's ``loss_exp`` = 1)."""
    return (pred - target).abs().mean()


@register_method("vjepa", augments=True)
class VJEPA(Method):
    option_rules = {"predictor_depth": integer(1), "predictor_dim": integer(1, optional=True),
                    "momentum_horizon": number(above=0)}
    vit_only = True
    evaluated = "target"  # jepa's frozen evaluation reads the EMA target encoder (checkpoint_key: target_encoder)

    def __init__(self, backbone: nn.Module, *, size: int = 112, augment: AugmentConfig = JEPA_AUGMENT,
                 masks: tuple = ((8, 0.15), (2, 0.7)), aspect: tuple[float, float] = (0.75, 1.5),
                 predictor_depth: int = 12, predictor_dim: int | None = None, momentum: float = 0.998,
                 momentum_horizon: float = 1.25):
        super().__init__()
        vit = needs_vit("vjepa", backbone)
        masks = tuple((int(n), float(s)) for n, s in masks)
        if not masks or any(n < 1 or not 0 < s <= 1 for n, s in masks):
            raise ValueError(f"vjepa masks must be (blocks >= 1, scale in (0, 1]) pairs, not {masks}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"vjepa momentum must be in [0, 1), not {momentum}.")
        self.backbone = backbone
        self.target = copy.deepcopy(backbone).requires_grad_(False)
        heads = vit.heads
        dim = predictor_dim or vit.feature_dim * 3 // 8  # ViT-L 1024 -> 384, the public predictor
        dim = max(heads, round(dim / heads) * heads)
        self.predictor = MaskedDecoder(vit.feature_dim, dim, predictor_depth, heads, vit.feature_dim, vit.pos,
                                       embed_bias=True, zero_mask_token=True, mask_tokens=len(masks))
        self.augment = VideoAugment(augment, size=size)
        self.masks, self.aspect = masks, tuple(aspect)
        self.base_momentum, self.horizon = momentum, momentum_horizon
        self.momentum = momentum  # this step's, set from the training progress (so a resumed run has it too)

    def clip_groups(self) -> list:
        """The encoder and the predictor, clipped apart (jepa ``app/vjepa/train.py``: one ``clip_grad_norm_`` each)."""
        return [self.backbone.parameters(), self.predictor.parameters()]

    def set_progress(self, progress: float) -> None:
        self.momentum = linear_momentum(self.base_momentum, 1.0, progress, self.horizon)

    def forward(self, batch: dict):
        x = self.augment(batch["clips"][:, 0])  # B x C x T x H x W in [0, 1]
        vit = self.backbone
        grid = vit.grid(x.shape)
        x = normalize(x)
        with torch.no_grad():
            momentum_update(self.target, self.backbone, self.momentum)
            h = self.target.tokens(x)  # B x N x D: the target encoder sees every token
            h = F.layer_norm(h, h.shape[-1:])
        masks = batch.get("mask")  # B x S x N, S mask sets, True = target; drawn here (on the host) unless given
        if masks is None:
            masks = torch.stack([multiblock_mask(x.shape[0], grid, blocks=n, scale=s, aspect=self.aspect)
                                 for n, s in self.masks], 1)
        masks = masks.cpu()  # indices found on the host and sent without waiting: a step never waits for the device
        losses, hidden = [], []
        for i in range(masks.shape[1]):
            context, targets = (send(t, x.device) for t in trimmed_indices(masks[:, i]))  # B x K, B x M
            z = vit.tokens(x, keep=context)  # B x K x D: the context encoder sees the context tokens only
            pred = self.predictor(z, context, targets, grid, which=min(i, len(self.masks) - 1))  # B x M x D
            losses.append(l1_feature_loss(pred.float(), gather_tokens(h, targets).float()))
            hidden.append(targets.shape[1] / masks.shape[-1])
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.detach(), "momentum": self.momentum, "masked_share": sum(hidden) / len(hidden)}
