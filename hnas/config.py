"""YAML configs in sections (SearchSpace / Data / Train / Eval) with ``-o Section.key=value``.

A run saves its resolved config beside its checkpoints, so every result says how it was made.
"""
from __future__ import annotations

import copy
import os

import yaml

# Every section an hnas CLI reads.  A config file may hold sections of other CLIs (one file
# serves training, stand-alone training and ranking), but no section outside this list and the
# reading CLI's own: a misspelt "Trian:" would otherwise be ignored without a word.
CONFIG_SECTIONS = ("SearchSpace", "Train", "Data", "Eval", "Standalone", "Strategy", "Phases")


def load_config(path: str | None, overrides: list[str] | None = None, sections=None) -> dict:
    """Read ``path`` (or start empty) and apply ``Section.key=value`` overrides in order.

    Values are parsed as YAML (``-o Train.lr=0.1``, ``-o SearchSpace.image_sizes=[32]``).
    With ``sections`` (the sections the calling CLI reads), an override must name one of them
    and the file may hold only those and the other CLIs' (:data:`CONFIG_SECTIONS`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a YAML syntax error (with its line), a file that is not a mapping of
            sections, an unknown section, or a malformed override.
    """
    cfg: dict = {}
    if path is not None:
        cfg = read_yaml(path)
        if sections is not None:
            check_sections(cfg, sections, f"config {path}")
    for item in overrides or []:
        apply_override(cfg, item, sections)
    return cfg


def read_yaml(path: str) -> dict:
    """A YAML file of sections as a dict; errors name the file (and the line of a syntax error)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    with open(path) as f:
        try:
            cfg = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"config {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"config {path!r} must be a mapping of sections, got {type(cfg).__name__}")
    base = cfg.pop(BASE_KEY, None)
    if base is not None:
        if not isinstance(base, str):
            raise ValueError(f"config {path}: {BASE_KEY} must be the path of another config, got {base!r}")
        base_path = os.path.join(os.path.dirname(os.path.abspath(path)), base)
        if os.path.abspath(base_path) in _reading:
            raise ValueError(f"config {path}: {BASE_KEY} {base!r} includes itself")
        _reading.add(os.path.abspath(base_path))
        try:
            cfg = merge_configs(read_yaml(base_path), cfg)
        finally:
            _reading.discard(os.path.abspath(base_path))
    return cfg


# A config may start from another (``_base_: ../resnet48_small.yaml``, relative to the file):
# its sections are read first and this file's keys replace theirs, mapping by mapping.
BASE_KEY = "_base_"
_reading: set = set()


def merge_configs(base: dict, update: dict) -> dict:
    """``base`` with ``update``'s keys replacing its own; nested mappings merge, lists replace."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_configs(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def check_sections(cfg: dict, sections, source: str) -> None:
    """Fail on a top-level section of ``cfg`` that neither this CLI (``sections``) nor any other
    hnas CLI reads, naming it and the known ones."""
    known = list(dict.fromkeys([*sections, *CONFIG_SECTIONS]))
    unknown = [name for name in cfg if name not in known]
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {unknown}; known sections: {known}")


def _yaml_problem(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


def apply_override(cfg: dict, item: str, sections=None) -> None:
    """Set ``Section.key[.subkey]=value`` in ``cfg`` in place; with ``sections``, ``Section``
    must be one of them (an override of a section nothing reads would be ignored silently)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like Section.key=value")
    dotted, raw = item.split("=", 1)
    keys = dotted.strip().split(".")
    if len(keys) < 2 or not all(keys):
        raise ValueError(f"override {item!r} must name a section and a key, e.g. Train.lr=0.1")
    if sections is not None and keys[0] not in sections:
        raise ValueError(f"override {item!r}: unknown section {keys[0]!r}; this command reads "
                         f"the sections {list(sections)}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(exc)})") from None
    node = cfg
    for key, following in zip(keys[:-1], keys[1:]):
        node = _child(node, key, item, create=not following.isdigit())
    if isinstance(node, list):
        node[_list_index(node, keys[-1], item)] = value
    else:
        node[keys[-1]] = value


def _child(node, key: str, item: str, create: bool):
    """``node[key]`` for a mapping (created empty if missing and ``create``) or, with a numeric
    key, a list element (``-o Phases.0.epochs=1``)."""
    if isinstance(node, list):
        child = node[_list_index(node, key, item)]
    elif isinstance(node, dict):
        if key not in node and not create:
            raise ValueError(f"override {item!r}: {key!r} is not set, so it has no element to change")
        child = node.setdefault(key, {})
    else:
        raise ValueError(f"override {item!r}: {key!r} is inside a value, not a section")
    if not isinstance(child, (dict, list)):
        raise ValueError(f"override {item!r}: {key!r} is not a section")
    return child


def _list_index(node: list, key: str, item: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ValueError(f"override {item!r}: {key!r} is not an index of a list of {len(node)}")
    return int(key)


def section(cfg: dict, name: str) -> dict:
    """A copy of one section (empty if absent)."""
    value = cfg.get(name) or {}
    if not isinstance(value, dict):
        raise ValueError(f"config section {name!r} must be a mapping")
    return copy.deepcopy(value)


def check_keys(values: dict, known, name: str) -> None:
    """Fail on keys of section ``name`` that nothing reads (a typo would otherwise be ignored)."""
    known = list(known)  # may be a generator: it is read twice below
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {name} keys {unknown}; known: {sorted(known)}")


def save_config(cfg: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    os.replace(tmp, path)
