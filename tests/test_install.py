"""The environment setup.sh makes: Paddle and PaddleSlim import in either order, and zlib works after Paddle.

Each case runs in a fresh interpreter (the one running the tests), because what is tested is the
order in which native libraries are first loaded.  On Paddle 2.x, `import paddle` before anything
that uses zlib used to crash every later zlib user (Python's zlib, scipy's Cython modules while
importing PaddleSlim, Pillow's PNG codec) with a segfault in inflateReset2/deflateReset: see the
comment in setup.sh.  CI runs this file on Paddle 2.6 and 3.x.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ZLIB_USERS = (
    "import gzip, io, zlib, numpy as np\n"
    "from PIL import Image\n"
    "data = b'hnas' * 5000\n"
    "assert zlib.decompress(zlib.compress(data)) == data\n"
    "assert gzip.decompress(gzip.compress(data)) == data\n"
    "img = (np.arange(32 * 32 * 3) % 251).astype('uint8').reshape(32, 32, 3)\n"
    "buf = io.BytesIO(); Image.fromarray(img).save(buf, 'PNG'); buf.seek(0)\n"
    "assert (np.asarray(Image.open(buf).convert('RGB')) == img).all()\n"
)
# One interpreter per order (importing Paddle and PaddleSlim takes seconds): what a user script does
# (paddle first), and what hnas does (paddleslim_ext first); then every zlib user must still work.
CASES = {
    "paddle first": "import paddle\nimport paddleslim\nimport paddleslim_ext\nimport hnas\n" + ZLIB_USERS,
    "paddleslim_ext first": "import paddleslim_ext\nimport paddle\nimport paddleslim\n" + ZLIB_USERS,
}


@pytest.mark.parametrize("code", list(CASES.values()), ids=list(CASES))
def test_imports_in_a_fresh_interpreter(code):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (
        f"exit {proc.returncode} for {code!r} in {sys.prefix} (a negative exit is a signal, -11 a segfault; "
        f"re-run setup.sh for this venv, which installs 00-hnas-zlib-first.pth):\n{proc.stderr[-2000:]}")
