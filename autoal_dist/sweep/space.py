"""A sweep file's `tune:` section: search space, scheduler and resources, checked without Ray.

A sweep file holds `campaign:` (what `autoal-dist run --config` takes) and `tune:` (what to
search and how). This module is pure so a bad sweep fails in milliseconds with the same
one-line `ConfigError` as `run`, before Ray starts, and so it is testable alone. Mapping the
parsed distributions onto `ray.tune` sampling functions is `autoal_dist.sweep.runner`'s job.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import itertools
from dataclasses import dataclass
from typing import Any

from autoal_dist.config import Config, ConfigError, check_against_data
from autoal_dist.policies import POLICIES  # the strategies that combine `candidates`
from autoal_dist.registry import load_config

SECTIONS = ("campaign", "tune")
TUNE_KEYS = ("search_space", "num_samples", "max_concurrent_trials", "resources_per_trial",
             "metric", "scheduler", "seed", "loggers", "mode")
MODES = ("local", "ray")  # execution.py: where each trial scores and trains
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
# What every trial shares: the data (dataset, data_root and seed fix the split), the run
# layout, where labels come from, the resources Tune reserves, and ASHA's time axis (rounds).
FIXED = ("name", "out", "dataset", "data_root", "seed", "rounds", "preset", "oracle",
         "pretrained", "workers", "shards", "gpu")
METRICS = ("auc", "accuracy")  # both maximized
LOGGERS = {"tensorboard": "tensorboardX", "mlflow": "mlflow"}  # name -> package Tune imports
ASHA_KEYS = ("name", "grace_period", "reduction_factor")


@dataclass(frozen=True)
class Dist:
    """One searched setting: `kind` in DISTRIBUTIONS; `args` are (low, high) for the ranges
    (randint: both ends inclusive, unlike `tune.randint`) or the options of a choice. Either
    way `args` bound every sample, so checking them against the config's range checks (all
    one-sided or intervals) covers every sample, however many are drawn."""

    kind: str
    args: tuple


@dataclass(frozen=True)
class Asha:
    """ASHA over rounds: a trial at round grace_period * reduction_factor**k goes on only if
    its metric is in the top 1/reduction_factor of the trials that reached that round."""

    grace_period: int = 1
    reduction_factor: float = 2.0


@dataclass(frozen=True)
class Sweep:
    """A checked sweep file: what every trial shares, what varies, and how Tune runs it."""

    campaign: dict[str, Any]  # the campaign section as written
    base: Config  # that section, built and validated
    space: dict[str, Dist]
    num_samples: int = 8
    max_concurrent_trials: int | None = None  # None: as many as the trial resources allow
    cpu: float = 1.0
    gpu: float = 0.0
    metric: str = "auc"
    scheduler: Asha | None = None
    seed: int = 0
    loggers: tuple[str, ...] = ()
    mode: str = "local"  # execution mode of every trial's campaign (execution.py)


def problem(err: ConfigError) -> str:
    """The message of a ConfigError without its field name."""
    return str(err).removeprefix(f"{err.field}: ")


def prefixed(err: ConfigError, prefix: str) -> ConfigError:
    """`err` located inside a section of the sweep file (`campaign.init: ...`)."""
    return ConfigError(f"{prefix}.{err.field}", problem(err))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(value: Any, name: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(name, f"must be an integer >= {low}, got {value!r}")
    return value


def _mapping(value: Any, name: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(name, f"must be a mapping with keys {', '.join(allowed)}, got {value!r}")
    for key in value:
        if key not in allowed:
            raise ConfigError(f"{name}.{key}", f"unknown key; allowed: {', '.join(allowed)}")
    return value


# ---- trial configs ----------------------------------------------------------------

def merge(campaign: dict[str, Any], sample: dict[str, Any]) -> dict[str, Any]:
    """The campaign section with a trial's values set; dotted keys go into their section."""
    out = copy.deepcopy(campaign)
    for key, value in sample.items():
        section, _, leaf = key.rpartition(".")
        (out.setdefault(section, {}) if section else out)[leaf] = value
    return out


def trial_config(campaign: dict[str, Any], sample: dict[str, Any]) -> Config:
    return load_config(merge(campaign, sample))


def check_samples(sweep: Sweep, samples: list[dict[str, Any]], num_classes: int,
                  pool_size: int) -> None:
    """Every trial's config passes `run`'s checks, data ones included, before any trial starts."""
    for i, sample in enumerate(samples):
        try:
            cfg = trial_config(sweep.campaign, sample)
            check_against_data(cfg, num_classes, pool_size)
        except ConfigError as e:
            raise ConfigError("tune.search_space", f"trial {i} samples {sample}: {e}") from None


# ---- parsing ------------------------------------------------------------------------

