"""Arch lists a predictor learns from: Track-2 codes and tasks, or Track-1 codes and ``acc``.

Track 2 (performance estimation) codes are 37 characters::

    D  (h m e) * 12

``D`` is the depth class (``j`` = 10 layers, ``k`` = 11, ``l`` = 12); then per layer three
digits: number of heads, MLP ratio and embedding choice, each ``1..3``.  Layers past the depth
are written ``000``.  Every arch carries one rank per task (``cplfw_rank``, ... ``sop_rank``);
the ranks of the official file are 0-based and larger means better on that task.

Track 1 files hold 52-digit codes in the grammar of :mod:`hnas.search_space` and one ``acc``
per arch, the only "task".

Both are turned into ``tokens``: an ``int64 [N, L]`` array with one class in ``0..9`` per
position, ``-1`` for padding (a layer or block past the depth), which the features one-hot
encode as an all-zero row.  Every error names the arch key, its code and the position.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..io import read_arch_json
from ..search_space import ArchCodeError, SearchSpace

TRACK2_TASKS = ("cplfw_rank", "market1501_rank", "dukemtmc_rank", "msmt17_rank",
                "veri_rank", "vehicleid_rank", "veriwild_rank", "sop_rank")
TRACK2_DEPTHS = {"j": 10, "k": 11, "l": 12}
TRACK2_LAYERS = 12
TRACK2_LENGTH = 1 + 3 * TRACK2_LAYERS
TRACK2_CHOICES = 3
LAYER_FIELDS = ("heads", "MLP ratio", "embedding")
NUM_CLASSES = 10  # one-hot width per position
TRACK1_NOTE = ("note: the CVPR 2022 Track-1 rules did not allow predictor-made accuracies in a "
               "Track-1 submission; use this ranking for your own search, not as a submission")


@dataclass
class ArchSet:
    """A parsed arch list.

    Attributes:
        track: ``"track2"`` or ``"track1"``.
        keys: arch keys in file order (``archN``).
        codes: the codes as written in the file.
        tokens: ``int64 [N, L]`` classes in ``0..9``, ``-1`` for padding (L = 37 or 52).
        targets: task name -> ``float64 [N]`` (larger is better), for the tasks asked for.
    """

    track: str
    keys: list
    codes: list
    tokens: np.ndarray
    targets: dict

    @property
    def tasks(self) -> list:
        return list(self.targets)


def track2_tokens(code: str, name: str = "arch") -> np.ndarray:
    """Classes of one Track-2 code: depth class -> 0..2, heads -> 1..3, MLP ratio -> 4..6,
    embedding -> 7..9, padding -> -1.

    Raises:
        ArchCodeError: naming ``name``, the code, the position and what was expected there.
    """
    if not isinstance(code, str):
        raise ArchCodeError(f"{name}: arch code must be a string, got {type(code).__name__}")
    if len(code) != TRACK2_LENGTH:
        raise ArchCodeError(f"{name}: Track-2 code {code!r} has {len(code)} characters, expected "
                            f"{TRACK2_LENGTH} (depth class + 3 per layer x {TRACK2_LAYERS})")
    if code[0] not in TRACK2_DEPTHS:
        raise ArchCodeError(f"{name}: Track-2 code {code!r}: depth class {code[0]!r} at position 0 "
                            f"is not one of j/k/l (10/11/12 layers)")
    depth = TRACK2_DEPTHS[code[0]]
    tokens = np.full(TRACK2_LENGTH, -1, dtype=np.int64)
    tokens[0] = "jkl".index(code[0])
    for pos in range(1, TRACK2_LENGTH):
        layer, field = divmod(pos - 1, 3)
        ch = code[pos]
        where = f"position {pos} (layer {layer + 1} {LAYER_FIELDS[field]})"
        if layer >= depth:
            if ch != "0":
                raise ArchCodeError(f"{name}: Track-2 code {code!r}: {where} is past depth "
                                    f"{depth} ({code[0]!r}) and must be 0, got {ch!r}")
            continue
        if not ("1" <= ch <= str(TRACK2_CHOICES)):
            raise ArchCodeError(f"{name}: Track-2 code {code!r}: {where} must be 1..{TRACK2_CHOICES}, "
                                f"got {ch!r}")
        tokens[pos] = 1 + 3 * field + int(ch) - 1
    return tokens


def track1_tokens(code: str, space: SearchSpace, name: str = "arch") -> np.ndarray:
    """Classes of one Track-1 code (normalised to 52 digits): digit d -> d - 1, a ``00``
    block past the depth -> padding (-1).  Validated by the search space's grammar."""
    try:
        full = space.normalize(code)
    except ArchCodeError as exc:
        raise ArchCodeError(f"{name}: {exc}") from None
    digits = np.array([int(ch) for ch in full], dtype=np.int64)
    return np.where(digits == 0, -1, digits - 1)


