"""Performance predictors: learn to rank archs from a few hundred ranked ones (Track 2).

- :mod:`.codes`: Track-2 code grammar (and Track-1 codes via :mod:`hnas.search_space`),
  reading an arch list with its per-task targets.
- :mod:`.features`: one-hot per position + sinusoidal positional encoding.
- :mod:`.mlp`: the Track-2 7th-place MLP, many members trained at once (Paddle).
- :mod:`.losses`: the ReNAS pairwise logistic loss (softplus) and MSE on normalised ranks.
- :mod:`.baselines`: ridge, gradient-boosted trees and a pairwise linear ranker (scikit-learn).
- :mod:`.cv`: K-fold fitting, held-out Kendall tau, ensembles and ranks.
- :mod:`.store`: saving, loading and ranking new archs.

CLI: ``python -m hnas.predictor train|predict`` (see ``__main__``).
"""
from .codes import ArchSet, load_archs, track2_tokens
from .cv import MODELS, Fitted, Options, fit_kind, make_splits
from .features import encode
from .mlp import MLPConfig

__all__ = ["ArchSet", "Fitted", "MLPConfig", "MODELS", "Options", "encode", "fit_kind",
           "load_archs", "make_splits", "track2_tokens"]
