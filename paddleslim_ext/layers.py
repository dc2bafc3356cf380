"""PaddleSlim's super layers, with a BatchNorm that works on Paddle 3 and cheaper slicing.

``paddleslim==2.6.0``'s ``SuperBatchNorm2D`` freezes ``_use_global_stats`` on its first call
(``not self.training`` at that moment) and derives ``trainable_statistics`` from it.  On
Paddle 3 that means: after one training step, eval mode normalises with *batch* statistics;
if the first call was in eval mode, training never updates the running statistics.  Both
break BN recalibration and ranking, so :class:`SuperBatchNorm2D` replaces its forward with
one on the public ``paddle.nn.functional.batch_norm``.

All three layers cut their active parameters with the ``split`` kernel instead of indexing
(``w[:k]``): on Paddle CPU the backward of a slice of a 2-D or 4-D tensor costs many times a
split's, which made a subnet step inside the supernet ~1.5x the stand-alone step
(``benchmarks/supernet_overhead.py``).  They call ``paddle._C_ops.split`` itself: a subnet
step slices ~80 parameters, and ``paddle.split``'s argument checks took about as long as the
kernel.  A parameter used at full width is passed through untouched, so the largest subnet
runs no slicing op at all.
"""
import functools
import warnings

import paddle
import paddle.nn.functional as F
from paddle import _C_ops

with warnings.catch_warnings():
    # paddleslim's package import pulls in its whole toolbox, which warns about ccache and
    # distutils; neither concerns the three layers used here.
    warnings.simplefilter("ignore")
    from paddleslim.nas.ofa import layers as _slim_layers


def leading(tensor: paddle.Tensor, size: int, axis: int = 0) -> paddle.Tensor:
    """The first ``size`` entries of ``tensor`` along ``axis`` (``tensor`` itself if all).

    Differentiable: the gradient reaches those entries of ``tensor`` and is zero elsewhere.
    """
    full = tensor.shape[axis]
    if size == full:
        return tensor
    if not 0 < size < full:
        raise ValueError(f"cannot take {size} leading channels of a dimension of {full}")
    return _C_ops.split(tensor, [size, full - size], axis)[0]


def leading_statistics(statistics: paddle.Tensor, size: int) -> paddle.Tensor:
    """The first ``size`` entries of a 1-D BN statistics buffer, as a view where Paddle can.

    A view lets ``batch_norm`` update the running statistics in place (see
    :func:`_sliced_statistics_update_in_place`); buffers take no gradient, so the slice
    kernel's slow backward never runs.
    """
    return _C_ops.slice(statistics, [0], [0], [size], [1], [])


class SuperConv2D(_slim_layers.SuperConv2D):
    """PaddleSlim's ``SuperConv2D`` with a lean channel-only forward.

    ``forward(x, channel=k)``: ``[N, C, H, W] -> [N, k, H', W']`` with the leading
    ``[k, C]`` filters (all filters if ``channel`` is None).  Kernel-size or expand-ratio
    elasticity and grouped convolutions take PaddleSlim's own forward.
    """

    def forward(self, input, kernel_size=None, expand_ratio=None, channel=None):
        if kernel_size is not None or expand_ratio is not None or self._groups != 1:
            return super().forward(input, kernel_size=kernel_size, expand_ratio=expand_ratio, channel=channel)
        out_channels = self._out_channels if channel is None else int(channel)
        weight = leading(leading(self.weight, out_channels, axis=0), input.shape[1], axis=1)
        bias = None if self.bias is None else leading(self.bias, out_channels)
        return F.conv2d(input, weight, bias, stride=self._stride, padding=self._padding,
                        dilation=self._dilation, data_format=self._data_format)


class SuperBatchNorm2D(_slim_layers.SuperBatchNorm2D):
    """BatchNorm over the first C channels of its parameters and running statistics.

    Input ``[N, C, H, W]`` with ``C <= num_features``.  In training mode the batch statistics
    of those C channels update the first C running entries (momentum as in Paddle); the rest
    stay untouched.  In eval mode the stored statistics are used, whatever came before.
    """

    def forward(self, x):
        channels = x.shape[1]
        full = self._mean.shape[0]
        if channels > full:
            raise ValueError(f"SuperBatchNorm2D got {channels} channels but holds only {full}")
        if channels == full:
            return F.batch_norm(x, self._mean, self._variance, self.weight, self.bias,
                                training=self.training, momentum=self._momentum,
                                epsilon=self._epsilon, data_format=self._data_format)
        mean = leading_statistics(self._mean, channels)
        variance = leading_statistics(self._variance, channels)
        out = F.batch_norm(x, mean, variance, leading(self.weight, channels), leading(self.bias, channels),
                           training=self.training, momentum=self._momentum,
                           epsilon=self._epsilon, data_format=self._data_format)
        if self.training and not _sliced_statistics_update_in_place():
            with paddle.no_grad():
                self._mean.set_value(paddle.concat([mean, self._mean[channels:]]))
                self._variance.set_value(paddle.concat([variance, self._variance[channels:]]))
        return out


class SuperLinear(_slim_layers.SuperLinear):
    """PaddleSlim's ``SuperLinear`` with a lean forward.

    ``forward(x, channel=k)``: ``[N, C] -> [N, k]`` with the leading ``[C, k]`` corner of the
    ``[in_features, out_features]`` weight (all outputs if ``channel`` is None).  PaddleSlim's
    own forward indexes the weight (the slow slice backward above) and builds a config dict
    per call; expand-ratio elasticity still takes it.
    """

    def forward(self, input, expand_ratio=None, channel=None):
        if expand_ratio is not None:
            return super().forward(input, expand_ratio=expand_ratio, channel=channel)
        out_features = self._out_features if channel is None else int(channel)
        weight = leading(leading(self.weight, input.shape[-1], axis=0), out_features, axis=1)
        bias = None if self.bias is None else leading(self.bias, out_features)
        return F.linear(input, weight, bias)


@functools.lru_cache(maxsize=None)
def _sliced_statistics_update_in_place() -> bool:
    """Whether batch_norm's update of ``stat[:k]`` reaches ``stat`` itself.

    True where leading slices are views (Paddle 3 stride kernels); elsewhere they are copies
    and :class:`SuperBatchNorm2D` writes the updated statistics back.  Probed once on
    statistics made the way BatchNorm makes its own.
    """
    zeros = paddle.nn.initializer.Constant(0.0)
    ones = paddle.nn.initializer.Constant(1.0)
    mean = paddle.create_parameter([2], "float32", default_initializer=zeros)
    variance = paddle.create_parameter([2], "float32", default_initializer=ones)
    mean.stop_gradient = variance.stop_gradient = True
    with paddle.no_grad():
        F.batch_norm(paddle.ones([2, 1, 1, 1]), leading_statistics(mean, 1), leading_statistics(variance, 1),
                     training=True, momentum=0.0)
    return float(mean[0]) == 1.0
