"""Supernet training strategies, chosen by name from ``hnas.registry.STRATEGIES``.

Importing this package registers every strategy module below; a new strategy is one file
with a ``@STRATEGIES.register("name")`` class and one import line here.
"""
from ..registry import STRATEGIES
from . import alphanet, baseline, rank_flops, rank_zen, sandwich, spos, standalone  # noqa: F401  (registration side effect)
from . import fairnas  # noqa: F401
from . import biased  # noqa: F401
from . import contrastive  # noqa: F401
from .base import StepContext, Strategy, SubnetOutput, TrainingModule, build_options, build_strategy

__all__ = ["STRATEGIES", "StepContext", "Strategy", "SubnetOutput", "TrainingModule", "build_options",
           "build_strategy"]
