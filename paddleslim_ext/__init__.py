"""What PaddleSlim lacks for ResNet supernets; the one package that imports paddleslim."""
from .layers import SuperBatchNorm2D, SuperConv2D, SuperLinear

__all__ = ["SuperBatchNorm2D", "SuperConv2D", "SuperLinear"]
