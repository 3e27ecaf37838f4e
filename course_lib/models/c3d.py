"""C3D (Tran et al., *Learning Spatiotemporal Features with 3D Convolutional Networks*, ICCV 2015).

``c3d`` is the original: eight 3x3x3 convolutions, five max-pools and two 4096-d fully
connected layers (fc6, fc7) on 16x112x112 clips. ``c3d_vcop`` is the form used by VCOP,
IIC and DualVar: batch norm after every convolution and global average pooling instead
of pool5/fc6/fc7, giving 512-d features for any clip size.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .registry import Backbone, head, register, scaled

# (name, out channels, pool after: kernel or None)
_LAYERS = [("conv1", 64, (1, 2, 2)), ("conv2", 128, (2, 2, 2)), ("conv3a", 256, None), ("conv3b", 256, (2, 2, 2)),
           ("conv4a", 512, None), ("conv4b", 512, (2, 2, 2)), ("conv5a", 512, None), ("conv5b", 512, None)]


class C3D(Backbone):
    def __init__(self, *, num_classes: int | None = None, width: float = 1.0, batch_norm: bool = False,
                 fc_layers: bool = True, dropout: float = 0.5):
        super().__init__()
        layers, c_in = [], 3
        for name, c, pool in _LAYERS:
            c = scaled(c, width)
            block = [nn.Conv3d(c_in, c, kernel_size=3, padding=1)]
            block += [nn.BatchNorm3d(c)] if batch_norm else []
            block += [nn.ReLU(inplace=True)]
            block += [nn.MaxPool3d(pool, stride=pool)] if pool else []
            layers.append((name, nn.Sequential(*block)))
            c_in = c
        self.features = nn.Sequential(OrderedDict(layers))
        self.fc_layers = fc_layers
        if fc_layers:  # pool5 then fc6/fc7: fixed to 16x112x112 input (512 x 1 x 4 x 4 after pool5)
            hidden = scaled(4096, width)
            self.pool5 = nn.MaxPool3d((2, 2, 2), stride=(2, 2, 2), padding=(0, 1, 1))
            self.fc67 = nn.Sequential(nn.Linear(c_in * 16, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                      nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
            self.feature_dim = hidden
        else:
            self.feature_dim = c_in
        self.fc = head(self.feature_dim, num_classes)

    def forward_features(self, x):
        return self.features(x)  # B x 512w x T/8 x H/16 x W/16

    def pool(self, fmap):
        if not self.fc_layers:
            return fmap.mean(dim=(2, 3, 4))  # B x 512w
        return self.fc67(self.pool5(fmap).flatten(1))  # B x 4096w


@register("c3d")
def c3d(**kwargs) -> C3D:
    """The original C3D with fc6/fc7 (input 16x112x112)."""
    return C3D(**kwargs)


@register("c3d_vcop")
def c3d_vcop(**kwargs) -> C3D:
    """C3D as in VCOP/IIC/DualVar: batch norm, global average pooling, 512-d output."""
    return C3D(batch_norm=True, fc_layers=False, **kwargs)