def detect_track(data: dict, path: str) -> str:
    """``"track2"`` if the first code starts with a letter, ``"track1"`` if it is all digits."""
    key, entry = next(iter(data.items()))
    code = entry["arch"]
    if code[:1].isalpha():
        return "track2"
    if code.isdigit():
        return "track1"
    raise ValueError(f"{path}: {key}: arch code {code!r} is neither a Track-2 code (j/k/l + 36 "
                     f"digits) nor a Track-1 code (digits)")


def resolve_tasks(track: str, available: list, asked: list | None) -> list:
    """Task names to use: all available ones, or ``asked`` (``cplfw`` means ``cplfw_rank``)."""
    if track == "track1":
        if asked and any(t != "acc" for t in asked):
            raise ValueError(f"a Track-1 file has one target, 'acc'; got --task {' '.join(asked)}")
        return ["acc"]
    if not asked:
        return list(available)
    out = []
    for task in asked:
        name = task if task.endswith("_rank") else task + "_rank"
        if name not in TRACK2_TASKS:
            raise ValueError(f"unknown task {task!r}; Track-2 tasks are "
                             f"{', '.join(t[:-5] for t in TRACK2_TASKS)}")
        if name not in out:
            out.append(name)
    return out


def load_archs(path: str, tasks: list | None = None, need_targets: bool = True,
               space: SearchSpace | None = None) -> ArchSet:
    """Read and validate an arch list.

    Args:
        path: a Track-2 (``{"archN": {"arch": "l231...", "cplfw_rank": 9, ...}}``) or
            Track-1 (``{"archN": {"arch": "1252...", "acc": 0.71}}``) JSON.
        tasks: the tasks to read (default: every Track-2 task the first arch has, or ``acc``).
        need_targets: False for ``predict``: codes only, no task values read.
        space: the Track-1 grammar (default: the competition's).

    Raises:
        FileNotFoundError, ValueError (ArchCodeError included): one line naming the arch.
    """
    data = read_arch_json(path)
    track = detect_track(data, path)
    keys = list(data)
    codes = [data[k]["arch"] for k in keys]
    if track == "track2":
        rows = [track2_tokens(c, k) for k, c in zip(keys, codes)]
        available = [t for t in TRACK2_TASKS if t in data[keys[0]]]
    else:
        space = space or SearchSpace()
        rows = [track1_tokens(c, space, k) for k, c in zip(keys, codes)]
        available = ["acc"]
    targets = {}
    if need_targets:
        names = resolve_tasks(track, available, tasks)
        if not names:
            raise ValueError(f"{path}: {keys[0]} has none of the Track-2 task fields "
                             f"({', '.join(TRACK2_TASKS)})")
        for task in names:
            targets[task] = np.array([_target(data, k, task, path) for k in keys], dtype=np.float64)
            if np.all(targets[task] == targets[task][0]):
                raise ValueError(f"{path}: every arch has the same {task} ({targets[task][0]:g}); "
                                 "there is nothing to learn")
    return ArchSet(track, keys, codes, np.stack(rows), targets)


def _target(data: dict, key: str, task: str, path: str) -> float:
    if task not in data[key]:
        raise ValueError(f"{path}: {key} has no {task!r} field")
    value = data[key][task]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: {key}: {task} must be a finite number, got {value!r}")
    return float(value)
