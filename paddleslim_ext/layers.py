"""PaddleSlim's super layers, with a BatchNorm that works on Paddle 3 and cheaper slicing.

``paddleslim==2.6.0``'s ``SuperBatchNorm2D`` freezes ``_use_global_stats`` on its first call
(``not self.training`` at that moment) and derives ``trainable_statistics`` from it.  On
Paddle 3 that means: after one training step, eval mode normalises with *batch* statistics;
if the first call was in eval mode, training never updates the running statistics.  Both
break BN recalibration and ranking, so :class:`SuperBatchNorm2D` replaces its forward with
one on the public ``paddle.nn.functional.batch_norm``.

Both :class:`SuperConv2D` and :class:`SuperBatchNorm2D` cut their active parameters with
``paddle.split`` instead of indexing (``w[:k]``): on Paddle 3 CPU an indexed slice is a
strided view whose backward costs about three splits, which made a subnet step inside the
supernet ~1.5x the stand-alone step (``benchmarks/supernet_overhead.py``).
``SuperLinear`` is PaddleSlim's, unchanged.
"""
import functools
import warnings

import paddle
import paddle.nn.functional as F

with warnings.catch_warnings():
    # paddleslim's package import pulls in its whole toolbox, which warns about ccache and
    # distutils; neither concerns the three layers used here.
    warnings.simplefilter("ignore")
    from paddleslim.nas.ofa import layers as _slim_layers

SuperLinear = _slim_layers.SuperLinear


def leading(tensor: paddle.Tensor, size: int, axis: int = 0) -> paddle.Tensor:
    """The first ``size`` entries of ``tensor`` along ``axis`` (``tensor`` itself if all)."""
    full = int(tensor.shape[axis])
    if size == full:
        return tensor
    if not 0 < size < full:
        raise ValueError(f"cannot take {size} leading channels of a dimension of {full}")
    return paddle.split(tensor, [size, full - size], axis=axis)[0]


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
        weight = leading(leading(self.weight, out_channels, axis=0), int(input.shape[1]), axis=1)
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
        channels = int(x.shape[1])
        full = int(self._mean.shape[0])
        if channels > full:
            raise ValueError(f"SuperBatchNorm2D got {channels} channels but holds only {full}")
        if channels == full:
            return F.batch_norm(x, self._mean, self._variance, self.weight, self.bias,
                                training=self.training, momentum=self._momentum,
                                epsilon=self._epsilon, data_format=self._data_format)
        mean = self._mean[:channels]
        variance = self._variance[:channels]
        out = F.batch_norm(x, mean, variance, leading(self.weight, channels), leading(self.bias, channels),
                           training=self.training, momentum=self._momentum,
                           epsilon=self._epsilon, data_format=self._data_format)
        if self.training and not _sliced_statistics_update_in_place():
            with paddle.no_grad():
                self._mean.set_value(paddle.concat([mean, self._mean[channels:]]))
                self._variance.set_value(paddle.concat([variance, self._variance[channels:]]))
        return out


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
        F.batch_norm(paddle.ones([2, 1, 1, 1]), mean[:1], variance[:1], training=True, momentum=0.0)
    return float(mean[0]) == 1.0
