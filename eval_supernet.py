"""Rank subnets with a trained supernet: fill in ``acc`` of an arch JSON (the Track-1 submission).

    python eval_supernet.py run --config configs/resnet48_small.yaml --image_dir data/fashion_mnist \\
        --resume output/supernet --json_path checkpoints/CVPR_2022_NAS_Track1_test.json \\
        --save_path output/submission.json [--calib_batches 10] [--eval_images 1000] \\
        [--batch_size 100] [--num_shards N --shard I] [--merge_only] [-o Eval.seed=1]

Per arch: activate it, re-estimate BN statistics on K fixed training batches (0 keeps the stored
ones), top-1 on M fixed validation images at the image size its code selects.  Shard I of N
takes its share of the archs (those sharing a stem and stage 1 stay together, see
``hnas.evaluator.shard_keys``) and appends each result to ``SAVE_PATH.shardIofN.jsonl``; a
restart resumes there.  With one shard the submission is written at the end; with several,
``--merge_only`` writes it (``eval_supernet.sh`` does both).  Under
``paddle.distributed.launch`` each rank takes its own shard unless ``--shard`` is given: its global
rank, so shards of several nodes add up.  ``--merge_only --wait_for_shards S`` waits up to S
seconds for shards still being ranked (by other nodes) before merging.
Settings: command line, then ``-o`` overrides, then the config's ``Eval`` section.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # paddle / paddleslim warn about ccache and distutils on import
    from hnas.checkpoint import LATEST, LockedError, resolve_checkpoint, train_state_path
    from hnas.config import check_keys, load_config, section
    from hnas.data import SKIP_HINT, ImageFolder, UnreadableImageError, check_class_folders, error_line
    from hnas.evaluator import (EVAL_DEFAULTS, SubnetRanker, load_supernet, merge_shards,
                                rank_shard, read_shard, shard_assignment, shard_path, space_of_shard)
    from hnas.io import read_arch_json, refuse_overwrite
    from hnas.phases import is_recipe_folder, load_recipe_ranker
    from hnas.search_space import ArchCodeError, SearchSpace, validate_codes
    from hnas.train_config import DataConfig, check_space_section

# The config sections this command reads; -o of any other section is refused.
KNOWN_SECTIONS = ("SearchSpace", "Data", "Eval")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="rank the archs of --json_path (one shard, or merge shards)")
    run.add_argument("--config", help="YAML with a SearchSpace section (and optionally Eval)")
    run.add_argument("--image_dir", help="folder with train/<class>/* and val/<class>/* "
                                          "(default: the config's Data.image_dir)")
    run.add_argument("--resume", help="supernet checkpoint: run folder, or path with or without .pdparams")
    run.add_argument("--json_path", required=True, help="arch list {key: {'acc': .., 'arch': code}}")
    run.add_argument("--save_path", required=True, help="submission JSON to write")
    run.add_argument("--calib_batches", type=int, help="BN recalibration batches K (0: stored statistics)")
    run.add_argument("--eval_images", type=int, help="validation images M per arch")
    run.add_argument("--batch_size", type=int, help="images per forward pass")
    run.add_argument("--finetune_steps", type=int, help="fine-tune a copy of each subnet for N steps "
                     "before scoring (lr, batch: -o Eval.finetune_lr=, Eval.finetune_batch_size=)")
    run.add_argument("--score", choices=("acc", "loss"), help="top-1 (default) or minus the validation loss")
    run.add_argument("--num_shards", type=int, help="N (default: launcher world size, else 1)")
    run.add_argument("--shard", type=int, help="I in 0..N-1 (default: launcher rank, else 0)")
    run.add_argument("--merge_only", action="store_true", help="only merge the N shard files")
    run.add_argument("--wait_for_shards", type=float, default=0, metavar="SECONDS",
                     help="with --merge_only: wait up to SECONDS for every shard file to hold all its archs "
                          "(other nodes still ranking)")
    run.add_argument("--no_progress", action="store_true", help="no progress bar")
    run.add_argument("-o", dest="overrides", action="append", default=[], metavar="Section.key=value",
                     help="config override, repeatable")
    return parser.parse_args(argv)


def resolve_shard(num_shards: int | None, shard: int | None, merge_only: bool) -> tuple[int, int]:
    """(N, I) from the flags, else from ``paddle.distributed.launch``'s environment, else (1, 0)."""
    env_size, env_rank = os.environ.get("PADDLE_TRAINERS_NUM"), os.environ.get("PADDLE_TRAINER_ID")
    if num_shards is None:
        if shard is not None:
            raise ValueError("--shard needs --num_shards")
        num_shards, shard = (int(env_size), int(env_rank)) if env_size and env_rank else (1, 0)
    elif shard is None:
        if merge_only:
            shard = 0
        elif num_shards == 1:
            shard = 0
        elif env_size and env_rank and int(env_size) == num_shards:
            shard = int(env_rank)
        else:
            raise ValueError(f"--num_shards {num_shards} needs --shard (0..{num_shards - 1})")
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"need num_shards >= 1 and 0 <= shard < num_shards; got {num_shards}, {shard}")
    return num_shards, shard


