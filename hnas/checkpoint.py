"""Checkpoints: atomic saves, path resolution, and loading whatever the key layout.

A checkpoint ``NAME`` in ``save_dir`` is ``NAME.pdparams`` (model weights and BN statistics) plus
``NAME.pdopt`` (optimizer, LR schedule, epoch, step, RNG state).  ``latest`` is a one-line file
naming the newest complete checkpoint; it is replaced only after both files are in place, and
every file is written to a temporary name first, so a kill during a save never leaves a broken
latest checkpoint.
"""
from __future__ import annotations

import hashlib
import math
import os

import numpy as np
import paddle

try:
    import fcntl
except ImportError:  # Windows: run folders are not locked
    fcntl = None

MODEL_SUFFIX = ".pdparams"
STATE_SUFFIX = ".pdopt"
LATEST = "latest"
# Prefixes that wrappers add to every key: paddle.DataParallel, hapi/OFA wrappers, distillers.
WRAPPER_PREFIXES = ("_layers.", "model.", "_model.", "student.", "backbone.")
RUN_LOCK = ".lock"


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint (unreadable, truncated, not a state dict, or
    holding non-finite weights); the message names the file."""


class LockedError(RuntimeError):
    """A run folder or shard file that another process is using."""


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
    checkpoint path with or without the ``.pdparams`` suffix (any existing file is taken as
    given; whether it holds a checkpoint is for the loader to tell).
    """
    if path.endswith(STATE_SUFFIX) and os.path.isfile(path):
        raise CheckpointError(f"{path} is a training state (optimizer, epoch), not model weights; "
                              f"pass {path[:-len(STATE_SUFFIX)] + MODEL_SUFFIX}")
    if os.path.isfile(path):
        return path
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


def lock_run_dir(save_dir: str, resume: str | None = None):
    """Lock run folder ``save_dir`` for this process (an ``fcntl`` lock on ``save_dir/.lock``,
    released when the process ends, however it ends), then check it as :func:`check_run_dir`.

    Two trainings into one folder would interleave their logs and checkpoints; the second one
    fails here instead.  Keep the returned file open for as long as the run lasts.

    Raises:
        LockedError: another process holds the lock.
        FileExistsError: see :func:`check_run_dir`.
    """
    os.makedirs(save_dir, exist_ok=True)
    lock = open(os.path.join(save_dir, RUN_LOCK), "a+")
    if fcntl is not None:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip()
            lock.close()
            raise LockedError(f"{save_dir!r} is in use by another training{f' ({owner})' if owner else ''}; "
                              f"wait for it to end or choose another --save_dir") from None
    try:
        check_run_dir(save_dir, resume)
    except BaseException:
        lock.close()
        raise
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}\n")
    lock.flush()
    return lock


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
    stem = model_path[: -len(MODEL_SUFFIX)] if model_path.endswith(MODEL_SUFFIX) else model_path
    return stem + STATE_SUFFIX


def read_state_dict(path: str) -> dict:
    """``paddle.load(path)``, which must give a dict of tensors or arrays.

    Raises:
        CheckpointError: the file is truncated, is not a Paddle file, or holds something else
            (the message names the file and says so, instead of Paddle's parse error).
    """
    try:
        state = paddle.load(path)
    except (ValueError, EOFError, OSError, RuntimeError, ImportError, AttributeError, IndexError,
            KeyError, TypeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointError(f"{path} is not a readable Paddle checkpoint: it is truncated or not a "
                              f".pdparams file ({type(exc).__name__}: {reason})") from None
    if not isinstance(state, dict) or not state:
        kind = "an empty dict" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise CheckpointError(f"{path} holds {kind}, not a state dict of named weights")
    return state


def load_model_state(path: str) -> dict:
    """Model weights from ``path`` (see :func:`resolve_checkpoint`), wrapper prefixes removed."""
    return strip_wrapper_prefixes(read_state_dict(resolve_checkpoint(path)))


def first_non_finite(state: dict) -> str | None:
    """The name of the first floating-point entry of ``state`` holding NaN or inf, else None."""
    for name, value in state.items():
        array = value.numpy() if isinstance(value, paddle.Tensor) else value
        if isinstance(array, np.ndarray) and np.issubdtype(array.dtype, np.floating) \
                and not np.isfinite(array).all():
            return name
        if isinstance(array, float) and not math.isfinite(array):
            return name
    return None


def check_finite(state: dict, source: str) -> None:
    """Refuse weights with NaN or inf (a diverged run): every arch would score the same."""
    name = first_non_finite(state)
    if name is not None:
        raise CheckpointError(f"{source} holds non-finite values (NaN or inf) in {name!r}: the run "
                              f"that wrote it diverged; use an earlier checkpoint (epoch_N)")


def file_identity(path: str) -> dict:
    """Size and SHA-256 of a file: what a shard file records of the checkpoint it scored, so
    a checkpoint replaced at the same path is noticed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"size": os.path.getsize(path), "sha256": digest.hexdigest()}


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
