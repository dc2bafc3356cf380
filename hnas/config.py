"""YAML configs in sections (SearchSpace / Data / Train / Eval) with ``-o Section.key=value``.

A run saves its resolved config beside its checkpoints, so every result says how it was made.
"""
from __future__ import annotations

import copy
import os

import yaml


def load_config(path: str | None, overrides: list[str] | None = None) -> dict:
    """Read ``path`` (or start empty) and apply ``Section.key=value`` overrides in order.

    Values are parsed as YAML (``-o Train.lr=0.1``, ``-o SearchSpace.image_sizes=[32]``).
    """
    cfg: dict = {}
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} does not exist")
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
        if not isinstance(cfg, dict):
            raise ValueError(f"config {path!r} must be a mapping of sections, got {type(cfg).__name__}")
    for item in overrides or []:
        apply_override(cfg, item)
    return cfg


def apply_override(cfg: dict, item: str) -> None:
    """Set ``Section.key[.subkey]=value`` in ``cfg`` in place."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like Section.key=value")
    dotted, raw = item.split("=", 1)
    keys = dotted.strip().split(".")
    if len(keys) < 2 or not all(keys):
        raise ValueError(f"override {item!r} must name a section and a key, e.g. Train.lr=0.1")
    node = cfg
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {key!r} is not a section")
    node[keys[-1]] = yaml.safe_load(raw)


def section(cfg: dict, name: str) -> dict:
    """A copy of one section (empty if absent)."""
    value = cfg.get(name) or {}
    if not isinstance(value, dict):
        raise ValueError(f"config section {name!r} must be a mapping")
    return copy.deepcopy(value)


def check_keys(values: dict, known, name: str) -> None:
    """Fail on keys of section ``name`` that nothing reads (a typo would otherwise be ignored)."""
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {name} keys {unknown}; known: {sorted(known)}")


def save_config(cfg: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    os.replace(tmp, path)
