"""The weight-sharing ResNet supernet over a :class:`SearchSpace`.

It only *holds* the active choice (``set_active`` / ``active_arch``); samplers and strategies
decide which arch.  Block order and parameter names are those of the official baseline's
``resnet48.pdparams``: ``blocks.0`` stem, then every block of every stage at its maximal depth,
then the head; projection shortcuts only in the first block of stages 2..n.  The active
subnet runs the first ``d`` blocks of each stage and the first ``k`` channels of every conv.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from paddleslim_ext import SuperBatchNorm2D, SuperConv2D, SuperLinear

from ..search_space import Arch, SearchSpace, SubnetWidths
from .layers import HeadBlock, build_activation
from .resnet import ResNet


class SuperStem(nn.Layer):
    def __init__(self, in_channels: int, max_channels: int, activation: str):
        super().__init__()
        self.conv = SuperConv2D(in_channels, max_channels, 7, stride=2, padding=3, bias_attr=False)
        self.bn = SuperBatchNorm2D(max_channels)
        self.act = build_activation(activation)
        self.maxpool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        self.out_channels = max_channels

    def forward(self, x):
        return self.maxpool(self.act(self.bn(self.conv(x, channel=self.out_channels))))


class SuperBasicBlock(nn.Layer):
    """BasicBlock whose mid and out widths are set before the forward pass."""

    def __init__(self, max_in: int, max_channels: int, stride: int, projection: bool, activation: str):
        super().__init__()
        self.conv1 = SuperConv2D(max_in, max_channels, 3, stride=stride, padding=1, bias_attr=False)
        self.bn1 = SuperBatchNorm2D(max_channels)
        self.act1 = build_activation(activation)
        self.conv2 = SuperConv2D(max_channels, max_channels, 3, padding=1, bias_attr=False)
        self.bn2 = SuperBatchNorm2D(max_channels)
        if projection:
            self.downsample = nn.Sequential(
                SuperConv2D(max_in, max_channels, 1, stride=stride, bias_attr=False),
                SuperBatchNorm2D(max_channels))
        else:
            self.downsample = None
        self.act2 = build_activation(activation)
        self.mid_channels = max_channels
        self.out_channels = max_channels

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x, channel=self.mid_channels)))
        out = self.bn2(self.conv2(out, channel=self.out_channels))
        if self.downsample is None:
            identity = x
        else:
            identity = self.downsample[1](self.downsample[0](x, channel=self.out_channels))
        return self.act2(out + identity)


class ResNetSuperNet(nn.Layer):
    """Supernet; ``forward([N, C, H, W]) -> [N, num_classes]`` runs the active subnet."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        top = space.max_widths()
        blocks = [SuperStem(space.in_channels, top.stem, space.activation)]
        self.stage_blocks: list[list[int]] = []
        cin = top.stem
        for s, max_depth in enumerate(space.max_depths):
            indices = []
            for b in range(max_depth):
                stride = 2 if (s > 0 and b == 0) else 1
                projection = s > 0 and b == 0
                blocks.append(SuperBasicBlock(cin, top.stage[s], stride, projection, space.activation))
                indices.append(len(blocks) - 1)
                cin = top.stage[s]
            self.stage_blocks.append(indices)
        blocks.append(HeadBlock(SuperLinear(cin, space.num_classes)))
        self.blocks = nn.LayerList(blocks)
        self._arch: Arch = space.largest()
        self.set_active(self._arch)

    # ------------------------------------------------------------------ state
    def set_active(self, arch: Arch | str) -> Arch:
        """Make ``arch`` (an ``Arch`` or a code) the subnet that ``forward`` runs."""
        arch = self.space.parse(arch) if isinstance(arch, str) else arch
        w = self.space.widths(arch)
        self.blocks[0].out_channels = w.stem
        for s, indices in enumerate(self.stage_blocks):
            for b, mid in enumerate(w.conv1[s]):
                block = self.blocks[indices[b]]
                block.mid_channels = mid
                block.out_channels = w.stage[s]
        self._arch = arch
        self._widths = w
        self._active_block_indices = tuple(self._block_indices(arch))
        return arch

    def active_arch(self) -> Arch:
        return self._arch

    def active_code(self) -> str:
        return self.space.encode(self._arch)

    def active_widths(self) -> SubnetWidths:
        return self._widths

    def active_blocks(self) -> list[int]:
        """Indices into ``blocks`` that the active subnet runs, stem and head included."""
        return list(self._active_block_indices)

    def forward(self, x):
        return self.classify(self.forward_features(x))

    def forward_features(self, x):
        """``[N, C, H, W] -> [N, C']``: the active subnet up to the pooled classifier input."""
        for i in self._active_block_indices[:-1]:
            x = self.blocks[i](x)
        return self.blocks[-1].pool(x)

    def classify(self, features):
        """Pooled features ``[N, C']`` -> logits ``[N, num_classes]``."""
        return self.blocks[-1].fc(features)

    # ------------------------------------------------------------------ export
    def export(self, arch: Arch | str | None = None) -> ResNet:
        """A stand-alone :class:`ResNet` of ``arch`` (default: the active one) holding copies
        of the shared weights and BN statistics; in eval mode it computes what the supernet
        computes for that arch.  The supernet's active arch is left unchanged."""
        arch = self._arch if arch is None else (self.space.parse(arch) if isinstance(arch, str) else arch)
        net = ResNet(arch, self.space)
        source = dict(self.state_dict())
        target = {}
        for dst_idx, src_idx in enumerate(self._block_indices(arch)):
            prefix_src, prefix_dst = f"blocks.{src_idx}.", f"blocks.{dst_idx}."
            for key, value in net.blocks[dst_idx].state_dict().items():
                full = source[prefix_src + key]
                target[prefix_dst + key] = _leading_slice(full, value.shape)
        net.set_state_dict(target)
        return net

    def _block_indices(self, arch: Arch) -> list[int]:
        run = [0]
        for s, indices in enumerate(self.stage_blocks):
            run += indices[:arch.depths[s]]
        return run + [len(self.blocks) - 1]


def _leading_slice(tensor: paddle.Tensor, shape) -> paddle.Tensor:
    """The leading ``shape`` corner of ``tensor`` (the channels a subnet uses)."""
    shape = list(shape)
    if list(tensor.shape) == shape:
        return tensor.clone()
    index = tuple(slice(0, n) for n in shape)
    return tensor[index].clone()
