"""Multi-phase recipes: a training run as an ordered list of phases (OFA, few-shot, 1st place).

A phase is data (once-for-all's view): its strategy, epochs and learning rate, the part of the
search space it samples, where its weights start and which frozen network it distils from.
``Phases:`` in a config lists them; :func:`parse_phases` checks all of them before anything
trains, and ``train_supernet.py`` runs them in order, each into ``save_dir/<index>_<name>/``.
A finished phase (its folder holds ``final``) is never retrained; the phase that was running
resumes from its last checkpoint.  A ``split`` phase (few-shot NAS) becomes one child per
value of a decision, each trained only on its part of the space and ranked by
``eval_supernet.py`` for the archs it owns.

Phase keys::

    name: depth1                     # folder save_dir/<index>_depth1 (required)
    strategy: {name: baseline, ...}  # a strategy name or its options section (required)
    epochs: 25                       # Train.max_epoch of the phase (required)
    lr: 0.01                         # per 256 images, like Train.lr (default: Train.lr)
    warmup: 0                        # epochs (default: Train.warmup)
    train: {dyna_batch_size: 2}      # any other Train key for this phase
    depths: [[4, 5], [4, 5], [5, 6, 7, 8], [4, 5]]  # allowed depths per stage
    widths: [[1], [1], [1], [1]]     # allowed width codes per stage (conv1 and tied)
    stage_widths: ...                # allowed tied codes per stage only
    init_from: previous              # previous | a supernet checkpoint | null (fresh init)
    teacher_from: previous           # previous (its largest subnet, frozen) | a full ResNet48 .pdparams | null
    reorder: false                   # re-sort mid channels by L1 importance when the next phase starts
    split: stage4_width              # few-shot: one child per stage-4 tied code (or stage3_depth)
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field

from .checkpoint import MODEL_SUFFIX, file_identity, resolve_checkpoint
from .config import check_keys
from .evaluator import SubnetRanker, load_supernet
from .io import atomic_write
from .registry import STRATEGIES
from .sampling import Choices
from .search_space import Arch, SearchSpace

PHASE_KEYS = ("name", "strategy", "epochs", "lr", "warmup", "train", "depths", "widths", "stage_widths",
              "init_from", "teacher_from", "reorder", "split")
SPLITS = {
    "stage4_width": "one child per stage-4 tied width code",
    "stage3_depth": "one child per stage-3 depth",
}
PLAN_FILE = "recipe.json"


@dataclass
class Phase:
    """One resolved phase (a split phase resolves to one :class:`Phase` per child)."""

    index: int
    name: str
    strategy: dict
    train: dict
    folder: str
    depths: list | None = None
    widths: list | None = None
    stage_widths: list | None = None
    init_from: str | None = None
    teacher_from: str | None = None
    reorder: bool = False
    child: dict | None = None  # {"split": kind, "value": v} for a few-shot child
    constraints: Choices = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.index}_{self.name}" + (f"/{self.child['split']}={self.child['value']}" if self.child else "")

    def sampler_defaults(self) -> dict:
        """The phase's constraints (a few-shot child's split decision included) for its sampler."""
        c = self.constraints
        return {"depths": [list(v) for v in c.depths], "widths": [list(v) for v in c.widths],
                "stage_widths": [list(v) for v in c.stage_widths]}

    def largest(self) -> Arch:
        return self.constraints.largest()

    def finished(self) -> bool:
        return os.path.isfile(os.path.join(self.folder, "final" + MODEL_SUFFIX))


def parse_phases(entries, space: SearchSpace, save_dir: str, train_section: dict) -> list[Phase]:
    """Check every phase of a ``Phases:`` list and resolve it; errors name the phase and key.

    Raises ValueError for an unknown key or strategy, options the strategy does not take,
    constraints outside the search space, ``init_from``/``teacher_from: previous`` in the first
    phase, a missing file, or a split phase that is not the last one.
    """
    from .strategies.base import build_options

    if not isinstance(entries, list) or not entries:
        raise ValueError("Phases must be a non-empty list of phases (mappings)")
    phases: list[Phase] = []
    names = set()
    for index, entry in enumerate(entries):
        where = f"Phases[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a mapping with keys {list(PHASE_KEYS)}, got {entry!r}")
        check_keys(entry, PHASE_KEYS, where)
        for key in ("name", "strategy", "epochs"):
            if key not in entry:
                raise ValueError(f"{where} needs {key!r}")
        name = entry["name"]
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum() or name in names:
            raise ValueError(f"{where}.name {name!r} must be a unique word (letters, digits, _ or -)")
        names.add(name)
        where = f"phase {index} ({name})"
        strategy = {"name": entry["strategy"]} if isinstance(entry["strategy"], str) else dict(entry["strategy"])
        if "name" not in strategy:
            raise ValueError(f"{where}: strategy needs a name; known: {', '.join(STRATEGIES.names())}")
        try:
            cls = STRATEGIES.get(strategy["name"])
        except KeyError as exc:
            raise ValueError(f"{where}: {exc.args[0]}") from None
        build_options(cls.Options, {k: v for k, v in strategy.items() if k != "name"}, f"{where} strategy ({cls.name()})")
        train = dict(entry.get("train") or {})
        if not isinstance(entry.get("train") or {}, dict):
            raise ValueError(f"{where}: train must be a mapping of Train keys")
        train["max_epoch"] = entry["epochs"]
        for key in ("lr", "warmup"):
            if key in entry:
                train[key] = entry[key]
        _check_train(where, {**train_section, **train})
        for key in ("init_from", "teacher_from"):
            value = entry.get(key)
            if value == "previous" and index == 0:
                raise ValueError(f"{where}: {key}: previous needs an earlier phase")
            if value not in (None, "previous"):
                if not isinstance(value, str) or not os.path.exists(value):
                    raise ValueError(f"{where}: {key} {value!r} is neither 'previous' nor an existing file")
        if cls.needs_teacher and entry.get("teacher_from") is None:
            raise ValueError(f"{where}: strategy {cls.name()!r} distils from a frozen teacher: set "
                             f"teacher_from (previous, or a full ResNet48 .pdparams)")
        if phases and phases[-1].child is not None:
            raise ValueError(f"{where}: a split phase ({phases[-1].name}) must be the last phase")
        try:
            constraints = Choices(space, entry.get("depths"), entry.get("widths"), entry.get("stage_widths"))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        common = dict(index=index, name=name, strategy=strategy, train=train, depths=entry.get("depths"),
                      widths=entry.get("widths"), stage_widths=entry.get("stage_widths"),
                      init_from=entry.get("init_from"), teacher_from=entry.get("teacher_from"),
                      reorder=bool(entry.get("reorder", False)))
        folder = os.path.join(save_dir, f"{index}_{name}")
        split = entry.get("split")
        if split is None:
            phases.append(Phase(folder=folder, constraints=constraints, **common))
            continue
        if split not in SPLITS:
            raise ValueError(f"{where}: split {split!r} is not one of {sorted(SPLITS)}")
        for value, child in _split(constraints, split, entry, space):
            phases.append(Phase(folder=os.path.join(folder, f"{split}={value}"), child={"split": split, "value": value},
                                constraints=child, **common))
    return phases


def _check_train(where: str, section: dict) -> None:
    from .train_config import TrainConfig

    try:
        TrainConfig.from_config({k: v for k, v in section.items() if k != "save_dir"})
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _split(constraints: Choices, split: str, entry: dict, space: SearchSpace):
    """``(value, constraints)`` of each few-shot child: the phase's, with one decision fixed."""
    values = constraints.stage_widths[3] if split == "stage4_width" else constraints.depths[2]
    for value in values:
        depths = [list(d) for d in constraints.depths]
        stage_widths = [list(c) for c in constraints.stage_widths]
        if split == "stage4_width":
            stage_widths[3] = [value]
        else:
            depths[2] = [value]
        yield value, Choices(space, depths, [list(c) for c in constraints.widths], stage_widths)


