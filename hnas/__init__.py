"""hnas: one-shot NAS on the CVPR 2022 Track-1 ResNet48 search space, in PaddlePaddle."""
import warnings

# `import paddle` warns on every start that ccache is missing (it matters only when compiling
# custom C++ ops, which hnas never does); keep the CLIs' output readable.
warnings.filterwarnings("ignore", message="No ccache found")

from .search_space import Arch, ArchCodeError, SearchSpace, SubnetWidths, make_divisible  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Arch", "ArchCodeError", "SearchSpace", "SubnetWidths", "make_divisible"]
