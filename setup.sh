#!/usr/bin/env bash
# One-step set-up on a fresh machine: a venv with Paddle, PaddleSlim (without its broken
# pins, see requirements-nodeps.txt) and the rest, plus Debian's Fashion-MNIST for the demo
# and benchmarks.  Re-running is cheap: nothing is reinstalled unless a requirements file changed.
#   PYTHON=python3.11 bash setup.sh                        # choose the interpreter
#   VENV=.venv26 PADDLE=paddlepaddle==2.6.2 bash setup.sh  # a second venv on Paddle 2.6 (CPU)
#   PADDLE=paddlepaddle-gpu==2.6.2 bash setup.sh           # GPU Paddle instead of CPU 3.3.1
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
PADDLE=${PADDLE:-}
VENV=${VENV:-.venv}
PY=$VENV/bin/python

if [ ! -x "$PY" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# .gitignore names only .venv/; keep any other venv folder (.venv26, ...) out of git too.
[ -f "$VENV/.gitignore" ] || printf '*\n' > "$VENV/.gitignore"

# Paddle 2.x wheels link zlib 1.2.8 statically into libpaddle.so, export its symbols, and also
# load the system libz.so.1.  If libz.so.1 is first loaded by libpaddle.so (`import paddle` before
# anything that uses zlib), libz.so.1's own internal calls (inflateInit2_ -> inflateReset2, ...)
# bind to Paddle's 1.2.8 copies, whose state struct differs: every later zlib user in the
# process crashes or fails (Python's zlib/gzip, scipy's Cython modules during `import paddleslim`,
# Pillow's PNG codec).  No Pillow version avoids it, since Python's own zlib module breaks too.
# The fix is to load libz.so.1 before Paddle: this .pth makes every interpreter of the venv
# (scripts, pytest, spawned workers) load it at start-up (`import zlib` does on most Pythons,
# ctypes covers those whose zlib module is built in).  Harmless on Paddle 3, which bundles no
# zlib.  Written on every run, so an older venv is repaired by re-running setup.sh.
site=$("$PY" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
printf '%s\n' "# hnas setup.sh: load the system zlib before Paddle 2.x can (see setup.sh, README 'Paddle 2.6')" \
  "import sys, zlib; sys.platform == 'linux' and __import__('ctypes').CDLL('libz.so.1')" \
  > "$site/00-hnas-zlib-first.pth"

installed_paddle() {  # version of the installed Paddle wheel, CPU or GPU, without importing it
  "$PY" -c "
from importlib.metadata import PackageNotFoundError, version
for dist in ('paddlepaddle', 'paddlepaddle-gpu'):
    try:
        print(version(dist)); break
    except PackageNotFoundError:
        pass"
}

stamp=$VENV/.hnas-requirements
want=$(cat requirements.txt requirements-nodeps.txt requirements-paddle2.txt; echo "PADDLE=$PADDLE")
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -f "$stamp"
  "$PY" -m pip install -q --upgrade pip
  # Paddle first (PADDLE, or requirements.txt's pin), then the rest; Paddle 2.x needs numpy < 2.
  paddle_spec=${PADDLE:-$(grep '^paddlepaddle' requirements.txt)}
  "$PY" -m pip install -q "$paddle_spec"
  paddle_version=$(installed_paddle)
  constraints=()
  case "$paddle_version" in
    2.*) constraints=(-c requirements-paddle2.txt) ;;
  esac
  grep -v '^paddlepaddle' requirements.txt > "$VENV/requirements-no-paddle.txt"
  "$PY" -m pip install -q -r "$VENV/requirements-no-paddle.txt" ${constraints[@]+"${constraints[@]}"}
  "$PY" -m pip install -q --no-deps -r requirements-nodeps.txt
  # Paddle first, then zlib and PaddleSlim: the order that crashed on Paddle 2.6 without the .pth.
  if ! err=$("$PY" -c "
import paddle, zlib
assert zlib.decompress(zlib.compress(b'hnas' * 999)) == b'hnas' * 999
import paddleslim, paddleslim_ext" 2>&1); then
    echo "$err" | tail -n 5 >&2
    echo "setup.sh: paddle/paddleslim do not import in $VENV" >&2
    exit 1
  fi
  printf '%s' "$want" > "$stamp"
fi

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup.sh: Fashion-MNIST is missing; the demo and benchmarks need" \
         "'sudo apt-get install dataset-fashion-mnist' (tests do not)" >&2
  fi
fi
echo "setup.sh: $VENV ready (paddle $(installed_paddle))"
