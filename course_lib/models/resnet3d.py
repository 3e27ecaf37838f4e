"""The ResNet-18 video family: R3D, MC3 and R(2+1)D, and their light VCOP forms.

Tran et al., *A Closer Look at Spatiotemporal Convolutions for Action Recognition*,
CVPR 2018. The module names follow torchvision's ``torchvision.models.video`` exactly
(``stem``, ``layer1``..``layer4``, ``fc``), so at ``width=1`` a torchvision state dict
loads with ``strict=True`` and the outputs match. ``width`` scales every channel count
so that the same architectures train on a laptop CPU.

The light forms with one block per stage (``r3d_vcop``, ``r21d_vcop``) are the
backbones of VCOP (Xu et al., CVPR 2019), IIC and DualVar: 512-d pooled features.
"""
from __future__ import annotations

from torch import nn

from .registry import Backbone, head, register, scaled


def _midplanes(inplanes: int, planes: int) -> int:
    """(2+1)D middle width that keeps the parameter count of a full 3x3x3 conv (Tran et al.)."""
    return (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)


class Conv3DSimple(nn.Conv3d):
    """Full 3x3x3 convolution."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None, stride: int = 1):
        super().__init__(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)

    @staticmethod
    def downsample_stride(stride: int):
        return stride, stride, stride


class Conv3DNoTemporal(nn.Conv3d):
    """1x3x3 convolution: spatial only (the "mixed convolution" stages of MC3)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None, stride: int = 1):
        super().__init__(in_planes, out_planes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                         padding=(0, 1, 1), bias=False)

    @staticmethod
    def downsample_stride(stride: int):
        return 1, stride, stride


class Conv2Plus1D(nn.Sequential):
    """A 3x3x3 convolution factorised into 1x3x3 (space) then 3x1x1 (time), with BN+ReLU between."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1):
        super().__init__(
            nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1),
                      bias=False),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0),
                      bias=False),
        )

    @staticmethod
    def downsample_stride(stride: int):
        return stride, stride, stride


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, conv_builder, stride: int = 1, downsample=None):
        super().__init__()
        mid = _midplanes(inplanes, planes)
        self.conv1 = nn.Sequential(conv_builder(inplanes, planes, mid, stride), nn.BatchNorm3d(planes),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv_builder(planes, planes, mid), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


class Conv2Plus1DOwnMid(Conv2Plus1D):
    """VCOP's (2+1)D convolution: the middle width comes from this conv's own in/out channels
    (torchvision sizes both convs of a block from the block's input and output instead)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None, stride: int = 1):
        super().__init__(in_planes, out_planes, _midplanes(in_planes, out_planes), stride)


def basic_stem(width: float) -> nn.Sequential:
    """3x7x7 conv, spatial stride 2 (R3D, MC3)."""
    c = scaled(64, width)
    return nn.Sequential(nn.Conv3d(3, c, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
                         nn.BatchNorm3d(c), nn.ReLU(inplace=True))


def r2plus1d_stem(width: float) -> nn.Sequential:
    """1x7x7 then 3x1x1 conv (R(2+1)D)."""
    mid, c = scaled(45, width), scaled(64, width)
    return nn.Sequential(
        nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
        nn.Conv3d(mid, c, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(c), nn.ReLU(inplace=True),
    )


def r2plus1d_vcop_stem(width: float) -> nn.Sequential:
    """VCOP's stem: a 3x7x7 conv factorised into 1x7x7 and 3x1x1 (83 middle channels at width 1)."""
    c = scaled(64, width)
    mid = (3 * 7 * 7 * 3 * c) // (7 * 7 * 3 + 3 * c)
    return nn.Sequential(
        nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
        nn.Conv3d(mid, c, kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(c), nn.ReLU(inplace=True),
    )


class VideoResNet(Backbone):
    """Stem, four stages of basic blocks (the first without down-sampling), global average pool."""

    def __init__(self, conv_makers, layers, stem, *, num_classes: int | None = None, width: float = 1.0):
        super().__init__()
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.inplanes = planes[0]
        self.stem = stem(width)
        self.layer1 = self._make_layer(conv_makers[0], planes[0], layers[0], stride=1)
        self.layer2 = self._make_layer(conv_makers[1], planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(conv_makers[2], planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(conv_makers[3], planes[3], layers[3], stride=2)
        self.feature_dim = planes[3]
        self.fc = head(self.feature_dim, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def _make_layer(self, conv_builder, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, planes, kernel_size=1, stride=conv_builder.downsample_stride(stride),
                          bias=False),
                nn.BatchNorm3d(planes))
        layers = [BasicBlock(self.inplanes, planes, conv_builder, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes, conv_builder) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x):
        x = self.stem(x)  # B x 64w x T x H/2 x W/2
        x = self.layer2(self.layer1(x))  # B x 128w x T/2 x H/4 x W/4
        return self.layer4(self.layer3(x))  # B x 512w x T/8 x H/16 x W/16


@register("r3d_18")
def r3d_18(**kwargs) -> VideoResNet:
    """R3D-18: full 3D convolutions everywhere (torchvision-compatible)."""
    return VideoResNet([Conv3DSimple] * 4, [2, 2, 2, 2], basic_stem, **kwargs)


@register("mc3_18")
def mc3_18(**kwargs) -> VideoResNet:
    """MC3-18: 3D convolutions in the first stage, 2D (1x3x3) in the rest (torchvision-compatible)."""
    return VideoResNet([Conv3DSimple] + [Conv3DNoTemporal] * 3, [2, 2, 2, 2], basic_stem, **kwargs)


@register("r2plus1d_18")
def r2plus1d_18(**kwargs) -> VideoResNet:
    """R(2+1)D-18: every 3D convolution factorised into space then time (torchvision-compatible)."""
    return VideoResNet([Conv2Plus1D] * 4, [2, 2, 2, 2], r2plus1d_stem, **kwargs)


@register("r3d_vcop")
def r3d_vcop(**kwargs) -> VideoResNet:
    """The light R3D of VCOP/IIC: one block per stage, 512-d output."""
    return VideoResNet([Conv3DSimple] * 4, [1, 1, 1, 1], basic_stem, **kwargs)


@register("r21d_vcop")
def r21d_vcop(**kwargs) -> VideoResNet:
    """The light R(2+1)D of VCOP/IIC/DualVar: one block per stage, 512-d output.

    As in VCOP's code, each factorised conv sizes its middle width from its own channels
    and the stem is a factorised 3x7x7 conv. One simplification: the down-sampling
    shortcut is a plain 1x1x1 conv (VCOP factorises it too, with a ReLU inside).
    """
    return VideoResNet([Conv2Plus1DOwnMid] * 4, [1, 1, 1, 1], r2plus1d_vcop_stem, **kwargs)