def _bound(value: Any, name: str, kind: str) -> float:
    """A range end as the float every sample is; numeric text too, since YAML reads `1e-4`
    (no '.0') as a string."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if not _is_number(value):
        raise ConfigError(name, f"{kind} needs [low, high] as two numbers, got {value!r}")
    return float(value)


def _subsets(spec: dict[str, Any], name: str) -> Dist:
    """`{subsets_of: [a, b, c], min_size: 2}`: a choice of every subset that large or larger."""
    from autoal_dist.strategies import STRATEGIES

    _mapping(spec, name, ("subsets_of", "min_size"))
    names = spec["subsets_of"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{name}.subsets_of", f"must be a non-empty list of strategy names, "
                          f"got {names!r}")
    for n in names:
        if n not in STRATEGIES:
            raise ConfigError(f"{name}.subsets_of", f"unknown strategy {n!r}; allowed: "
                              f"{', '.join(sorted(STRATEGIES))}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{name}.subsets_of", "names repeat")
    min_size = spec.get("min_size", 1)
    if not isinstance(min_size, int) or isinstance(min_size, bool) or \
            not 1 <= min_size <= len(names):
        raise ConfigError(f"{name}.min_size", f"must be an integer in [1, {len(names)}] "
                          f"(the number of names in subsets_of), got {min_size!r}")
    return Dist("choice", tuple(list(c) for k in range(min_size, len(names) + 1)
                                for c in itertools.combinations(names, k)))


def _dist(key: str, spec: Any, name: str) -> Dist:
    if key == "candidates" and isinstance(spec, dict) and "subsets_of" in spec:
        return _subsets(spec, name)
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS):
        extra = ", or {subsets_of: [...], min_size: N}" if key == "candidates" else ""
        raise ConfigError(name, f"must be one distribution such as {{loguniform: [1.0e-4, 0.1]}}; "
                          f"allowed: {', '.join(DISTRIBUTIONS)}{extra}; got {spec!r}")
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(name, f"choice needs a non-empty list of values, got {args!r}")
        return Dist(kind, tuple(args))
    if not isinstance(args, list) or len(args) != 2:
        raise ConfigError(name, f"{kind} needs [low, high], got {args!r}")
    if kind == "randint":
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise ConfigError(name, f"randint needs [low, high] as two integers, got {args!r}")
        low, high = args
    else:
        low, high = (_bound(a, name, kind) for a in args)
    if not low < high:
        raise ConfigError(name, f"{kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(name, f"loguniform needs low > 0, got {low}")
    return Dist(kind, (low, high))


def _check_key(key: str, name: str) -> None:
    """Searchable: any campaign setting but FIXED ones; section settings as `section.key`."""
    top, dot, leaf = key.partition(".")
    if top in FIXED:
        raise ConfigError(name, f"is the same for every trial; set it in campaign: (not "
                          f"searchable: {', '.join(FIXED)})")
    section = getattr(Config(), top, None)
    if dataclasses.is_dataclass(section):
        if not leaf or "." in leaf:
            raise ConfigError(name, f"name one setting of the {top} section, e.g. "
                              f"{top}.{dataclasses.fields(section)[0].name}")
    elif dot:
        sections = [f.name for f in dataclasses.fields(Config)
                    if dataclasses.is_dataclass(getattr(Config(), f.name))]
        raise ConfigError(name, f"unknown setting; dotted keys name a setting of a section: "
                          f"{', '.join(sections)}")


def _probe(campaign: dict[str, Any], key: str, dist: Dist) -> None:
    """Each end of a range and each option passes `run`'s checks on its own."""
    name = f"tune.search_space.{key}"
    for value in dist.args:
        try:
            trial_config(campaign, {key: value})
        except ConfigError as e:
            raise ConfigError(name, problem(e) if e.field == key
                              else f"{value!r} breaks {e.field}: {problem(e)}") from None


def _space(raw: Any, campaign: dict[str, Any], base: Config) -> dict[str, Dist]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("tune.search_space", "must map settings to distributions, e.g. "
                          f"autoal.searchnet_lr: {{loguniform: [1.0e-4, 0.1]}}; got {raw!r}")
    space = {}
    for key, spec in raw.items():
        key, name = str(key), f"tune.search_space.{key}"
        _check_key(key, name)
        space[key] = _dist(key, spec, name)
        _probe(campaign, key, space[key])
    if "candidates" in space and base.strategy not in POLICIES:
        raise ConfigError("tune.search_space.candidates", f"only the {', '.join(POLICIES)} "
                          f"strategies use candidates; campaign.strategy is {base.strategy!r}")
    return space


def _scheduler(raw: Any, rounds: int) -> Asha | None:
    if raw is None or raw == "none":
        return None
    spec = {"name": "asha"} if raw == "asha" else raw
    if not isinstance(spec, dict) or spec.get("name") != "asha":
        raise ConfigError("tune.scheduler", "must be none, asha, or {name: asha, grace_period: "
                          f"G, reduction_factor: F}}; got {raw!r}")
    _mapping(spec, "tune.scheduler", ASHA_KEYS)
    grace = spec.get("grace_period", 1)
    if not isinstance(grace, int) or isinstance(grace, bool) or not 1 <= grace <= rounds:
        raise ConfigError("tune.scheduler.grace_period", f"must be an integer in [1, "
                          f"campaign.rounds = {rounds}] (ASHA's time axis is the round), "
                          f"got {grace!r}")
    factor = spec.get("reduction_factor", 2)
    if not _is_number(factor) or factor <= 1:
        raise ConfigError("tune.scheduler.reduction_factor",
                          f"must be a number > 1, got {factor!r}")
    return Asha(grace, float(factor))


