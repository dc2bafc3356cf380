"""Stand-alone ResNet subnets, the weight-sharing supernet, and loading the official ResNet48."""
from .pretrained import build_teacher, full_arch, load_resnet48_pretrained, reorder_mid_channels
from .resnet import Model, ResNet
from .supernet import ResNetSuperNet

__all__ = ["Model", "ResNet", "ResNetSuperNet", "build_teacher", "full_arch", "load_resnet48_pretrained",
           "reorder_mid_channels"]
