"""R3D-50, the backbone of CVRL (Qian et al., *Spatiotemporal Contrastive Video
Representation Learning*, CVPR 2021).

A ResNet-50 with 3D bottlenecks in the SlowOnly layout, as the official config
(``official/projects/video_ssl/configs/experiments/cvrl_pretrain_k600_200ep.yaml``:
``stem_conv_temporal_kernel_size: 5``, ``stem_conv_temporal_stride: 2``,
``stem_pool_temporal_stride: 1``): a 5x7x7 stem convolution with temporal stride 2, so 16
input frames leave the stem as 8 time steps; temporal kernel 1 in res2-res3 and 3 in
res4-res5 (in the first 1x1 of each bottleneck); no further temporal down-sampling.
31.7M parameters at width 1 (without a classifier). ``stem_temporal_stride=1`` keeps every
time step (twice the compute), the form of earlier versions of this course.
``slow_r50`` is the Slow pathway of SlowFast (rho-BYOL's backbone): a 1x7x7 stem, no temporal stride.

Every BatchNorm starts at scale 1, the last of each bottleneck included, as both official codes do
(TF Model Garden ``nn_blocks_3d.BottleneckBlock3D``: ``_norm3`` with the default initialiser; SlowFast:
``ZERO_INIT_FINAL_BN`` False in the rho-BYOL configs). ``zero_init_residual=True`` starts each residual
branch at zero instead (Goyal et al. 2017), the form of earlier versions of this course.
"""
from __future__ import annotations

from torch import nn

from .registry import Backbone, head, register, scaled


class Bottleneck3D(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, *, temporal_kernel: int, stride: int = 1, zero_init: bool = False):
        super().__init__()
        out = planes * self.expansion
        t = temporal_kernel
        self.conv_a = nn.Conv3d(inplanes, planes, kernel_size=(t, 1, 1), padding=(t // 2, 0, 0), bias=False)
        self.bn_a = nn.BatchNorm3d(planes)
        self.conv_b = nn.Conv3d(planes, planes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                                padding=(0, 1, 1), bias=False)
        self.bn_b = nn.BatchNorm3d(planes)
        self.conv_c = nn.Conv3d(planes, out, kernel_size=1, bias=False)
        self.bn_c = nn.BatchNorm3d(out)
        if zero_init:
            nn.init.zeros_(self.bn_c.weight)  # each residual branch starts as the identity
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or inplanes != out:
            self.shortcut = nn.Sequential(nn.Conv3d(inplanes, out, kernel_size=1, stride=(1, stride, stride),
                                                    bias=False), nn.BatchNorm3d(out))

    def forward(self, x):
        y = self.relu(self.bn_a(self.conv_a(x)))
        y = self.relu(self.bn_b(self.conv_b(y)))
        y = self.bn_c(self.conv_c(y))
        return self.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class R3D50(Backbone):
    def __init__(self, *, num_classes: int | None = None, width: float = 1.0, depth=(3, 4, 6, 3),
                 temporal_kernels=(1, 1, 3, 3), stem_temporal_kernel: int = 5, stem_temporal_stride: int = 2,
                 zero_init_residual: bool = False):
        super().__init__()
        c = scaled(64, width)
        t = stem_temporal_kernel
        self.stem = nn.Sequential(
            nn.Conv3d(3, c, kernel_size=(t, 7, 7), stride=(stem_temporal_stride, 2, 2), padding=(t // 2, 3, 3),
                      bias=False),
            nn.BatchNorm3d(c), nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
        stages, inplanes = [], c
        for i, (blocks, tk) in enumerate(zip(depth, temporal_kernels)):
            planes = scaled(64 * 2**i, width)
            layer = [Bottleneck3D(inplanes, planes, temporal_kernel=tk, stride=1 if i == 0 else 2,
                                  zero_init=zero_init_residual)]
            inplanes = planes * Bottleneck3D.expansion
            layer += [Bottleneck3D(inplanes, planes, temporal_kernel=tk, zero_init=zero_init_residual)
                      for _ in range(1, blocks)]
            stages.append(nn.Sequential(*layer))
        self.res2, self.res3, self.res4, self.res5 = stages
        self.feature_dim = inplanes
        self.fc = head(self.feature_dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x):
        x = self.stem(x)  # B x 64w x T/2 x H/4 x W/4
        x = self.res3(self.res2(x))  # B x 512w x T/2 x H/8 x W/8
        return self.res5(self.res4(x))  # B x 2048w x T/2 x H/32 x W/32


@register("r3d_50")
def r3d_50(**kwargs) -> R3D50:
    """CVRL's R3D-50 (SlowOnly-style 3D ResNet-50, temporal stride 2 in the stem only)."""
    return R3D50(**kwargs)


@register("slow_r50")
def slow_r50(**kwargs) -> R3D50:
    """Slow-R50 (SlowOnly ResNet-50; Feichtenhofer et al., *SlowFast Networks*, ICCV 2019), the backbone of
    rho-BYOL: the same bottlenecks, but a 1x7x7 stem without temporal stride, so every input frame stays a
    time step (SlowFast ``video_model_builder.py``: ``_TEMPORAL_KERNEL_BASIS["slow"]``, ``_POOL1["slow"]``)."""
    return R3D50(**{"stem_temporal_kernel": 1, "stem_temporal_stride": 1, **kwargs})
