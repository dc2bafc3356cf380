"""The Track-1 search space: arch-code grammar, channel widths, FLOPs and params.

An arch code is a string of digits::

    [image] d1 d2 d3 d4  stem  (c1 c2) * max_depth_1  ...  (c1 c2) * max_depth_4

``image`` picks an input size from ``image_sizes`` (1-based; the 51-digit form omits it and
means code 1), ``d*`` are stage depths, ``stem`` and every ``c*`` are width codes: code ``k``
means ratio ``width_ratios[k - 1]`` of the stage's base width.  Blocks past a stage's depth
are written ``00``.  Residual shortcuts tie widths, so every conv2 in a stage shares one code
and the stem shares stage 1's.

Everything here is plain Python and numpy (no Paddle), so FLOPs/params of 45,000 archs take a second.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import yaml

from .config import check_keys

DEFAULT_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
ACTIVATIONS = ("relu", "mish", "prelu", "swish")


class ArchCodeError(ValueError):
    """An arch code that does not belong to the search space; the message says where."""


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below 90% of it.

    Same rule as the official baseline (and MobileNet), so widths match its checkpoints.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class Arch:
    """A decoded arch code.

    Attributes:
        image_code: 1-based index into ``SearchSpace.image_sizes``.
        depths: active blocks per stage.
        conv1_codes: per stage, the width code of each active block's first conv.
        stage_codes: per stage, the tied width code of every conv2 and the shortcut
            (stage 1's also sets the stem).
    """

    image_code: int
    depths: tuple[int, ...]
    conv1_codes: tuple[tuple[int, ...], ...]
    stage_codes: tuple[int, ...]

    @property
    def stem_code(self) -> int:
        return self.stage_codes[0]


@dataclass(frozen=True)
class SubnetWidths:
    """Channel counts of one subnet, as the networks are built from them."""

    image_size: int
    stem: int
    conv1: tuple[tuple[int, ...], ...]  # per stage, per active block
    stage: tuple[int, ...]  # conv2 / shortcut width per stage

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.conv1)


@dataclass(frozen=True)
class SearchSpace:
    """ResNet of BasicBlocks with elastic depth per stage and elastic width per conv."""

    base_widths: tuple[int, ...] = (64, 128, 256, 512)
    depth_ranges: tuple[tuple[int, int], ...] = ((2, 5), (2, 5), (2, 8), (2, 5))
    width_ratios: tuple[float, ...] = DEFAULT_RATIOS
    channel_divisor: int = 8
    image_sizes: tuple[int, ...] = (224,)
    num_classes: int = 1000
    activation: str = "relu"
    in_channels: int = 3
    # Width codes the samplers may draw per stage (validation accepts any code of the ratio
    # list); None means all of them.  Stage 1's list also governs the stem.
    sample_codes: tuple[tuple[int, ...], ...] | None = None
    _width_tables: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        _check(len(self.base_widths) == len(self.depth_ranges) > 0,
               "base_widths and depth_ranges must name the same number (>0) of stages")
        for lo, hi in self.depth_ranges:
            _check(1 <= lo <= hi <= 9, f"depth range [{lo}, {hi}] must satisfy 1 <= lo <= hi <= 9")
        _check(0 < len(self.width_ratios) <= 9, "width_ratios must list 1 to 9 ratios")
        _check(0 < len(self.image_sizes) <= 9, "image_sizes must list 1 to 9 sizes")
        _check(self.activation in ACTIVATIONS,
               f"activation {self.activation!r} is not one of {ACTIVATIONS}")
        if self.sample_codes is not None:
            _check(len(self.sample_codes) == self.num_stages,
                   "sample_codes must give one list of codes per stage")
            for codes in self.sample_codes:
                _check(all(1 <= c <= len(self.width_ratios) for c in codes) and codes,
                       f"sample_codes {list(codes)} must be non-empty codes in 1..{len(self.width_ratios)}")
        tables = tuple(tuple(make_divisible(base * r, self.channel_divisor) for r in self.width_ratios)
                       for base in self.base_widths)
        object.__setattr__(self, "_width_tables", tables)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, cfg: dict) -> "SearchSpace":
        """Build from the ``SearchSpace`` section of a config (a dict of YAML values)."""
        known = {"base_widths", "depth_ranges", "width_ratios", "channel_divisor", "image_sizes",
                 "num_classes", "activation", "in_channels", "sample_codes"}
        check_keys(cfg, known, "SearchSpace")
        kwargs = dict(cfg)
        for key in ("base_widths", "width_ratios", "image_sizes"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        for key in ("depth_ranges", "sample_codes"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(tuple(v) for v in kwargs[key])
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str) -> "SearchSpace":
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
        return cls.from_config(cfg.get("SearchSpace", {}))

    # ----------------------------------------------------------------- shape facts
    @property
    def num_stages(self) -> int:
        return len(self.base_widths)

    @property
    def max_depths(self) -> tuple[int, ...]:
        return tuple(hi for _, hi in self.depth_ranges)

    @property
    def code_length(self) -> int:
        """Digits of the full code: image + depths + stem + two per block (52 for Track 1)."""
        return 1 + self.num_stages + 1 + 2 * sum(self.max_depths)

    def stage_widths(self, stage: int) -> tuple[int, ...]:
        """Channel count of each width code (index 0 = code 1) in ``stage``."""
        return self._width_tables[stage]

    # ----------------------------------------------------------------- grammar
    def parse(self, code: str) -> Arch:
        """Decode and validate ``code`` (full or without the image digit)."""
        if not isinstance(code, str):
            raise ArchCodeError(f"arch code must be a string of digits, got {type(code).__name__}")
        code = code.strip()
        n = self.code_length
        if len(code) == n - 1:
            code = "1" + code  # positions in messages refer to this 52-digit form
        if len(code) != n:
            raise ArchCodeError(f"arch code {code!r} has {len(code)} digits; expected {n} "
                                f"(or {n - 1} without the image-size digit)")
        bad = [i for i, ch in enumerate(code) if ch not in "0123456789"]
        if bad:
            raise ArchCodeError(f"arch code {code!r} has a non-digit {code[bad[0]]!r} at position {bad[0]}")
        digits = [int(ch) for ch in code]
        image_code = digits[0]
        if not 1 <= image_code <= len(self.image_sizes):
            raise ArchCodeError(f"arch code {code!r}: image-size code {image_code} at position 0 is outside "
                                f"1..{len(self.image_sizes)} (image sizes {list(self.image_sizes)})")
        depths = tuple(digits[1:1 + self.num_stages])
        for s, (d, (lo, hi)) in enumerate(zip(depths, self.depth_ranges)):
            if not lo <= d <= hi:
                raise ArchCodeError(f"arch code {code!r}: stage {s + 1} depth {d} at position {1 + s} "
                                    f"is outside [{lo}, {hi}]")
        stem_pos = 1 + self.num_stages
        stem = digits[stem_pos]
        self._check_width(code, stem, stem_pos, "stem")
        pos = stem_pos + 1
        conv1_codes, stage_codes = [], []
        for s, depth in enumerate(depths):
            conv1, conv2 = [], []
            for b in range(self.max_depths[s]):
                c1, c2 = digits[pos], digits[pos + 1]
                where = f"stage {s + 1} block {b + 1}"
                if b < depth:
                    self._check_width(code, c1, pos, f"{where} conv1")
                    self._check_width(code, c2, pos + 1, f"{where} conv2")
                    conv1.append(c1)
                    conv2.append(c2)
                elif c1 or c2:
                    raise ArchCodeError(f"arch code {code!r}: {where} (positions {pos}-{pos + 1}) is past "
                                        f"the stage depth {depth} and must be 00, got {c1}{c2}")
                pos += 2
            if len(set(conv2)) != 1:
                raise ArchCodeError(f"arch code {code!r}: conv2 codes of stage {s + 1} must be equal "
                                    f"(residual width tie), got {conv2}")
            conv1_codes.append(tuple(conv1))
            stage_codes.append(conv2[0])
        if stem != stage_codes[0]:
            raise ArchCodeError(f"arch code {code!r}: stem code {stem} must equal stage 1's conv2 "
                                f"code {stage_codes[0]} (residual width tie)")
        return Arch(image_code, depths, tuple(conv1_codes), tuple(stage_codes))

    def validate(self, code: str) -> None:
        """Raise ``ArchCodeError`` naming the first problem of ``code``; return None if valid."""
        self.parse(code)

    def encode(self, arch: Arch, with_image: bool = True) -> str:
        """Inverse of :meth:`parse`: the 52-digit code (51 without the image digit)."""
        if len(arch.depths) != self.num_stages or len(arch.conv1_codes) != self.num_stages \
                or len(arch.stage_codes) != self.num_stages:
            raise ArchCodeError(f"{arch} must give depths, conv1 codes and stage codes for "
                                f"{self.num_stages} stages")
        for s, (depth, codes) in enumerate(zip(arch.depths, arch.conv1_codes)):
            if len(codes) != depth:
                raise ArchCodeError(f"stage {s + 1} has depth {depth} but {len(codes)} conv1 codes")
        parts = [str(arch.image_code)] if with_image else []
        parts += [str(d) for d in arch.depths] + [str(arch.stem_code)]
        for s, max_depth in enumerate(self.max_depths):
            for b in range(max_depth):
                if b < arch.depths[s]:
                    parts.append(f"{arch.conv1_codes[s][b]}{arch.stage_codes[s]}")
                else:
                    parts.append("00")
        code = "".join(parts)
        self.parse(code)
        return code

    def normalize(self, code: str) -> str:
        """The canonical 52-digit form of a valid code."""
        return self.encode(self.parse(code))

    def _check_width(self, code: str, value: int, pos: int, where: str) -> None:
        if not 1 <= value <= len(self.width_ratios):
            raise ArchCodeError(f"arch code {code!r}: {where} width code {value} at position {pos} "
                                f"is outside 1..{len(self.width_ratios)} (ratios {list(self.width_ratios)})")

    # ----------------------------------------------------------------- special archs
    def largest(self, image_code: int = 1) -> Arch:
        return self._extreme(image_code, big=True)

    def smallest(self, image_code: int = 1) -> Arch:
        return self._extreme(image_code, big=False)

    def _extreme(self, image_code: int, big: bool) -> Arch:
        pick = min if big else max  # code 1 is the widest ratio when ratios descend
        if list(self.width_ratios) != sorted(self.width_ratios, reverse=True):
            raise ValueError("largest()/smallest() need width_ratios in descending order")
        depths = tuple(hi if big else lo for lo, hi in self.depth_ranges)
        codes = [pick(self.sampleable_codes(s)) for s in range(self.num_stages)]
        return Arch(image_code, depths, tuple((c,) * d for c, d in zip(codes, depths)), tuple(codes))

    def sampleable_codes(self, stage: int) -> tuple[int, ...]:
        if self.sample_codes is None:
            return tuple(range(1, len(self.width_ratios) + 1))
        return self.sample_codes[stage]

    # ----------------------------------------------------------------- widths and cost
    def widths(self, arch: Arch | str) -> SubnetWidths:
        """Channel counts of ``arch`` (an ``Arch`` or a code)."""
        arch = self.parse(arch) if isinstance(arch, str) else arch
        tables = self._width_tables
        conv1 = tuple(tuple(tables[s][c - 1] for c in codes) for s, codes in enumerate(arch.conv1_codes))
        stage = tuple(tables[s][c - 1] for s, c in enumerate(arch.stage_codes))
        return SubnetWidths(self.image_sizes[arch.image_code - 1], stage[0], conv1, stage)

    def max_widths(self) -> SubnetWidths:
        """Widths of the supernet's weight tensors (every ratio at its largest)."""
        top = [max(self.stage_widths(s)) for s in range(self.num_stages)]
        return SubnetWidths(max(self.image_sizes), top[0],
                            tuple((w,) * d for w, d in zip(top, self.max_depths)), tuple(top))

    def flops(self, arch: Arch | str) -> int:
        """Multiply-accumulates of conv and fc layers, at the arch's own image size."""
        return self._cost(self.widths(arch))[0]

    def params(self, arch: Arch | str) -> int:
        """Trainable parameters of the stand-alone network (conv, BN affine, fc, PReLU)."""
        return self._cost(self.widths(arch))[1]

    def _cost(self, w: SubnetWidths) -> tuple[int, int]:
        size = _conv_out(w.image_size, 7, 2, 3)
        macs = size * size * 49 * self.in_channels * w.stem
        params = 49 * self.in_channels * w.stem + 2 * w.stem
        size = _conv_out(size, 3, 2, 1)  # max-pool
        acts = 1
        cin = w.stem
        for s, mids in enumerate(w.conv1):
            cout = w.stage[s]
            for b, mid in enumerate(mids):
                stride = 2 if (s > 0 and b == 0) else 1
                out = _conv_out(size, 3, stride, 1)
                macs += out * out * 9 * (cin * mid + mid * cout)
                params += 9 * (cin * mid + mid * cout) + 2 * (mid + cout)
                if stride != 1 or cin != cout:
                    macs += out * out * cin * cout
                    params += cin * cout + 2 * cout
                acts += 2
                size, cin = out, cout
        macs += cin * self.num_classes
        params += cin * self.num_classes + self.num_classes
        if self.activation == "prelu":
            params += acts
        return macs, params


def validate_codes(space: SearchSpace, codes: Iterable[str], names: Sequence[str] | None = None) -> None:
    """Validate many codes; the error names the arch key (``archN``) of the first bad one."""
    for i, code in enumerate(codes):
        try:
            space.parse(code)
        except ArchCodeError as exc:
            name = names[i] if names is not None else f"#{i}"
            raise ArchCodeError(f"{name}: {exc}") from None


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"invalid search space: {message}")


def hamming_distance(a: str, b: str, start: int = 0) -> int:
    """Positions at which two codes of equal length differ, from ``start`` on.

    ``start=5`` skips the image and depth digits (the 3rd-place pair rule compares ``code[5:]``).
    """
    if len(a) != len(b):
        raise ArchCodeError(f"cannot compare codes of different lengths: {a!r} ({len(a)}) and {b!r} ({len(b)})")
    return sum(x != y for x, y in zip(a[start:], b[start:]))


def code_digits(codes: Sequence[str]) -> np.ndarray:
    """``[n, length]`` uint8 digits of ``n`` codes of one length (for vectorised distances)."""
    return np.frombuffer("".join(codes).encode(), dtype=np.uint8).reshape(len(codes), -1) - ord("0")


def hamming_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distances of two ``[n, length]`` digit arrays (see :func:`code_digits`)."""
    return (a != b).sum(axis=1)