def plan_table(phases: list[Phase], train_section: dict) -> str:
    """The phase plan as a markdown table (``--dry_run``)."""
    def allowed(values):
        return "all" if values is None else "/".join(",".join(str(v) for v in stage) for stage in values)

    rows = ["| phase | strategy | epochs | lr | warmup | depths | widths | stage widths | init | teacher |",
            "|---|---|---:|---:|---:|---|---|---|---|---|"]
    for p in phases:
        train = {**train_section, **p.train}
        options = ", ".join(f"{k}={v}" for k, v in p.strategy.items() if k != "name")
        rows.append(f"| {p.label} | {p.strategy['name']}{f' ({options})' if options else ''} | {train['max_epoch']} | "
                    f"{train.get('lr', '')} | {train.get('warmup', '')} | {allowed(p.depths)} | {allowed(p.widths)} | "
                    f"{allowed(p.stage_widths)} | {p.init_from or 'fresh'} | {p.teacher_from or '-'} |")
    return "\n".join(rows)


def write_plan(save_dir: str, phases: list[Phase]) -> str:
    """``save_dir/recipe.json``: each phase's folder and, for few-shot children, what they own;
    ``eval_supernet.py --resume save_dir`` routes archs with it."""
    plan = {"phases": [{"index": p.index, "name": p.name, "folder": os.path.relpath(p.folder, save_dir),
                        "child": p.child} for p in phases]}
    path = os.path.join(save_dir, PLAN_FILE)
    atomic_write(path, json.dumps(plan, indent=1))
    return path


