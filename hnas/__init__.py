"""hnas: one-shot NAS on the CVPR 2022 Track-1 ResNet48 search space, in PaddlePaddle."""
import ctypes as _ctypes
import sys as _sys
import warnings

# `import paddle` warns on every start that ccache is missing (it matters only when compiling
# custom C++ ops, which hnas never does); keep the CLIs' output readable.
warnings.filterwarnings("ignore", message="No ccache found")

# Paddle 2.x's libpaddle.so carries its own zlib 1.2.8: if it is what first loads the system
# libz.so.1, that library's internal calls bind to Paddle's copy and every later zlib user
# crashes (Python's zlib and gzip, scipy, Pillow's PNG codec).  Loading libz.so.1 first prevents
# it.  The venvs made by setup.sh do this at interpreter start-up (a .pth file), so any import
# order works there; these lines cover other environments whenever hnas is imported before paddle.
import zlib as _zlib  # noqa: E402,F401

if _sys.platform == "linux":
    try:
        _ctypes.CDLL("libz.so.1")
    except OSError:
        pass

from .search_space import Arch, ArchCodeError, SearchSpace, SubnetWidths, make_divisible  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Arch", "ArchCodeError", "SearchSpace", "SubnetWidths", "make_divisible"]
