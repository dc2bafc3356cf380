"""Stand-alone ResNet subnets and the weight-sharing supernet."""
from .resnet import Model, ResNet
from .supernet import ResNetSuperNet

__all__ = ["Model", "ResNet", "ResNetSuperNet"]
