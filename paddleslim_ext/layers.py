"""PaddleSlim's super layers, with the BatchNorm that works on Paddle 3.

``paddleslim==2.6.0``'s ``SuperBatchNorm2D`` freezes ``_use_global_stats`` on its first call
(``not self.training`` at that moment) and derives ``trainable_statistics`` from it.  On
Paddle 3 that means: after one training step, eval mode normalises with *batch* statistics;
if the first call was in eval mode, training never updates the running statistics.  Both
break BN recalibration and ranking, so :class:`SuperBatchNorm2D` replaces its forward with
one on the public ``paddle.nn.functional.batch_norm``.  ``SuperConv2D`` and ``SuperLinear``
are PaddleSlim's, unchanged (``forward(x, channel=k)`` uses the first ``k`` filters).
"""
import warnings

import paddle
import paddle.nn.functional as F

with warnings.catch_warnings():
    # paddleslim's package import pulls in its whole toolbox, which warns about ccache and
    # distutils; neither concerns the three layers used here.
    warnings.simplefilter("ignore")
    from paddleslim.nas.ofa import layers as _slim_layers

SuperConv2D = _slim_layers.SuperConv2D
SuperLinear = _slim_layers.SuperLinear


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
        out = F.batch_norm(x, mean, variance, self.weight[:channels], self.bias[:channels],
                           training=self.training, momentum=self._momentum,
                           epsilon=self._epsilon, data_format=self._data_format)
        if self.training:
            # The slices may be copies: write the updated statistics back explicitly.
            with paddle.no_grad():
                self._mean.set_value(paddle.concat([mean, self._mean[channels:]]))
                self._variance.set_value(paddle.concat([variance, self._variance[channels:]]))
        return out
