"""Campaign configuration: dataclasses loaded from YAML/JSON and CLI flags, strictly validated.

Precedence: defaults < preset < config file < CLI flags. Every problem raises
ConfigError naming the field, what was wrong and what is allowed, in one line.
Each field's constraint sits beside the field (`metadata=rule(...)`); names that
only the registries know (datasets, strategies, models...) are checked by
`registry.load_config`, so this module imports nothing of the package.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autoal_dist.errors import UserError

# The regime suite's pool (benchmarks/results/accuracy-suite.md): one candidate for each kind
# of regime, each the best or near it on some pool: margin (uncertainty), BADGE (uncertainty
# and diversity), k-means (diversity), TypiClust (low budget). Least confidence, entropy and
# variation ratio rank like margin (and trail it on digits), BALD and ProbCover were last or
# near it on digits; fewer candidates also leave the search fewer ways to be wrong on thin
# evidence. The paper's seven: `preset: paper-cifar` keeps them.
PAPER_CANDIDATES = ["least_confidence", "margin", "entropy", "kmeans", "bald", "var_ratio",
                    "mean_std"]
DEFAULT_CANDIDATES = ["margin", "badge", "kmeans", "typiclust"]


class ConfigError(UserError):
    """Bad user input: `str(err)` is one line, `field: problem`."""

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"{field_name}: {problem}")
        self.field, self.problem = field_name, problem

    def __reduce__(self):  # pickled across processes (a pool, a Ray task) with its fields
        return type(self), (self.field, self.problem)


@dataclass(frozen=True)
class Rule:
    """A field's constraint: `ok(value)`, else "must be {allowed}, got {value!r}"."""

    ok: Callable[[Any], bool]
    allowed: str


def rule(ok: Callable[[Any], bool], allowed: str) -> dict[str, Rule]:
    return {"rule": Rule(ok, allowed)}


def ge(low: float, note: str = "") -> dict[str, Rule]:
    return rule(lambda v: v >= low, f">= {low}{note}")


def gt(low: float) -> dict[str, Rule]:
    return rule(lambda v: v > low, f"> {low}")


def one_of(*names: str) -> dict[str, Rule]:
    return rule(lambda v: v in names, f"one of {', '.join(names)}")


def _positive_tau(v: str) -> bool:
    if v in ("auto", "reference"):
        return True
    try:
        return math.isfinite(float(v)) and float(v) > 0
    except ValueError:
        return False


def _file(v: str | None) -> bool:
    return v is None or Path(v).is_file()


def _run_name(v: str | None) -> bool:
    return v is None or re.fullmatch(r"[A-Za-z0-9._-]+", v) is not None



@dataclass
class TrainConfig:
    epochs: int = field(default=40, metadata=ge(1))
    batch_size: int = field(default=64, metadata=ge(2))
    lr: float = field(default=1e-3, metadata=gt(0))
    optimizer: str = "adam"  # training.loop.OPTIMIZERS (registry.py checks it)
    weight_decay: float = field(default=5e-4, metadata=ge(0))
    min_steps: int = field(default=100, metadata=ge(0))  # tiny labeled sets still get updates
    dropout: float = field(default=0.3, metadata=rule(lambda v: 0 <= v < 1, "in [0, 1)"))
    augment: str = field(default="auto", metadata=one_of("auto", "on", "off"))
    eval_batch_size: int = field(default=512, metadata=ge(1))
    # torch CPU threads for training. Fixed (not "all cores") because float results
    # depend on it: 1 gives the same model in a laptop process, a job driver and a
    # Ray Train worker (which Ray starts with OMP_NUM_THREADS=1). Raise it for speed on
    # big CPU nodes; results then depend on the value. Irrelevant on GPU.
    threads: int = field(default=1, metadata=ge(1))


