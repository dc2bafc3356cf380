"""Saving fitted predictors to a folder, loading them, and ranking a new arch list.

Folder layout::

    DIR/meta.json          track, tasks, code length, Track-1 grammar, per-kind CV results
    DIR/mlp.pdparams       the batched MLP (paddle.save of its state dict)
    DIR/<baseline>.pkl     scikit-learn estimators, state[fold][task] (pickle: load only
                           folders you made yourself)

A folder is written under a temporary name and renamed, and never over an existing one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import tempfile

import numpy as np
import paddle

from ..search_space import SearchSpace
from . import mlp
from .codes import ArchSet
from .cv import Fitted, ensemble_scores

FORMAT = "hnas.predictor/1"


def space_fields(space: SearchSpace) -> dict:
    """The constructor arguments of a search space, as JSON-able lists."""
    return {f.name: getattr(space, f.name) for f in dataclasses.fields(space) if f.init}


def check_new_folder(folder: str) -> None:
    """Raise ``ValueError`` unless ``folder`` is absent or an empty folder."""
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        raise ValueError(f"--save folder {folder!r} already exists and is not empty; "
                         "choose a new folder (nothing was overwritten)")


def save(folder: str, fitted: list, archs: ArchSet, space: SearchSpace | None, extra: dict) -> None:
    """Write every fitted kind and ``meta.json`` to ``folder`` (which must not hold files)."""
    check_new_folder(folder)
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".predictor.", dir=parent)
    try:
        models = {}
        for fit in fitted:
            entry = {"folds": fit.folds, "replicas": fit.replicas, "multi_task": fit.multi_task,
                     "taus": fit.taus.tolist(), "single_taus": fit.single_taus.tolist()}
            if fit.kind == "mlp":
                entry["file"] = "mlp.pdparams"
                entry["shape"] = [fit.state.weights[0].shape[0], fit.state.weights[0].shape[1],
                                  fit.state.weights[len(fit.state.weights) - 1].shape[2]]
                paddle.save(fit.state.state_dict(), os.path.join(tmp, entry["file"]))
            else:
                entry["file"] = f"{fit.kind}.pkl"
                with open(os.path.join(tmp, entry["file"]), "wb") as f:
                    pickle.dump(fit.state, f)
            models[fit.kind] = entry
        meta = {"format": FORMAT, "track": archs.track, "tasks": fitted[0].tasks,
                "code_length": int(archs.tokens.shape[1]),
                "space": space_fields(space) if archs.track == "track1" else None,
                "models": models, **extra}
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        os.chmod(tmp, 0o755)
        if os.path.isdir(folder):
            os.rmdir(folder)  # empty, checked above
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(folder: str) -> tuple:
    """``(meta, {kind: Fitted})`` of a folder written by :func:`save`."""
    path = os.path.join(folder, "meta.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--model {folder!r} is not a predictor folder (no meta.json); "
                                "make one with `python -m hnas.predictor train ... --save DIR`")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    fitted = {}
    for kind, entry in meta["models"].items():
        file = os.path.join(folder, entry["file"])
        if kind == "mlp":
            state = mlp.BatchedMLP(*entry["shape"])
            state.set_state_dict(paddle.load(file))
            state.eval()
        else:
            with open(file, "rb") as f:
                state = pickle.load(f)
        fitted[kind] = Fitted(kind, meta["tasks"], entry["folds"], entry["replicas"], state,
                              entry["multi_task"], np.array(entry["taus"]), np.array(entry["single_taus"]))
    return meta, fitted


def load_space(meta: dict) -> SearchSpace | None:
    """The Track-1 grammar a folder was trained with (None for Track 2)."""
    if not meta.get("space"):
        return None
    fields = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
              for k, v in meta["space"].items()}
    return SearchSpace(**fields)


def choose_kinds(fitted: dict, use: str) -> dict:
    """Task -> kind: ``use`` for every task, or with ``"best"`` the kind whose held-out tau
    (mean over folds) was highest on that task."""
    tasks = next(iter(fitted.values())).tasks
    if use != "best":
        if use not in fitted:
            raise ValueError(f"--use {use}: the folder holds {', '.join(fitted)} (choose one, or best)")
        return {t: use for t in tasks}
    return {t: max(fitted, key=lambda k: fitted[k].taus[i].mean()) for i, t in enumerate(tasks)}


def predict_scores(fitted: dict, kinds: dict, features: np.ndarray) -> dict:
    """Task -> ``[N]`` ensemble score of the chosen kind (larger = better).

    A baseline scores only the tasks it was chosen for (boosted trees cost about 0.3 s per
    model and 20,000 archs); the batched MLP scores all its members in one pass.
    """
    out = {}
    for kind in set(kinds.values()):
        fit = fitted[kind]
        tasks = [t for t in fit.tasks if kinds.get(t) == kind]
        if kind != "mlp":
            cols = [fit.tasks.index(t) for t in tasks]
            fit = dataclasses.replace(fit, tasks=tasks, state=[[m[c] for c in cols] for m in fit.state])
        scores = ensemble_scores(fit.scores(features))
        out.update({t: scores[:, fit.tasks.index(t)] for t in tasks})
    return {t: out[t] for t in kinds}
