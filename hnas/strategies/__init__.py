"""Supernet training strategies, chosen by name from ``hnas.registry.STRATEGIES``.

Importing this package registers every strategy module below; a new strategy is one file
with a ``@STRATEGIES.register("name")`` class and one import line here.
"""
from ..registry import STRATEGIES
from . import baseline, sandwich, spos, standalone  # noqa: F401  (registration side effect)
from .base import StepContext, Strategy, build_sampler


def build_strategy(name: str, space, cfg, teacher=None) -> Strategy:
    """The strategy ``name`` with the sampler the config asks for (``cfg.sampler``)."""
    cls = STRATEGIES.get(name)
    sampler = build_sampler(space, cfg.sampler, cfg.sampler_archs)
    return cls(space, cfg, sampler=sampler, teacher=teacher)


__all__ = ["STRATEGIES", "StepContext", "Strategy", "build_sampler", "build_strategy"]
