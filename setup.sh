#!/usr/bin/env bash
# One-step set-up on a fresh machine: a .venv with Paddle, PaddleSlim (without its broken
# pins, see requirements-nodeps.txt) and the rest, plus Debian's Fashion-MNIST for the demo
# and benchmarks.  Re-running is cheap: nothing is reinstalled unless a requirements file changed.
#   PYTHON=python3.11 bash setup.sh                      # choose the interpreter
#   PADDLE=paddlepaddle-gpu==2.6.2 bash setup.sh         # GPU Paddle instead of CPU 3.3.1
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
PADDLE=${PADDLE:-}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.hnas-requirements
want=$(cat requirements.txt requirements-nodeps.txt; echo "PADDLE=$PADDLE")
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if [ -n "$PADDLE" ]; then
    .venv/bin/python -m pip install -q "$PADDLE"
    grep -v '^paddlepaddle' requirements.txt > .venv/requirements-no-paddle.txt
    .venv/bin/python -m pip install -q -r .venv/requirements-no-paddle.txt
  else
    .venv/bin/python -m pip install -q -r requirements.txt
  fi
  .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
  .venv/bin/python -c "import paddle, paddleslim_ext" 2>/dev/null \
    || { echo "setup.sh: paddle/paddleslim do not import in .venv" >&2; exit 1; }
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
echo "setup.sh: .venv ready (paddle $(.venv/bin/python -c "import paddle; print(paddle.__version__)" 2>/dev/null))"
