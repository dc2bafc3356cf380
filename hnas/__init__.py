"""hnas: one-shot NAS on the CVPR 2022 Track-1 ResNet48 search space, in PaddlePaddle."""
import warnings

# `import paddle` warns on every start that ccache is missing (it matters only when compiling
# custom C++ ops, which hnas never does); keep the CLIs' output readable.
warnings.filterwarnings("ignore", message="No ccache found")

# Paddle 2.6's wheels bring their own zlib: when Paddle loads before Pillow, Pillow's PNG decoder
# binds to it and fails ("codec configuration error") or segfaults.  Loading Pillow first, as
# importing hnas before paddle does, avoids that; Paddle 3 is unaffected.
from PIL import Image as _Image  # noqa: E402,F401

from .search_space import Arch, ArchCodeError, SearchSpace, SubnetWidths, make_divisible  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Arch", "ArchCodeError", "SearchSpace", "SubnetWidths", "make_divisible"]
