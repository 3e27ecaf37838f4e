"""S3D (Xie et al., *Rethinking Spatiotemporal Feature Learning*, ECCV 2018): Inception
blocks with separable (2D space, then 1D time) convolutions.

Built from torchvision's public S3D blocks with the same layer table, so at ``width=1``
the ``features`` state dict is torchvision's; ``width`` scales every branch.
"""
from __future__ import annotations

from functools import partial

from torch import nn

from .registry import Backbone, head, register, scaled

# torchvision's S3D inception table: in, b0, b1 (reduce, out), b2 (reduce, out), b3
_INCEPTION = [(192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64), "pool",
              (480, 192, 96, 208, 16, 48, 64), (512, 160, 112, 224, 24, 64, 64), (512, 128, 128, 256, 24, 64, 64),
              (512, 112, 144, 288, 32, 64, 64), (528, 256, 160, 320, 32, 128, 128), "pool2",
              (832, 256, 160, 320, 32, 128, 128), (832, 384, 192, 384, 48, 128, 128)]


class S3D(Backbone):
    def __init__(self, *, num_classes: int | None = None, width: float = 1.0):
        # imported here, not with the package: torchvision's import pulls in torch._dynamo (1.4 s per process)
        from torchvision.models.video.s3d import SepInceptionBlock3D, TemporalSeparableConv
        from torchvision.ops import Conv3dNormActivation

        super().__init__()
        norm = partial(nn.BatchNorm3d, eps=0.001, momentum=0.001)
        w = lambda c: scaled(c, width)  # noqa: E731
        layers = [TemporalSeparableConv(3, w(64), 7, 2, 3, norm),
                  nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
                  Conv3dNormActivation(w(64), w(64), kernel_size=1, stride=1, norm_layer=norm),
                  TemporalSeparableConv(w(64), w(192), 3, 1, 1, norm),
                  nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))]
        out = w(192)
        for row in _INCEPTION:
            if row == "pool":
                layers.append(nn.MaxPool3d(kernel_size=(3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1)))
            elif row == "pool2":
                layers.append(nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=(0, 0, 0)))
            else:
                _, b0, b1a, b1b, b2a, b2b, b3 = (w(c) for c in row)
                layers.append(SepInceptionBlock3D(out, b0, b1a, b1b, b2a, b2b, b3, norm))
                out = b0 + b1b + b2b + b3
        self.features = nn.Sequential(*layers)
        self.feature_dim = out  # 1024 at width 1
        self.fc = head(self.feature_dim, num_classes)

    def forward_features(self, x):
        return self.features(x)  # B x 1024w x T/8 x H/32 x W/32


@register("s3d")
def s3d(**kwargs) -> S3D:
    """S3D with torchvision's layout (``features`` loads torchvision's weights at width 1)."""
    return S3D(**kwargs)
