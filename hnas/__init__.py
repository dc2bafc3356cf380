"""hnas: one-shot NAS on the CVPR 2022 Track-1 ResNet48 search space, in PaddlePaddle."""
from .search_space import Arch, ArchCodeError, SearchSpace, SubnetWidths, make_divisible

__version__ = "0.1.0"
__all__ = ["Arch", "ArchCodeError", "SearchSpace", "SubnetWidths", "make_divisible"]
