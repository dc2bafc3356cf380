#!/usr/bin/env bash
# Train the ResNet48 supernet with one process per GPU, as the official baseline does.
#
#   DEVICES=0,1,2,3 sh train_supernet.sh                 # 4 GPUs (default)
#   NPROC=2 sh train_supernet.sh --image_dir data/mini   # 2 CPU processes (gloo), no GPU
#   sh train_supernet.sh --resume checkpoints/res48      # continue a stopped run exactly
#   MASTER=10.0.0.1:8090 NNODES=2 NODE_RANK=0 sh train_supernet.sh   # on machine 0, and
#   MASTER=10.0.0.1:8090 NNODES=2 NODE_RANK=1 sh train_supernet.sh   # on machine 1: 2 x 4 GPUs
#
# With NNODES > 1, MASTER (ip:port of node 0, the launcher's rendezvous) and NODE_RANK are
# needed on every machine; global rank 0 (on node 0) writes --save_dir.  --resume then needs the
# checkpoint on every machine (a shared filesystem), since every rank loads it.
#
# Extra arguments are passed to train_supernet.py and win over the ones below.  Paths given
# on the command line are relative to the folder you run from; the defaults below (and the
# launcher's log folder, LOG_DIR) are relative to this repository, wherever you run from.
#
# Flags (baseline names and meanings; defaults in the config's Train / Data sections):
#   --config           YAML with SearchSpace / Train / Data sections
#   --image_dir        ImageNet layout: DIR/train/<class>/*, DIR/val/<class>/*
#   --save_dir         checkpoints (epoch_N, final, latest), train.log, vdl/, config.yaml
#   --max_epoch        epochs of the cosine schedule
#   --batch_size       images per process (GPU) per step
#   --lr               learning rate per 256 images: peak = lr * batch_size * processes / 256
#   --warmup           epochs of linear warmup from 0 to the peak
#   --dyna_batch_size  subnets whose gradients accumulate before each optimizer step
#   --strategy         baseline (needs --pretrained) | spos | sandwich
#   --pretrained       official full resnet48.pdparams: supernet init (mid channels reordered)
#                      and the frozen distillation teacher of 'baseline'
#   --resume           a run folder or checkpoint to continue from
#   -o Section.key=v   any other config value, e.g. -o Train.grad_clip=1.0
set -e
ROOT="$(cd "$(dirname "$0")" && pwd)"   # no cd: relative paths in "$@" keep their meaning
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi

if [ -n "$NPROC" ]; then
    # CPU (or any machine without the GPUs): N processes that talk over gloo.
    LAUNCH="--nproc_per_node $NPROC"
else
    LAUNCH="--devices ${DEVICES:-0,1,2,3}"
fi
if [ "${NNODES:-1}" -gt 1 ]; then
    if [ -z "${MASTER:-}" ] || [ -z "${NODE_RANK:-}" ]; then
        echo "train_supernet.sh: error: NNODES=$NNODES needs MASTER=ip:port (node 0) and NODE_RANK=0..$(( NNODES - 1 )) on every machine" >&2
        exit 2
    fi
    LAUNCH="$LAUNCH --master $MASTER --nnodes $NNODES --rank $NODE_RANK"
fi

"$PYTHON" -m paddle.distributed.launch $LAUNCH --log_dir "${LOG_DIR:-$ROOT/log/train_supernet}" \
    "$ROOT/train_supernet.py" run \
    --config "$ROOT/configs/resnet48_imagenet.yaml" \
    --backbone resnet48 \
    --image_dir "$ROOT/data/ILSVRC2012" \
    --save_dir "$ROOT/checkpoints/res48_supernet" \
    --max_epoch 70 \
    --batch_size 256 \
    --lr 0.001 \
    --warmup 5 \
    --dyna_batch_size 2 \
    --strategy baseline \
    --pretrained "$ROOT/checkpoints/resnet48.pdparams" \
    --save_freq 1 \
    --log_freq 100 \
    "$@"