def is_recipe_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, PLAN_FILE))


def final_checkpoints(save_dir: str) -> list[tuple[dict | None, str]]:
    """``[(child, checkpoint)]`` of a recipe folder's last phase: one entry, or one per few-shot
    child (``child = {"split": ..., "value": ...}``).  Raises if that phase has not finished."""
    with open(os.path.join(save_dir, PLAN_FILE)) as f:
        plan = json.load(f)["phases"]
    last = [p for p in plan if p["index"] == plan[-1]["index"]]
    result = []
    for p in last:
        folder = os.path.join(save_dir, p["folder"])
        final = os.path.join(folder, "final" + MODEL_SUFFIX)
        if not os.path.isfile(final):
            raise FileNotFoundError(f"recipe {save_dir!r}: its last phase {p['folder']} has not finished "
                                    f"(no {final}); resume the training first")
        result.append((p["child"], resolve_checkpoint(folder)))
    return result


def child_owns(child: dict | None, arch: Arch) -> bool:
    """Whether the few-shot child ``child`` (None: a one-shot supernet) ranks ``arch``."""
    if child is None:
        return True
    if child["split"] == "stage4_width":
        return arch.stage_codes[3] == child["value"]
    return arch.depths[2] == child["value"]


def recipe_identity(checkpoints: list[tuple[dict | None, str]]) -> dict:
    """What a ranking of a recipe folder depends on: every child's checkpoint identity."""
    return {os.path.basename(os.path.dirname(path)) or path: file_identity(path) for _, path in checkpoints}


def phase_config(cfg: dict, phase: Phase) -> dict:
    """The resolved config of one phase, saved beside its checkpoints."""
    out = copy.deepcopy(cfg)
    out.pop("Phases", None)
    out["Strategy"] = dict(phase.strategy)
    out["Train"] = {**out.get("Train", {}), **phase.train, "save_dir": phase.folder}
    out["Phase"] = {k: v for k, v in dataclasses.asdict(phase).items() if k not in ("constraints", "strategy", "train")}
    return out


def previous_phase(phases: list[Phase], phase: Phase) -> Phase:
    """The phase a ``previous`` reference of ``phase`` means: the last one of the index before."""
    return [p for p in phases if p.index == phase.index - 1][-1]


