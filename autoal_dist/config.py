"""Campaign configuration: dataclasses loaded from YAML/JSON and CLI flags, strictly validated.

Precedence: defaults < preset < config file < CLI flags. Every problem raises
ConfigError naming the field, what was wrong and what is allowed, in one line.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CANDIDATES = ["least_confidence", "margin", "entropy", "kmeans", "bald", "var_ratio",
                      "mean_std"]


class ConfigError(ValueError):
    """Bad user input: `str(err)` is one line, `field: problem`."""

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 5e-4
    min_steps: int = 100
    dropout: float = 0.3
    augment: str = "auto"  # auto | on | off
    eval_batch_size: int = 512
    # torch CPU threads for training. Fixed (not "all cores") because float results
    # depend on it: 1 gives the same model in a laptop process, a job driver and a
    # Ray Train worker (which Ray starts with OMP_NUM_THREADS=1). Raise it for speed on
    # big CPU nodes; results then depend on the value. Irrelevant on GPU.
    threads: int = 1


@dataclass
class ScoreConfig:
    batch_size: int = 256  # fixed and aligned to pool positions: part of reproducibility
    mc_samples: int = 10


@dataclass
class AutoALConfig:
    """AutoAL hyperparameters (docs/autoal.md).

    `mode: embed` (default): FitNet and the loss column are heads on f's frozen
    embeddings, cross-fitted over `folds` folds of L; SearchNet is a set of
    strategy-level weights shrunk toward uniform (`shrink`), fitted on evidence
    pooled over rounds (`evidence_decay`) and stopped early when they stop moving
    (`tol`). `mode: paper`: the paper's per-sample SearchNet (a trunk of f's family)
    and FitNet trained on raw inputs, with the keys from `fitnet_pretrain_iters` to
    `gmm_components`; `tau: reference` reproduces the released code's hard step.
    """

    mode: str = "embed"  # embed | paper
    fitnet_pretrain_iters: int = 200  # embed: each fold head's L-BFGS iterations (at most); paper: FitNet pre-fit
    search_iters: int = 400  # embed: at most, stops early; paper: joint steps
    min_picks: int = 10  # every candidate picks at least this many rows of the search set
    batch_size: int = 128  # paper: rows per step (raised so each candidate has min_picks)
    searchnet_lr: float = 0.01  # paper: SGD
    searchnet_momentum: float = 0.9
    searchnet_weight_decay: float = 5e-4
    loss_head_lr: float = 0.1
    fitnet_lr: float = 1e-3  # paper: Adam on FitNet
    count_weight: float = 0.1  # lambda on the soft-count regularizer
    tau: str = "auto"  # auto (tau_std_fraction * std(p)) | reference (1e-11, hard step) | a number > 0
    tau_std_fraction: float = 0.0625  # std(p)/16 (the paper's code: std(p)/4)
    threshold: str = "empirical"  # empirical | gmm (5-component mixture, as the released code)
    gmm_components: int = 5
    use_loss_head: bool = True
    folds: int = 4  # embed: cross-fitting folds of L
    head_weight_decay: float = 1e-3  # embed: L2 on the FitNet heads
    weights_lr: float = 0.05  # embed: Adam on the strategy-level logits
    weights_tau: float = 1.0  # embed: sigmoid temperature as a fraction of std(p)
    shrink: float = 1.0  # embed: prior strength toward uniform, in picks per candidate
    evidence_decay: float = 0.7  # embed: weight of round k's evidence in round r: decay^(r-k)
    tol: float = 1e-3  # embed: stop when no weight moved more than this over 10 steps
    loss_head_min_rows: int = 200  # embed: the loss column is off below this many labeled rows


AUTOAL_MODES = ("embed", "paper")


@dataclass
class Config:
    name: str | None = None
    dataset: str = "digits"
    data_root: str | None = None
    strategy: str = "entropy"
    candidates: list[str] = field(default_factory=lambda: list(DEFAULT_CANDIDATES))
    init: int = 20
    budget: int = 20
    rounds: int = 8
    seed: int = 0
    shards: int = 0  # 0 = as many as Ray sees CPUs (GPUs with --gpu)
    workers: int = 0  # 0 = train in the driver process (Ray Train local mode)
    gpu: bool = False
    out: str | None = None
    model: str = "auto"
    pretrained: str | None = None
    oracle: str = "simulated"
    preset: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    autoal: AutoALConfig = field(default_factory=AutoALConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # AUTOAL.md "reference recipe": init 2000, b 1000, 18 rounds, ResNet-18 from scratch.
    "paper-cifar": {
        "strategy": "autoal", "init": 2000, "budget": 1000, "rounds": 18, "model": "resnet18",
        "train": {"epochs": 100, "batch_size": 128, "optimizer": "sgd", "lr": 0.05,
                  "weight_decay": 5e-4, "augment": "on"},
    },
}

ORACLES = ("simulated", "files")


# ---- loading ----------------------------------------------------------------

def _coerce(value: Any, typ: Any, name: str) -> Any:
    """Check/convert one value against a dataclass field type."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
        if value is None:
            return None
        typ = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(typ), typing.get_args(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(name, f"must be true or false, got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(name, f"must be an integer, got {value!r}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(name, f"must be a number, got {value!r}")
    if typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(name, f"must be a string, got {value!r}")
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(name, f"must be a list of names, got {value!r}")
        return list(value)
    raise TypeError(f"unsupported config type {typ} for {name}")


def _apply(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    """Set dataclass fields from a (nested) dict; unknown keys are errors."""
    if not isinstance(values, dict):
        raise ConfigError(prefix.rstrip(".") or "config", f"must be a mapping, got {values!r}")
    hints = typing.get_type_hints(type(obj))
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in hints:
            allowed = ", ".join(f.name for f in dataclasses.fields(obj))
            raise ConfigError(name, f"unknown key; allowed: {allowed}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, f"{name}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], name))


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("--config", f"no such file: {p}")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError("--config", f"{p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{p} must hold a mapping of settings, got {type(data).__name__}")
    return data


def build_config(file_values: dict[str, Any] | None = None,
                 overrides: dict[str, Any] | None = None) -> Config:
    """defaults < preset < file < overrides (CLI), then validate."""
    file_values = dict(file_values or {})
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    preset = overrides.get("preset", file_values.get("preset"))
    cfg = Config()
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError("preset", f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
        _apply(cfg, PRESETS[preset])
    _apply(cfg, file_values)
    _apply(cfg, overrides)
    validate(cfg)
    return cfg


# ---- validation (what can be checked without the data) -------------------------

def _check(cond: bool, name: str, problem: str) -> None:
    if not cond:
        raise ConfigError(name, problem)


def validate(cfg: Config) -> None:
    from autoal_dist.data.base import DATASETS
    from autoal_dist.models.backbones import MODELS
    from autoal_dist.policies import POLICIES
    from autoal_dist.remote import check_uri
    from autoal_dist.strategies import STRATEGIES
    from autoal_dist.training import OPTIMIZERS

    ds_name = cfg.dataset.partition(":")[0]
    _check(ds_name in DATASETS, "dataset",
           f"unknown dataset {cfg.dataset!r}; allowed: {', '.join(sorted(DATASETS))}")
    strategies = sorted(STRATEGIES)
    _check(cfg.strategy in STRATEGIES or cfg.strategy in POLICIES, "strategy",
           f"unknown strategy {cfg.strategy!r}; allowed: {', '.join(sorted([*strategies, *POLICIES]))}")
    for c in cfg.candidates:
        _check(c in STRATEGIES, "candidates",
               f"unknown candidate {c!r}; allowed: {', '.join(strategies)}")
    _check(len(set(cfg.candidates)) == len(cfg.candidates), "candidates", "names repeat")
    if cfg.strategy == "autoal":
        _check(len(cfg.candidates) >= 1, "candidates", "AutoAL needs at least one candidate")
    _check(cfg.init >= 1, "init", f"must be >= 1, got {cfg.init}")
    _check(cfg.budget >= 1, "budget", f"must be >= 1, got {cfg.budget}")
    _check(cfg.rounds >= 0, "rounds", f"must be >= 0, got {cfg.rounds}")
    _check(cfg.seed >= 0, "seed", f"must be >= 0, got {cfg.seed}")
    _check(cfg.shards >= 0, "shards", f"must be >= 0 (0 = one per CPU), got {cfg.shards}")
    _check(cfg.workers >= 0, "workers", f"must be >= 0 (0 = local), got {cfg.workers}")
    _check(cfg.model in ("auto", *MODELS), "model",
           f"unknown model {cfg.model!r}; allowed: auto, {', '.join(MODELS)}")
    _check(cfg.oracle in ORACLES, "oracle", f"must be one of {', '.join(ORACLES)}, got {cfg.oracle!r}")
    if cfg.out is not None:
        problem = check_uri(cfg.out)
        _check(problem is None, "out", problem or "")
    if cfg.name is not None:
        _check(bool(re.fullmatch(r"[A-Za-z0-9._-]+", cfg.name)), "name",
               f"use letters, digits, '.', '_' or '-', got {cfg.name!r}")
    if cfg.pretrained is not None:
        _check(Path(cfg.pretrained).is_file(), "pretrained", f"no such file: {cfg.pretrained}")
    t = cfg.train
    _check(t.epochs >= 1, "train.epochs", f"must be >= 1, got {t.epochs}")
    _check(t.batch_size >= 2, "train.batch_size", f"must be >= 2, got {t.batch_size}")
    _check(t.lr > 0, "train.lr", f"must be > 0, got {t.lr}")
    _check(t.optimizer in OPTIMIZERS, "train.optimizer",
           f"must be one of {', '.join(OPTIMIZERS)}, got {t.optimizer!r}")
    _check(t.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {t.weight_decay}")
    _check(t.min_steps >= 0, "train.min_steps", f"must be >= 0, got {t.min_steps}")
    _check(0 <= t.dropout < 1, "train.dropout", f"must be in [0, 1), got {t.dropout}")
    _check(t.augment in ("auto", "on", "off"), "train.augment",
           f"must be auto, on or off, got {t.augment!r}")
    _check(t.eval_batch_size >= 1, "train.eval_batch_size", f"must be >= 1, got {t.eval_batch_size}")
    _check(t.threads >= 1, "train.threads", f"must be >= 1, got {t.threads}")
    _check(cfg.score.batch_size >= 1, "score.batch_size", f"must be >= 1, got {cfg.score.batch_size}")
    _check(cfg.score.mc_samples >= 2, "score.mc_samples", f"must be >= 2, got {cfg.score.mc_samples}")
    a = cfg.autoal
    for name in ("fitnet_pretrain_iters", "search_iters"):
        _check(getattr(a, name) >= 0, f"autoal.{name}", f"must be >= 0, got {getattr(a, name)}")
    _check(a.mode in AUTOAL_MODES, "autoal.mode",
           f"must be one of {', '.join(AUTOAL_MODES)}, got {a.mode!r}")
    _check(a.batch_size >= 2, "autoal.batch_size", f"must be >= 2, got {a.batch_size}")
    _check(a.min_picks >= 1, "autoal.min_picks", f"must be >= 1, got {a.min_picks}")
    _check(a.folds >= 2, "autoal.folds", f"must be >= 2, got {a.folds}")
    _check(a.loss_head_min_rows >= 2, "autoal.loss_head_min_rows",
           f"must be >= 2, got {a.loss_head_min_rows}")
    for name in ("searchnet_lr", "loss_head_lr", "fitnet_lr", "weights_lr", "weights_tau", "tol",
                 "head_weight_decay", "shrink"):
        value, low = getattr(a, name), name in ("head_weight_decay", "shrink")
        _check(value >= 0 if low else value > 0, f"autoal.{name}",
               f"must be {'>=' if low else '>'} 0, got {value}")
        _check(math.isfinite(value), f"autoal.{name}", f"must be finite, got {value}")
    _check(0 <= a.evidence_decay <= 1, "autoal.evidence_decay",
           f"must be in [0, 1], got {a.evidence_decay}")
    _check(a.count_weight >= 0, "autoal.count_weight", f"must be >= 0, got {a.count_weight}")
    _check(a.threshold in ("gmm", "empirical"), "autoal.threshold",
           f"must be gmm or empirical, got {a.threshold!r}")
    _check(a.tau_std_fraction > 0, "autoal.tau_std_fraction",
           f"must be > 0, got {a.tau_std_fraction}")
    _check(a.gmm_components >= 1, "autoal.gmm_components", f"must be >= 1, got {a.gmm_components}")
    if a.tau not in ("auto", "reference"):
        try:
            ok = float(a.tau) > 0
        except ValueError:
            ok = False
        _check(ok, "autoal.tau", f"must be auto, reference or a positive number, got {a.tau!r}")


def check_against_data(cfg: Config, num_classes: int, pool_size: int) -> None:
    """Checks that need the dataset: class count and pool size."""
    _check(cfg.init >= num_classes, "init",
           f"must be >= the number of classes ({num_classes}) so every class can be seeded, got {cfg.init}")
    _check(cfg.init < pool_size, "init", f"must be < the pool size ({pool_size}), got {cfg.init}")
    _check(cfg.budget <= pool_size - cfg.init, "budget",
           f"must be <= the unlabeled pool ({pool_size - cfg.init} = {pool_size} - init {cfg.init}), "
           f"got {cfg.budget}")
    need = cfg.init + cfg.rounds * cfg.budget
    _check(need <= pool_size, "rounds",
           f"init + rounds*budget = {need} exceeds the pool size {pool_size}; "
           f"use at most {(pool_size - cfg.init) // cfg.budget} rounds")