@dataclass
class ScoreConfig:
    # fixed and aligned to pool positions: part of reproducibility
    batch_size: int = field(default=256, metadata=ge(1))
    mc_samples: int = field(default=10, metadata=ge(2))


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

    mode: str = field(default="embed", metadata=one_of("embed", "paper"))
    # embed: what a candidate is rewarded for. eer: the expected error reduction of its real
    # batch on U (a head's confidence on U after learning it, labels drawn from f's beliefs;
    # autoal/eer.py); gain: simulated acquisition on L (its picks' gain over random picks,
    # autoal/gain.py); loss_rank: the held-out loss ranks of its picks on L (the paper's
    # FitNet signal)
    reward: str = field(default="eer", metadata=one_of("eer", "gain", "loss_rank"))
    # eer: label draws per round (each candidate's batch labeled from f's beliefs, a head
    # refitted) and the rows of U the heads' confidence is measured on (a seeded sample)
    eer_draws: int = field(default=8, metadata=ge(2))
    eer_eval: int = field(default=2000, metadata=ge(1))
    splits: int = field(default=6, metadata=ge(2))  # gain: simulated splits of L per round
    random_draws: int = field(default=2, metadata=ge(1))  # gain: random picks per split
    # gain: V is drawn from the randomly drawn labels only (random) or from any row f_B
    # did not see (all: more rows, but biased toward what earlier batches picked)
    gain_validation: str = field(default="random", metadata=one_of("random", "all"))
    # gain: the batch is the whole top-b of the candidate with the largest weight (best), the
    # candidates' own picks interleaved by weight (interleave), or the top-b of the weighted
    # vote z = A w (vote)
    combine: str = field(default="best", metadata=one_of("best", "interleave", "vote"))
    # gain, combine best: the candidate kept while the evidence is thin (the first candidate
    # when it is not among them; margin: the best mean rank of the regime suite's candidates),
    # and how many standard errors another must lead it by to take the batch (0: the leader)
    prior: str = "margin"
    # gain, combine best: the prior instead while L holds fewer than cold_per_class labels per
    # class (the cold start, where typical rows teach more than uncertain ones: Hacohen et
    # al. 2022; 0: never)
    cold_prior: str = "typiclust"
    cold_per_class: float = field(default=5.0, metadata=ge(0))
    # gain, combine best: whether the estimates count in the cold start (false: the cold
    # prior's batch whatever they say, and the cold rounds' estimates are recorded but not
    # pooled into later rounds': there they judged no better than the cold prior; a run
    # stored before the key resumes with true)
    cold_evidence: bool = False
    switch_se: float = field(default=2.0, metadata=ge(0))
    # gain: softmax temperature over the options' gains, in standard errors
    gain_temperature: float = field(default=1.0, metadata=gt(0))
    # embed: each fold head's L-BFGS iterations (at most); paper: FitNet pre-fit
    fitnet_pretrain_iters: int = field(default=200, metadata=ge(0))
    search_iters: int = field(default=400, metadata=ge(0))  # embed: at most; paper: joint steps
    # every candidate picks at least this many rows of the search set
    min_picks: int = field(default=10, metadata=ge(1))
    # paper: rows per step (raised so each candidate has min_picks)
    batch_size: int = field(default=128, metadata=ge(2))
    searchnet_lr: float = field(default=0.01, metadata=gt(0))  # paper: SGD
    searchnet_momentum: float = 0.9
    searchnet_weight_decay: float = 5e-4
    loss_head_lr: float = field(default=0.1, metadata=gt(0))
    fitnet_lr: float = field(default=1e-3, metadata=gt(0))  # paper: Adam on FitNet
    count_weight: float = field(default=0.1, metadata=ge(0))  # lambda on the soft-count term
    # auto (tau_std_fraction * std(p)) | reference (1e-11, hard step) | a number > 0
    tau: str = field(default="auto", metadata=rule(
        _positive_tau, "auto, reference or a positive number"))
    tau_std_fraction: float = field(default=0.0625, metadata=gt(0))  # std(p)/16 (code: /4)
    # empirical | gmm (5-component mixture, as the released code)
    threshold: str = field(default="empirical", metadata=one_of("gmm", "empirical"))
    gmm_components: int = field(default=5, metadata=ge(1))
    use_loss_head: bool = True
    folds: int = field(default=4, metadata=ge(2))  # embed: cross-fitting folds of L
    head_weight_decay: float = field(default=1e-3, metadata=ge(0))  # embed: L2 on the heads
    weights_lr: float = field(default=0.05, metadata=gt(0))  # embed: Adam on the logits
    # embed: sigmoid temperature as a fraction of std(p)
    weights_tau: float = field(default=1.0, metadata=gt(0))
    # embed: prior strength toward uniform, in picks per candidate
    shrink: float = field(default=1.0, metadata=ge(0))
    # embed: weight of round k's evidence in round r: decay^(r-k)
    evidence_decay: float = field(default=0.7, metadata=rule(lambda v: 0 <= v <= 1, "in [0, 1]"))
    # embed: stop when no weight moved more than this over 10 steps
    tol: float = field(default=1e-3, metadata=gt(0))
    # embed: the loss column is off below this many labeled rows
    loss_head_min_rows: int = field(default=200, metadata=ge(2))


