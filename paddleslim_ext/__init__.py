"""What PaddleSlim lacks for ResNet supernets; the one package that imports paddleslim."""
import ctypes as _ctypes
import sys as _sys
import zlib as _zlib  # noqa: F401

# Load the system zlib before paddle, whose 2.x wheels bundle a clashing copy (see hnas/__init__.py).
if _sys.platform == "linux":
    try:
        _ctypes.CDLL("libz.so.1")
    except OSError:
        pass

from .layers import SuperBatchNorm2D, SuperConv2D, SuperLinear  # noqa: E402

__all__ = ["SuperBatchNorm2D", "SuperConv2D", "SuperLinear"]