def eval_settings(args: argparse.Namespace, cfg: dict) -> dict:
    """calib_batches, eval_images, batch_size, seed: flags over the Eval section over defaults."""
    eval_cfg = section(cfg, "Eval")
    check_keys(eval_cfg, EVAL_DEFAULTS, "Eval")
    for key, value in eval_cfg.items():  # the type of each default is the type of the setting
        kind = type(EVAL_DEFAULTS[key])
        ok = isinstance(value, kind) and not isinstance(value, bool) or \
            kind is float and isinstance(value, int) and not isinstance(value, bool)
        if not ok:
            raise ValueError(f"Eval.{key} must be {'an integer' if kind is int else 'a number' if kind is float else 'a string'}, "
                             f"got {value!r}")
    settings = {**EVAL_DEFAULTS, **eval_cfg}
    for key in ("calib_batches", "eval_images", "batch_size", "finetune_steps", "score"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return settings


def run(args: argparse.Namespace) -> None:
    num_shards, shard = resolve_shard(args.num_shards, args.shard, args.merge_only)
    if os.path.isdir(args.save_path):
        raise ValueError(f"--save_path {args.save_path!r} is a folder; give the submission file to write")
    refuse_overwrite(args.save_path, [args.json_path, args.config, *checkpoint_files(args.resume)])
    if args.wait_for_shards and not args.merge_only:
        raise ValueError("--wait_for_shards goes with --merge_only")
    if args.merge_only:
        waited = wait_for_shards(args.json_path, args.save_path, num_shards, args.wait_for_shards)
        try:
            merge_shards(args.json_path, args.save_path, num_shards)
        except (OSError, ValueError) as exc:
            if not waited:
                raise
            raise ValueError(f"after waiting {waited:.0f} s for other nodes: {exc}; if the shard files are on "
                             f"another machine, copy them beside {args.save_path} and rerun --merge_only") from None
        print(f"merged {num_shards} shard(s) into {args.save_path}", file=sys.stderr)
        return
    missing = [f"--{name}" for name in ("config", "resume") if getattr(args, name) is None]
    if missing:
        raise ValueError(f"ranking needs {', '.join(missing)}")
    cfg = load_config(args.config, args.overrides, sections=KNOWN_SECTIONS)
    check_keys(section(cfg, "Data"), (f.name for f in dataclasses.fields(DataConfig)), "Data")
    image_dir = args.image_dir or section(cfg, "Data").get("image_dir")
    if image_dir is None:
        raise ValueError("ranking needs --image_dir (or Data.image_dir in the config)")
    space = SearchSpace.from_config(check_space_section(section(cfg, "SearchSpace")))
    settings = eval_settings(args, cfg)
    check_class_folders(image_dir, space.num_classes)
    check_calibration_images(image_dir, settings["calib_batches"], settings["batch_size"])
    archs = read_arch_json(args.json_path)
    validate_codes(space, [entry["arch"] for entry in archs.values()], list(archs))
    if is_recipe_folder(args.resume):  # a multi-phase run: its last phase, few-shot children routed
        ranker, checkpoint = load_recipe_ranker(space, args.resume, image_dir, **settings)
    else:
        supernet, checkpoint = load_supernet(space, args.resume)
        ranker = SubnetRanker(supernet, image_dir, **settings)
    print(f"shard {shard} of {num_shards}: {len(archs)} archs in {args.json_path}, checkpoint {checkpoint}, "
          f"{settings}", file=sys.stderr)
    rank_shard(ranker, archs, args.save_path, shard, num_shards, checkpoint, progress=not args.no_progress)
    if num_shards == 1:
        merge_shards(args.json_path, args.save_path, 1)
        print(f"wrote {args.save_path}", file=sys.stderr)
    else:
        print(f"shard {shard} of {num_shards} done; merge with --merge_only --num_shards {num_shards}",
              file=sys.stderr)


def wait_for_shards(json_path: str, save_path: str, num_shards: int, timeout: float) -> float:
    """Poll until every shard file holds all its archs or ``timeout`` seconds pass: after a
    multi-node ranking the launcher of one node ends without waiting for the other nodes.
    Returns the seconds waited in vain (0 when every shard is complete or nothing was to wait)."""
    if timeout <= 0:
        return 0.0
    archs = read_arch_json(json_path)
    assignments: dict[str, list[list[str]]] = {}
    start = time.monotonic()
    while True:
        pending = [shard for shard in range(num_shards)
                   if not shard_is_complete(archs, save_path, shard, num_shards, assignments)]
        waited = time.monotonic() - start
        if not pending:
            return 0.0
        if waited >= timeout:
            return waited
        time.sleep(min(5.0, timeout - waited))


def shard_is_complete(archs: dict, save_path: str, shard: int, num_shards: int,
                      assignments: dict[str, list[list[str]]]) -> bool:
    """Whether shard ``shard``'s file holds all its archs; ``assignments`` keeps the shard
    assignment per search space between calls (it parses every code, too slow to redo per poll)."""
    path = shard_path(save_path, shard, num_shards)
    if not os.path.isfile(path):
        return False
    try:
        settings, results, _ = read_shard(path)
        space = space_of_shard(settings, path)
    except ValueError:
        return True  # a damaged or foreign file: merge_shards names the problem
    key = json.dumps(settings["search_space"], sort_keys=True)
    if key not in assignments:
        assignments[key] = shard_assignment(archs, num_shards, space)
    return all(k in results for k in assignments[key][shard])


def checkpoint_files(resume: str | None) -> list[str]:
    """The files ``--resume`` reads (the weights, their training state, a run folder's
    ``latest``), none of which ``--save_path`` may name."""
    if resume is None:
        return []
    files = [os.path.join(resume, LATEST)] if os.path.isdir(resume) else [resume, resume + ".pdparams"]
    try:
        weights = resolve_checkpoint(resume)
        files += [weights, train_state_path(weights)]
    except (FileNotFoundError, ValueError):
        pass  # reported when the checkpoint is loaded
    return files


def check_calibration_images(image_dir: str, calib_batches: int, batch_size: int) -> None:
    """Refuse more BN-recalibration images than ``image_dir/train`` holds (they would be cut
    silently while the shard file records the number asked for)."""
    if not isinstance(calib_batches, int) or not isinstance(batch_size, int) or calib_batches < 0 or batch_size < 1:
        raise ValueError(f"need --calib_batches >= 0 and --batch_size >= 1; got {calib_batches}, {batch_size}")
    if calib_batches == 0:
        return
    available = len(ImageFolder(os.path.join(image_dir, "train")))
    if calib_batches * batch_size > available:
        raise ValueError(f"--calib_batches {calib_batches} x --batch_size {batch_size} needs "
                         f"{calib_batches * batch_size} training images but {os.path.join(image_dir, 'train')} "
                         f"has {available}; use --calib_batches {available // batch_size} or fewer")


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except UnreadableImageError as exc:
        message = error_line(exc).replace(SKIP_HINT, "replace or remove it (ranking uses a fixed set of images)")
        sys.stderr.write(f"eval_supernet.py: error: {message}\n")
        sys.exit(2)
    except (ArchCodeError, ValueError, OSError, LockedError) as exc:
        sys.stderr.write(f"eval_supernet.py: error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
