#!/usr/bin/env bash
# Rank an arch list with one process per device, each taking its shard, then merge the shards.
#
#   DEVICES=0,1,2,3 bash eval_supernet.sh --config configs/resnet48_imagenet.yaml \
#       --image_dir /data/ILSVRC2012 --resume output/supernet \
#       --json_path checkpoints/CVPR_2022_NAS_Track1_test.json --save_path output/submission.json
#   NPROC=2 bash eval_supernet.sh --config configs/resnet48_small.yaml ...     # CPU processes
#
# Arguments are those of `eval_supernet.py run` (without --num_shards/--shard).  Environment:
#   DEVICES   GPU ids for paddle.distributed.launch --devices (default 0,1,2,3)
#   NPROC     run NPROC CPU processes instead (--nproc_per_node); each gets
#             OMP_NUM_THREADS = cores / NPROC unless OMP_NUM_THREADS is set
#   PYTHON    interpreter (default .venv/bin/python if present, else python)
#   LOG_DIR   launcher logs, one workerlog.N per rank (default log/eval_supernet)
#   NNODES    machines ranking together (default 1); with NNODES > 1 also set on every machine
#   MASTER    ip:port of node 0, the launcher's rendezvous (the same on every machine)
#   NODE_RANK this machine's node rank, 0..NNODES-1.  Shards follow the global rank; node 0
#             merges once every shard file is complete (it waits up to MERGE_WAIT seconds,
#             default 3600), so --save_path must be on a filesystem all machines share.
# Rerunning the same command resumes every shard where it stopped.  Paths are relative to the
# folder you run from (LOG_DIR's default is relative to this repository).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"   # no cd: relative paths in "$@" keep their meaning
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
LOG_DIR=${LOG_DIR:-$ROOT/log/eval_supernet}

if [ -n "${NPROC:-}" ]; then
  nshards=$NPROC
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / NPROC > 0 ? $(nproc) / NPROC : 1 ))}
  launch=(--nproc_per_node "$NPROC")
else
  DEVICES=${DEVICES:-0,1,2,3}
  IFS=, read -r -a ids <<< "$DEVICES"
  nshards=${#ids[@]}
  launch=(--devices "$DEVICES")
fi

NNODES=${NNODES:-1}
if [ "$NNODES" -gt 1 ]; then
  if [ -z "${MASTER:-}" ] || [ -z "${NODE_RANK:-}" ]; then
    echo "eval_supernet.sh: error: NNODES=$NNODES needs MASTER=ip:port (node 0) and NODE_RANK=0..$(( NNODES - 1 )) on every machine" >&2
    exit 2
  fi
  nshards=$(( nshards * NNODES ))
  launch+=(--master "$MASTER" --nnodes "$NNODES" --rank "$NODE_RANK")
fi

"$PYTHON" -m paddle.distributed.launch --log_dir "$LOG_DIR" "${launch[@]}" \
  "$ROOT/eval_supernet.py" run "$@" --num_shards "$nshards"
if [ "${NODE_RANK:-0}" -eq 0 ]; then
  wait=()
  if [ "$NNODES" -gt 1 ]; then wait=(--wait_for_shards "${MERGE_WAIT:-3600}"); fi
  "$PYTHON" "$ROOT/eval_supernet.py" run "$@" --num_shards "$nshards" --merge_only ${wait[@]+"${wait[@]}"}
else
  echo "eval_supernet.sh: node $NODE_RANK ranked its shards; node 0 merges them" >&2
fi
