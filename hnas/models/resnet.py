"""Stand-alone ResNet of one subnet: what the supernet exports to and what users train alone.

Parameter names follow the official baseline's ``resnet48.pdparams`` (``blocks.0`` = stem,
``blocks.1..N`` = the active BasicBlocks, ``blocks.N+1`` = head), so checkpoints move freely.
"""
from __future__ import annotations

import paddle.nn as nn

from ..search_space import Arch, SearchSpace, SubnetWidths
from .layers import HeadBlock, build_activation


class StemBlock(nn.Layer):
    """7x7/2 conv, BN, activation, 3x3/2 max-pool (the ImageNet stem)."""

    def __init__(self, in_channels: int, out_channels: int, activation: str):
        super().__init__()
        self.conv = nn.Conv2D(in_channels, out_channels, 7, stride=2, padding=3, bias_attr=False)
        self.bn = nn.BatchNorm2D(out_channels)
        self.act = build_activation(activation)
        self.maxpool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)

    def forward(self, x):
        return self.maxpool(self.act(self.bn(self.conv(x))))


class BasicBlock(nn.Layer):
    """3x3 conv -> BN -> act -> 3x3 conv -> BN, plus shortcut, then act.

    A 1x1 conv + BN projection exists exactly where ``stride != 1 or in != out``.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int,
                 activation: str):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, mid_channels, 3, stride=stride, padding=1, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(mid_channels)
        self.act1 = build_activation(activation)
        self.conv2 = nn.Conv2D(mid_channels, out_channels, 3, padding=1, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2D(in_channels, out_channels, 1, stride=stride, bias_attr=False),
                nn.BatchNorm2D(out_channels))
        else:
            self.downsample = None
        self.act2 = build_activation(activation)

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.act2(out + identity)


class ResNet(nn.Layer):
    """The stand-alone network of ``arch`` (an ``Arch`` or a code) in ``space``.

    Input ``[N, in_channels, H, W]`` -> logits ``[N, num_classes]``.
    """

    def __init__(self, arch: Arch | str, space: SearchSpace):
        super().__init__()
        self.space = space
        self.arch = space.parse(arch) if isinstance(arch, str) else arch
        self.widths: SubnetWidths = space.widths(self.arch)
        w = self.widths
        blocks = [StemBlock(space.in_channels, w.stem, space.activation)]
        cin = w.stem
        for s, mids in enumerate(w.conv1):
            for b, mid in enumerate(mids):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(BasicBlock(cin, mid, w.stage[s], stride, space.activation))
                cin = w.stage[s]
        blocks.append(HeadBlock(nn.Linear(cin, space.num_classes)))
        self.blocks = nn.LayerList(blocks)

    @property
    def code(self) -> str:
        return self.space.encode(self.arch)

    def forward(self, x):
        return self.classify(self.forward_features(x))

    def forward_features(self, x):
        """``[N, C, H, W] -> [N, C']``: everything up to the pooled classifier input."""
        for block in self.blocks[:-1]:
            x = block(x)
        return self.blocks[-1].pool(x)

    def classify(self, features):
        """Pooled features ``[N, C']`` -> logits ``[N, num_classes]``."""
        return self.blocks[-1].fc(features)


def Model(arch: Arch | str, space: SearchSpace | None = None) -> ResNet:
    """The official baseline's name for a stand-alone subnet (Track-1 space by default)."""
    return ResNet(arch, space or SearchSpace())
