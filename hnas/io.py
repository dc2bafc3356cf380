"""Reading and writing arch lists in the submission format, for every script and CLI.

The Track-1 format is one JSON object ``{"archN": {"acc": float, "arch": code}, ...}`` whose key
order is the submission order.  Writes are atomic (temp file + rename), so an interrupted run
never leaves a truncated JSON behind, and scripts refuse to write over their own inputs.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Mapping, Sequence



def read_arch_json(path: str, require_acc: bool = False) -> dict:
    """Read an arch list, keeping key order.

    Args:
        path: a JSON file in the submission format.
        require_acc: also check that every entry has a finite numeric ``acc`` (a score file).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not an arch list, or repeats a key (which JSON would silently
            resolve to the last one); the message names the file and the entry.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"arch JSON {path!r} does not exist (or is not a file)")
    with open(path) as f:
        try:
            data = json.load(f, object_pairs_hook=_refuse_repeated_keys)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        except _RepeatedKey as exc:
            raise ValueError(f"{path}: key {exc.args[0]!r} appears more than once (JSON keeps only the "
                             f"last one); make the keys unique") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of archs, got {type(data).__name__}")
    for key, entry in data.items():
        if not isinstance(entry, dict) or "arch" not in entry:
            raise ValueError(f"{path}: entry {key!r} must be an object with an 'arch' field")
    if not data:
        raise ValueError(f"{path} holds no archs")
    for key, entry in data.items():
        if not isinstance(entry["arch"], str):
            raise ValueError(f"{path}: entry {key!r} has a non-string arch code {entry['arch']!r}")
        if require_acc:
            acc = entry.get("acc")
            if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not math.isfinite(acc):
                raise ValueError(f"{path}: entry {key!r} needs a finite numeric 'acc', got {acc!r}")
    return data


class _RepeatedKey(Exception):
    pass


def _refuse_repeated_keys(pairs: list) -> dict:
    """``object_pairs_hook`` for :func:`json.load`: a dict, unless a key repeats."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def atomic_write(path: str, data: str | bytes) -> None:
    """Write text or bytes to ``path`` through a temp file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_arch_json(data: Mapping[str, dict], path: str, indent: int | None = None) -> None:
    """Atomically write an arch list in key order (one line, like the official file)."""
    atomic_write(path, json.dumps(dict(data), indent=indent))


def refuse_overwrite(output: str, inputs: Sequence[str]) -> None:
    """Raise ``ValueError`` if ``output`` is one of ``inputs`` (scripts never clobber their input)."""
    out = os.path.realpath(output)
    for path in inputs:
        if path is not None and os.path.realpath(path) == out:
            raise ValueError(f"output {output!r} is also an input file; choose another output path")


def with_scores(data: Mapping[str, dict], scores: Mapping[str, float] | Sequence[float]) -> dict:
    """A copy of ``data`` whose ``acc`` fields hold ``scores`` (per key, or in key order).

    Every other field and the key order are kept, so the result is a valid submission.
    """
    keys = list(data)
    if not isinstance(scores, Mapping):
        scores = list(scores)
        if len(scores) != len(keys):
            raise ValueError(f"got {len(scores)} scores for {len(keys)} archs")
        scores = dict(zip(keys, scores))
    missing = [k for k in keys if k not in scores]
    if missing:
        raise ValueError(f"no score for {len(missing)} arch(s), e.g. {missing[0]!r}")
    out = {}
    for key in keys:
        entry = dict(data[key])
        entry["acc"] = float(scores[key])
        out[key] = entry
    return out


def split_shards(data: Mapping[str, dict], num_shards: int) -> list[dict]:
    """Cut an arch list into ``num_shards`` contiguous, nearly equal parts in key order.

    Contiguous parts concatenated in shard order give back the original order.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    keys = list(data)
    if num_shards > len(keys):
        raise ValueError(f"cannot split {len(keys)} archs into {num_shards} non-empty shards")
    base, extra = divmod(len(keys), num_shards)
    shards, start = [], 0
    for i in range(num_shards):
        stop = start + base + (1 if i < extra else 0)
        shards.append({k: data[k] for k in keys[start:stop]})
        start = stop
    return shards


def merge_shards(shards: Sequence[tuple[str, Mapping[str, dict]]],
                 reference: Mapping[str, dict] | None = None) -> dict:
    """Merge ``(name, arch list)`` shards into one list.

    A key found in two shards must carry identical entries.  With ``reference``, the result
    follows its key order, must cover exactly its keys, and every code must match it.

    Raises:
        ValueError: naming the conflicting, missing or unexpected key and where it came from.
    """
    merged: dict = {}
    origin: dict = {}
    for name, shard in shards:
        for key, entry in shard.items():
            if key in merged and merged[key] != entry:
                raise ValueError(f"key {key!r} differs between {origin[key]} ({merged[key]}) "
                                 f"and {name} ({entry})")
            merged.setdefault(key, entry)
            origin.setdefault(key, name)
    if reference is None:
        return merged
    missing = [k for k in reference if k not in merged]
    if missing:
        raise ValueError(f"{len(missing)} reference arch(s) are in no shard, e.g. {missing[:3]}")
    extra = [k for k in merged if k not in reference]
    if extra:
        raise ValueError(f"{len(extra)} arch(s) are not in the reference, e.g. {extra[0]!r} "
                         f"from {origin[extra[0]]}")
    for key, entry in reference.items():
        if str(merged[key].get("arch")) != str(entry.get("arch")):
            raise ValueError(f"arch {key!r} has code {merged[key].get('arch')!r} in {origin[key]} "
                             f"but {entry.get('arch')!r} in the reference")
    return {key: merged[key] for key in reference}