def _resources(raw: Any, base: Config) -> tuple[float, float]:
    spec = _mapping({} if raw is None else raw, "tune.resources_per_trial", ("cpu", "gpu"))
    cpu, gpu = spec.get("cpu", 1), spec.get("gpu", 0)
    if not _is_number(cpu) or cpu <= 0:
        raise ConfigError("tune.resources_per_trial.cpu", f"must be a number > 0, got {cpu!r}")
    if not _is_number(gpu) or gpu < 0:
        raise ConfigError("tune.resources_per_trial.gpu", f"must be a number >= 0, got {gpu!r}")
    if base.workers == 0 and base.gpu and gpu == 0:  # the trial process itself trains
        raise ConfigError("tune.resources_per_trial.gpu", "campaign.gpu is true but trials get "
                          "no GPU; set gpu > 0 (a fraction shares one)")
    if gpu > 0 and not base.gpu:
        raise ConfigError("tune.resources_per_trial.gpu", f"reserves {gpu} GPU per trial but "
                          "campaign.gpu is false; set campaign.gpu: true or gpu: 0")
    return float(cpu), float(gpu)


def _loggers(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise ConfigError("tune.loggers", f"must be a list of names ({', '.join(LOGGERS)}), "
                          f"got {raw!r}")
    for n in raw:
        if n not in LOGGERS:
            raise ConfigError("tune.loggers",
                              f"unknown logger {n!r}; allowed: {', '.join(LOGGERS)}")
        if importlib.util.find_spec(LOGGERS[n]) is None:
            raise ConfigError("tune.loggers", f"{n} needs the {LOGGERS[n]} package, which is not "
                              f"installed (pip install {LOGGERS[n]})")
    return tuple(raw)


def _campaign(raw: Any) -> tuple[dict[str, Any], Config]:
    campaign = {} if raw is None else raw
    if not isinstance(campaign, dict):
        raise ConfigError("campaign", f"must be a mapping of campaign settings, got {campaign!r}")
    try:
        base = load_config(campaign)
    except ConfigError as e:
        raise prefixed(e, "campaign") from None
    if base.out is not None:
        raise ConfigError("campaign.out", "each trial writes <--out>/trials/<trial id>; "
                          "give the sweep's directory as tune --out instead")
    if base.oracle != "simulated":
        raise ConfigError("campaign.oracle", "a sweep needs simulated labels; oracle files "
                          "would stop every trial to wait for people")
    return campaign, base


def _mode(raw: Any, base: Config) -> str:
    """`local` (the default while campaign.workers is 0) runs each trial's whole campaign in
    the trial process; `ray` (the default with workers > 0) scores on the trial's own actors
    and fits networks as Ray Train jobs."""
    mode = raw if raw is not None else "ray" if base.workers > 0 else "local"
    if mode not in MODES:
        raise ConfigError("tune.mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "local" and base.workers > 0:
        raise ConfigError("tune.mode", "local trains in the trial process, so campaign.workers "
                          f"({base.workers}) would be ignored; use mode: ray or workers: 0")
    if mode == "ray" and base.shards == 0:
        raise ConfigError("campaign.shards", "with mode ray each trial scores on its own "
                          "actors; set shards >= 1 (0 = one per cluster CPU, for every trial)")
    return mode


def parse_sweep(values: dict[str, Any], num_samples: int | None = None) -> Sweep:
    """Check a whole sweep file; `num_samples` (from --num-samples) replaces tune.num_samples."""
    for key in values:
        if key not in SECTIONS:
            raise ConfigError(str(key),
                              f"unknown section; a sweep file has: {', '.join(SECTIONS)}")
    if "tune" not in values:
        raise ConfigError("tune", "missing; a sweep file needs a tune: section (search_space, "
                          "num_samples, ...) beside campaign:")
    campaign, base = _campaign(values.get("campaign"))
    t = _mapping(values["tune"], "tune", TUNE_KEYS)
    metric = t.get("metric", "auc")
    if metric not in METRICS:
        raise ConfigError("tune.metric", f"must be one of {', '.join(METRICS)}, got {metric!r}")
    concurrent = t.get("max_concurrent_trials")
    cpu, gpu = _resources(t.get("resources_per_trial"), base)
    return Sweep(
        campaign=campaign, base=base, space=_space(t.get("search_space"), campaign, base),
        num_samples=_integer(t.get("num_samples", 8) if num_samples is None else num_samples,
                             "tune.num_samples" if num_samples is None else "--num-samples", 1),
        max_concurrent_trials=None if concurrent is None
        else _integer(concurrent, "tune.max_concurrent_trials", 1),
        cpu=cpu, gpu=gpu, metric=metric, scheduler=_scheduler(t.get("scheduler"), base.rounds),
        seed=_integer(t.get("seed", 0), "tune.seed", 0), loggers=_loggers(t.get("loggers")),
        mode=_mode(t.get("mode"), base))
