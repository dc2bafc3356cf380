"""Convert checkpoints: multi-GPU <-> single-card keys, and the official ResNet48 -> supernet.

    python utils/convert_model.py to_single IN.pdparams OUT.pdparams   # strip paddle.DataParallel's _layers.
    python utils/convert_model.py to_multi IN.pdparams OUT.pdparams    # add _layers.
    python utils/convert_model.py from_official resnet48.pdparams OUT.pdparams \\
        --config configs/resnet48_imagenet.yaml [--reorder]

``paddle.DataParallel`` saves every key as ``_layers.<name>``; the official baseline's scripts
expect one layout or the other.  ``from_official`` loads the full pretrained ResNet48 into a
supernet of ``--config`` (checking every key and shape), optionally sorts every block's mid
channels by importance as the baseline does (``--reorder``), and saves the supernet's state.
The input is never overwritten; an existing output needs ``--force``.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # paddle warns about a missing ccache on import
    import hnas  # noqa: F401  (before paddle: see hnas/__init__.py)
    import paddle

    from hnas.checkpoint import read_state_dict, resolve_checkpoint, strip_wrapper_prefixes  # noqa: E402
    from hnas.config import load_config, section  # noqa: E402
    from hnas.models.pretrained import load_resnet48_pretrained  # noqa: E402
    from hnas.models.supernet import ResNetSuperNet  # noqa: E402
    from hnas.search_space import SearchSpace  # noqa: E402

MULTI_GPU_PREFIX = "_layers."


def to_single(state: dict, prefix: str = MULTI_GPU_PREFIX) -> dict:
    """Keys without ``prefix``; every key must carry it."""
    if not state:
        raise ValueError("the checkpoint holds no keys")
    lacking = [k for k in state if not k.startswith(prefix)]
    if len(lacking) == len(state):
        raise ValueError(f"no key starts with {prefix!r} (e.g. {next(iter(state))!r}): "
                         f"the checkpoint is already single-card")
    if lacking:
        raise ValueError(f"{len(lacking)} of {len(state)} keys lack {prefix!r} (e.g. {lacking[0]!r}); "
                         f"a multi-GPU checkpoint has it on every key")
    return {k[len(prefix):]: v for k, v in state.items()}


def to_multi(state: dict, prefix: str = MULTI_GPU_PREFIX) -> dict:
    """Keys with ``prefix``, as ``paddle.DataParallel`` saves them; no key may carry it yet."""
    if not state:
        raise ValueError("the checkpoint holds no keys")
    having = [k for k in state if k.startswith(prefix)]
    if having:
        raise ValueError(f"{len(having)} keys already start with {prefix!r} (e.g. {having[0]!r}): "
                         f"the checkpoint is already multi-GPU")
    return {prefix + k: v for k, v in state.items()}


def official_to_supernet(state: dict, space: SearchSpace, reorder: bool) -> dict:
    """The supernet state of ``space`` initialised from the full ResNet48 ``state``."""
    supernet = ResNetSuperNet(space)
    load_resnet48_pretrained(supernet, strip_wrapper_prefixes(state), reorder=reorder)
    return supernet.state_dict()


def save_new(state: dict, output: str, inputs: list[str], force: bool) -> None:
    """Save ``state`` to ``output`` atomically, never over an input, over an old output only if forced."""
    out = os.path.realpath(output)
    if any(os.path.realpath(path) == out for path in inputs):
        raise ValueError(f"output {output!r} is the input; choose another path")
    if os.path.exists(output) and not force:
        raise ValueError(f"output {output!r} exists; pass --force to replace it")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f"{out}.tmp{os.getpid()}"
    paddle.save(state, tmp)
    os.replace(tmp, out)


def load_state(path: str) -> tuple[dict, str]:
    resolved = resolve_checkpoint(path)
    return read_state_dict(resolved), resolved  # names the file if it is not a checkpoint


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("to_single", "to_multi", "from_official"))
    parser.add_argument("input", help="checkpoint (.pdparams, or the path without the suffix)")
    parser.add_argument("output", help="where to write the converted .pdparams")
    parser.add_argument("--config", help="from_official: YAML whose SearchSpace the supernet uses")
    parser.add_argument("--reorder", action="store_true",
                        help="from_official: sort mid channels by L1 importance (the baseline's option)")
    parser.add_argument("--force", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    try:
        state, source = load_state(args.input)
        if args.kind == "to_single":
            converted = to_single(state)
        elif args.kind == "to_multi":
            converted = to_multi(state)
        else:
            if args.config is None:
                raise ValueError("from_official needs --config (the search space of the supernet)")
            space = SearchSpace.from_config(section(load_config(args.config), "SearchSpace"))
            converted = official_to_supernet(state, space, args.reorder)
        save_new(converted, args.output, [args.input, source], args.force)
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"convert_model.py: error: {exc}")
    print(f"{args.kind}: {source} -> {args.output} ({len(converted)} keys)")


if __name__ == "__main__":
    main()