def run_phases(cfg: dict, phases: list[Phase], space: SearchSpace, datasets, num_workers: int,
               log=print, callbacks=()) -> bool:
    """Train every unfinished phase in order (see the module docstring).

    A phase whose folder holds a checkpoint but no ``final`` resumes from it exactly; the
    weights of ``init_from: previous`` and the teacher of ``teacher_from: previous`` are the
    previous phase's ``final`` (the teacher: its largest allowed subnet, exported and frozen).
    ``callbacks`` go to every phase's trainer.  Returns whether every phase has finished.
    """
    import paddle

    from .checkpoint import LATEST, load_into, load_model_state
    from .config import save_config
    from .models import ResNetSuperNet
    from .models.pretrained import build_teacher, reorder_mid_channels
    from .strategies import build_strategy
    from .train_config import TrainConfig
    from .trainer import Trainer

    train_set, val_set, calib_set = datasets
    for phase in phases:
        if phase.finished():
            log(f"phase {phase.label}: finished, skipped")
            continue
        phase_cfg = phase_config(cfg, phase)
        train_cfg = TrainConfig.from_config(phase_cfg["Train"])
        paddle.seed(train_cfg.seed)
        supernet = ResNetSuperNet(space)
        if phase.init_from is not None:
            source = previous_phase(phases, phase) if phase.init_from == "previous" else None
            path = resolve_checkpoint(source.folder if source else phase.init_from)
            load_into(supernet, load_model_state(path), source=path)
            if source is not None and source.reorder:
                reorder_mid_channels(supernet)
        teacher = None
        if phase.teacher_from == "previous":
            source = previous_phase(phases, phase)
            donor = ResNetSuperNet(space)
            path = resolve_checkpoint(source.folder)
            load_into(donor, load_model_state(path), source=path)
            teacher = donor.export(source.largest())
            teacher.eval()
            for param in teacher.parameters():
                param.stop_gradient = True
        elif phase.teacher_from is not None:
            teacher = build_teacher(space, phase.teacher_from)
        strategy = build_strategy(phase.strategy, space, train_cfg, teacher=teacher,
                                  sampler_defaults=phase.sampler_defaults())
        trainer = Trainer(supernet, strategy, train_cfg, config=phase_cfg, callbacks=list(callbacks))
        if os.path.isfile(os.path.join(phase.folder, LATEST)):
            trainer.load(phase.folder)
        log(f"phase {phase.label}: {phase.strategy['name']} from epoch {trainer.epoch} to {train_cfg.max_epoch}")
        if trainer.is_main:
            save_config(phase_cfg, os.path.join(phase.folder, "config.yaml"))
        trainer.fit(train_set, val_set, calib_set, num_workers=num_workers)
        if trainer.epoch < trainer.epochs:
            log(f"phase {phase.label}: stopped at epoch {trainer.epoch} of {trainer.epochs}; later phases "
                f"did not run (--resume continues)")
            return False
    return True


def load_recipe_ranker(space: SearchSpace, save_dir: str, image_dir: str, **settings):
    """A ranker for a recipe folder: its last phase's supernet, or for a few-shot recipe every
    child, each scoring the archs it owns.  Returns ``(ranker, plan_path)``; the plan path is
    the checkpoint a shard file records, and the ranker's settings hold every child's identity."""
    checkpoints = final_checkpoints(save_dir)
    children = [(child, load_supernet(space, path)[0]) for child, path in checkpoints]
    return RoutedRanker(children, recipe_identity(checkpoints), image_dir, **settings), \
        os.path.join(save_dir, PLAN_FILE)


class RoutedRanker(SubnetRanker):
    """Scores each arch with the supernet (few-shot child) that owns it; the images and the
    protocol are shared, so scores of different children compare."""

    def __init__(self, children: list, identities: dict, image_dir: str, **settings):
        super().__init__(children[0][1], image_dir, **settings)
        self.children, self.identities = children, identities

    def score(self, arch):
        arch = self.space.parse(arch) if isinstance(arch, str) else arch
        self._use(self._owner(arch))
        return super().score(arch)

    def score_many(self, archs):
        """Each child's archs together, with the prefix reuse of :meth:`SubnetRanker.score_many`."""
        by_child: dict[int, list] = {}
        for key, arch in archs:
            arch = self.space.parse(arch) if isinstance(arch, str) else arch
            by_child.setdefault(self._owner(arch), []).append((key, arch))
        for index, items in by_child.items():
            self._use(index)
            yield from super().score_many(items)

    def _owner(self, arch) -> int:
        for index, (child, _) in enumerate(self.children):
            if child_owns(child, arch):
                return index
        owners = ", ".join(f"{c['split']}={c['value']}" for c, _ in self.children if c)
        raise ValueError(f"no few-shot child owns arch {self.space.encode(arch)} (children: {owners})")

    def _use(self, index: int) -> None:
        self.supernet = self.children[index][1]
        self.supernet.eval()

    def settings(self, checkpoint: str) -> dict:
        return {**super().settings(checkpoint), "recipe_checkpoints": self.identities}