@dataclass
class Config:
    name: str | None = field(default=None, metadata=rule(
        _run_name, "letters, digits, '.', '_' or '-'"))
    dataset: str = "digits"  # registry.py checks the names
    data_root: str | None = None
    strategy: str = "entropy"
    candidates: list[str] = field(default_factory=lambda: list(DEFAULT_CANDIDATES))
    init: int = field(default=20, metadata=ge(1))
    budget: int = field(default=20, metadata=ge(1))
    rounds: int = field(default=8, metadata=ge(0))
    seed: int = field(default=0, metadata=ge(0))
    shards: int = field(default=0, metadata=ge(0, " (0 = one per CPU)"))  # with --gpu: per GPU
    workers: int = field(default=0, metadata=ge(0, " (0 = local)"))  # 0: Train in the driver
    gpu: bool = False
    out: str | None = field(default=None, metadata=rule(
        lambda v: v is None or v.strip() != "", "a directory path or URI (not empty)"))
    model: str = "auto"
    pretrained: str | None = field(default=None, metadata=rule(_file, "an existing file"))
    oracle: str = field(default="simulated", metadata=one_of("simulated", "files"))
    preset: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    autoal: AutoALConfig = field(default_factory=AutoALConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's CIFAR recipe: init 2000, b 1000, 18 rounds, ResNet-18 from scratch.
    "paper-cifar": {
        "strategy": "autoal", "init": 2000, "budget": 1000, "rounds": 18, "model": "resnet18",
        "candidates": PAPER_CANDIDATES,
        "train": {"epochs": 100, "batch_size": 128, "optimizer": "sgd", "lr": 0.05,
                  "weight_decay": 5e-4, "augment": "on"},
    },
}


# ---- loading ----------------------------------------------------------------

def _coerce(value: Any, typ: Any, name: str) -> Any:
    """Check/convert one value against a dataclass field type."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    union_types = (typing.Union, getattr(__import__("types"), "UnionType", None))
    if origin in union_types and type(None) in args:
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
            if not math.isfinite(value):
                raise ConfigError(name, f"must be a finite number, got {value!r}")
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


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dict as dotted keys ({"train": {"epochs": 5}} -> {"train.epochs": 5}): what a
    resume compares, and what tells runs of one strategy apart."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("--config", f"no such file: {p}")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = "JSON" if p.suffix == ".json" else "YAML"
        raise ConfigError("--config", f"{p} is not valid {kind}: {first}") from None
    except RecursionError:
        raise ConfigError("--config", f"{p} is nested too deeply (mappings or lists inside each "
                          "other thousands of levels down); a config is a few levels") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("--config",
                          f"{p} must hold a mapping of settings, got {type(data).__name__}")
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


# ---- validation (what can be checked without the registries or the data) --------------

def _check(cond: bool, name: str, problem: str) -> None:
    if not cond:
        raise ConfigError(name, problem)


def _check_rules(obj: Any, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_rules(value, f"{prefix}{f.name}.")
        elif "rule" in f.metadata:
            r: Rule = f.metadata["rule"]
            _check(r.ok(value), f"{prefix}{f.name}", f"must be {r.allowed}, got {value!r}")


def validate(cfg: Config) -> None:
    """Every field's rule, then the checks across fields."""
    _check_rules(cfg)
    _check(len(set(cfg.candidates)) == len(cfg.candidates), "candidates", "names repeat")
    if cfg.strategy == "autoal":
        _check(len(cfg.candidates) >= 1, "candidates", "AutoAL needs at least one candidate")


def check_against_data(cfg: Config, num_classes: int, pool_size: int) -> None:
    """Checks that need the dataset: class count and pool size."""
    _check(cfg.init >= num_classes, "init",
           f"must be >= the number of classes ({num_classes}) so every class can be seeded, "
           f"got {cfg.init}")
    _check(cfg.init < pool_size, "init", f"must be < the pool size ({pool_size}), got {cfg.init}")
    _check(cfg.budget <= pool_size - cfg.init, "budget",
           f"must be <= the unlabeled pool ({pool_size - cfg.init} = {pool_size} - init "
           f"{cfg.init}), "
           f"got {cfg.budget}")
    need = cfg.init + cfg.rounds * cfg.budget
    _check(need <= pool_size, "rounds",
           f"init + rounds*budget = {need} exceeds the pool size {pool_size}; "
           f"use at most {(pool_size - cfg.init) // cfg.budget} rounds")
