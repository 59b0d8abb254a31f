"""Names a config may use, checked against the registries that define them.

`config.py` knows no registry (it is the package's leaf); this module imports every
registry (datasets, strategies, round policies, models, optimizers) and checks a
config's names against them. `load_config` is what every command builds configs with.
"""
from __future__ import annotations

from typing import Any

from autoal_dist.config import Config, ConfigError, build_config
from autoal_dist.data import DATASETS
from autoal_dist.models import MODELS
from autoal_dist.policies import POLICIES
from autoal_dist.remote import check_uri
from autoal_dist.strategies import STRATEGIES
from autoal_dist.training import OPTIMIZERS


def _check(cond: bool, name: str, problem: str) -> None:
    if not cond:
        raise ConfigError(name, problem)


def check_names(cfg: Config) -> None:
    """Dataset, strategy, candidates, model and optimizer names; the --out URI's scheme."""
    _check(cfg.dataset.partition(":")[0] in DATASETS, "dataset",
           f"unknown dataset {cfg.dataset!r}; allowed: {', '.join(sorted(DATASETS))}")
    strategies = sorted(STRATEGIES)
    _check(cfg.strategy in STRATEGIES or cfg.strategy in POLICIES, "strategy",
           f"unknown strategy {cfg.strategy!r}; allowed: "
           f"{', '.join(sorted([*strategies, *POLICIES]))}")
    for c in cfg.candidates:
        _check(c in STRATEGIES, "candidates",
               f"unknown candidate {c!r}; allowed: {', '.join(strategies)}")
    for key in ("prior", "cold_prior"):
        value = getattr(cfg.autoal, key)
        _check(value in STRATEGIES, f"autoal.{key}",
               f"unknown strategy {value!r}; allowed: {', '.join(strategies)} (used when it "
               "is among the candidates, else the first candidate)")
    _check(cfg.model in ("auto", *MODELS), "model",
           f"unknown model {cfg.model!r}; allowed: auto, {', '.join(MODELS)}")
    _check(cfg.train.optimizer in OPTIMIZERS, "train.optimizer",
           f"must be one of {', '.join(OPTIMIZERS)}, got {cfg.train.optimizer!r}")
    if cfg.out is not None:
        problem = check_uri(cfg.out)
        _check(problem is None, "out", problem or "")


def load_config(file_values: dict[str, Any] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """`config.build_config` (defaults < preset < file < overrides, field rules), then the
    names against the registries."""
    cfg = build_config(file_values, overrides)
    check_names(cfg)
    return cfg
