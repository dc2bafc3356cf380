"""Small layer factories shared by the stand-alone ResNet and the supernet."""
import paddle.nn as nn


def build_activation(name: str) -> nn.Layer:
    """relu | mish | prelu (one learned slope, so it fits any width) | swish."""
    if name == "relu":
        return nn.ReLU()
    if name == "mish":
        return nn.Mish()
    if name == "prelu":
        return nn.PReLU(num_parameters=1, init=0.25)
    if name == "swish":
        return nn.Swish()
    raise ValueError(f"unknown activation {name!r}; choose relu, mish, prelu or swish")


class HeadBlock(nn.Layer):
    """Global average pool + fc; ``[N, C, H, W] -> [N, num_classes]``."""

    def __init__(self, fc: nn.Layer):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2D(1)
        self.fc = fc

    def pool(self, x):
        """``[N, C, H, W] -> [N, C]``: the features the classifier sees."""
        return self.avgpool(x).flatten(1)

    def forward(self, x):
        return self.fc(self.pool(x))
