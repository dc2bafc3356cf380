"""Checkpoints: atomic saves, path resolution, and loading whatever the key layout.

A checkpoint ``NAME`` in ``save_dir`` is ``NAME.pdparams`` (model weights and BN statistics) plus
``NAME.pdopt`` (optimizer, LR schedule, epoch, step, RNG state).  ``latest`` is a one-line file
naming the newest complete checkpoint; it is replaced only after both files are in place, and
every file is written to a temporary name first, so a kill during a save never leaves a broken
latest checkpoint.
"""
from __future__ import annotations

import os

import paddle

MODEL_SUFFIX = ".pdparams"
STATE_SUFFIX = ".pdopt"
LATEST = "latest"
# Prefixes that wrappers add to every key: paddle.DataParallel, hapi/OFA wrappers, distillers.
WRAPPER_PREFIXES = ("_layers.", "model.", "_model.", "student.", "backbone.")


def save_checkpoint(save_dir: str, name: str, model_state: dict, train_state: dict | None = None) -> str:
    """Write ``name`` atomically and point ``latest`` at it; returns the ``.pdparams`` path."""
    os.makedirs(save_dir, exist_ok=True)
    base = os.path.join(save_dir, name)
    _atomic_save(model_state, base + MODEL_SUFFIX)
    if train_state is not None:
        _atomic_save(train_state, base + STATE_SUFFIX)
    _atomic_write_text(os.path.join(save_dir, LATEST), name + "\n")
    return base + MODEL_SUFFIX


def resolve_checkpoint(path: str) -> str:
    """The ``.pdparams`` file that ``path`` means.

    ``path`` may be a run folder (its ``final`` checkpoint, else the one ``latest`` names), or a
    checkpoint path with or without the ``.pdparams`` suffix.
    """
    tried = []
    if os.path.isdir(path):
        final = os.path.join(path, "final" + MODEL_SUFFIX)
        tried.append(final)
        if os.path.isfile(final):
            return final
        pointer = os.path.join(path, LATEST)
        tried.append(pointer)
        if os.path.isfile(pointer):
            with open(pointer) as f:
                name = f.read().strip()
            candidate = os.path.join(path, name + MODEL_SUFFIX)
            tried.append(candidate)
            if os.path.isfile(candidate):
                return candidate
    else:
        for candidate in (path, path + MODEL_SUFFIX):
            tried.append(candidate)
            if candidate.endswith(MODEL_SUFFIX) and os.path.isfile(candidate):
                return candidate
    raise FileNotFoundError(f"no checkpoint found for {path!r}; tried: {', '.join(tried)}")


def check_run_dir(save_dir: str, resume: str | None) -> None:
    """Refuse to start a new run in a folder that already holds one: its checkpoints, log and
    config would be overwritten.  Resuming a checkpoint of that same folder is fine."""
    if not save_dir or not os.path.isfile(os.path.join(save_dir, LATEST)):
        return
    if resume is not None:
        folder = os.path.dirname(os.path.abspath(resolve_checkpoint(resume)))
        if os.path.samefile(folder, save_dir):
            return
    raise FileExistsError(f"{save_dir!r} already holds a run (see its 'latest' checkpoint); pass "
                          f"--resume {save_dir} to continue it, or choose another --save_dir")


def train_state_path(model_path: str) -> str:
    """The ``.pdopt`` file beside a ``.pdparams`` file."""
    return model_path[: -len(MODEL_SUFFIX)] + STATE_SUFFIX


def load_model_state(path: str) -> dict:
    """Model weights from ``path`` (see :func:`resolve_checkpoint`), wrapper prefixes removed."""
    state = paddle.load(resolve_checkpoint(path))
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} does not hold a state dict")
    return strip_wrapper_prefixes(state)


def strip_wrapper_prefixes(state: dict) -> dict:
    """Remove prefixes that every key shares and that only wrappers add (``_layers.`` etc.)."""
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def load_into(model: paddle.nn.Layer, state: dict, source: str = "checkpoint") -> None:
    """Set ``state`` into ``model``; raise naming missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}"
                  for k in own if k in state and list(state[k].shape) != list(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:5])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:5])})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({'; '.join(mismatched[:5])})")
    if problems:
        raise ValueError(f"{source} does not fit the model: " + "; ".join(problems))
    model.set_state_dict(state)


def _atomic_save(obj, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    paddle.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
