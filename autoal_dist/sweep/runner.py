"""`autoal-dist tune`: a Ray Tune sweep over candidate pools and AutoAL hyperparameters.

A trial is one short campaign with the trial's sampled values, run by a Tune function
trainable that reports {round, accuracy, auc, n_labeled} after every round, so ASHA (time
axis: the round) stops weak pools early. Each trial's campaign is an ordinary run directory,
`<out>/trials/<trial id>/`: `autoal-dist report` works on it, and `run --resume --out` on it
finishes a trial ASHA stopped. `<out>` may be a URI (s3://, gs://): trials on other nodes
stage their run directories there (remote.py), and Tune keeps its experiment there.

How Tune and Ray Train fit (Ray 2.60, Train V2: a Tune function launches the Trainer):
* tune.mode local (the default while workers is 0): the trial process runs the whole campaign,
  scoring with the LocalScorer and training in-process, on the trial's own reservation.
* tune.mode ray (the default with workers > 0): the trial runs its campaign in execution mode
  `ray`: each round's networks are fitted by TorchTrainers launched from inside the trial.
  Ray Train gives their worker group a placement group of its own, outside the trial's
  reservation (so keep max_concurrent_trials within what the cluster holds besides). Scorer
  actors are child actors, which Tune captures into the trial's placement group, so the trial
  reserves one bundle per shard for them, for its whole life (they stay between rounds).
  `TuneReportCallback` is deliberately absent: it forwards each Train report as a Tune result,
  and those are per-step training checkpoints ({"step": n}). The tuned metric exists only
  after a round's training and evaluation, in the trial, which reports it itself; a forwarded
  result without it fails Tune's strict metric check and would put step counts on ASHA's axis.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from autoal_dist import __version__, remote, store
from autoal_dist.campaign import Campaign, prepare_data
from autoal_dist.config import Config, ConfigError, read_config_file
from autoal_dist.data import Dataset
from autoal_dist.execution import execution_for
from autoal_dist.report import learning_curve_auc
from autoal_dist.run import Run, new_meta, open_run
from autoal_dist.run.lifecycle import How
from autoal_dist.sweep.space import Dist, Sweep, check_samples, parse_sweep, prefixed, trial_config

RESULTS_FILE = "tune_results.parquet"
# Column types that inference cannot see when every trial has None there (no errors, ...).
RESULT_TYPES = {"trial_id": pa.string(), "auc": pa.float64(), "accuracy": pa.float64(),
                "n_labeled": pa.int64(), "last_round": pa.int64(), "stopped_early": pa.bool_(),
                "status": pa.string(), "error": pa.string(), "time_s": pa.float64()}
# unfinished: pending or running when the sweep was interrupted (`tune --resume` runs them)
STATUS_ORDER = ("complete", "stopped", "unfinished", "error")
ARGS_FILE = "sweep_args.json"  # the command line's num_samples, for `tune --resume`
BEST_FILE = "best_config.yaml"
SWEEP_FILE = "sweep.yaml"  # the sweep file as given
EXPERIMENT_DIR = "ray_tune"  # Tune's own experiment state (Tuner.restore reads it)
EXIT_INTERRUPTED = 130  # as a shell reports a Ctrl-C
PATH_KEYS = ("data_root", "pretrained")  # trials run in their own working directory


def _domain(dist: Dist) -> Any:
    """The ray.tune sampling function of a parsed distribution."""
    from ray import tune

    if dist.kind == "choice":
        # Tune reads a list in a config as a nested space: a candidate pool travels as the
        # text "a,b,c", which the campaign config reads as that list (and the results table shows).
        return tune.choice([",".join(v) if isinstance(v, list) else v for v in dist.args])
    if dist.kind == "randint":
        return tune.randint(dist.args[0], dist.args[1] + 1)  # tune's upper end is exclusive
    return getattr(tune, dist.kind)(*dist.args)


def sample_trials(sweep: Sweep) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Tune's param space and `num_samples` draws from it, fixed by tune.seed.

    Drawn here rather than by Tune's searcher so that every trial's config is checked
    before the first trial starts, and the same seed gives the same trials; Tune then runs
    exactly these points (`points_to_evaluate`).
    """
    domains = {key: _domain(dist) for key, dist in sweep.space.items()}
    rng = np.random.default_rng(sweep.seed)
    samples = [{key: _plain(d.sample(random_state=rng)) for key, d in domains.items()}
               for _ in range(sweep.num_samples)]
    return domains, samples


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _trial(sample: dict[str, Any], *, campaign: dict[str, Any], data: Dataset,
           meta: dict[str, Any], trials_dir: str, mode: str) -> None:
    """One trial: the campaign with the sampled values in `trials_dir/<trial id>` (a local
    path or a URI: trials may run on any node), reporting after every round."""
    from ray import tune

    cfg = trial_config(campaign, sample)
    trial = tune.get_context().get_trial_id()
    location = remote.join(trials_dir, trial)
    # the run lock and checks of `run`: a resumed sweep restarts an unfinished trial, which
    # continues its campaign (a new trial's directory is empty)
    how: How = "new" if remote.is_empty(location, field="trial") else "resume"
    with open_run(location, how, command=f"autoal-dist tune (trial {trial})",
                  field="trial") as run:
        if how == "new":
            run.create({**meta, "config": cfg.to_dict()}, data)
        _run_trial(cfg, data, run, mode)


def _run_trial(cfg: Config, data: Dataset, run: Run, mode: str) -> None:
    from ray import tune

    done = run.metrics()  # rounds a restarted trial finished before
    n_labeled: list[int] = [r["n_labeled"] for r in done]
    accuracy: list[float] = [r["accuracy"] for r in done]

    def report(row: dict[str, Any]) -> None:
        n_labeled.append(row["n_labeled"])
        accuracy.append(row["accuracy"])
        tune.report({"round": row["round"], "accuracy": row["accuracy"],
                     "auc": learning_curve_auc(np.array(n_labeled), np.array(accuracy)),
                     "n_labeled": row["n_labeled"]})

    camp = Campaign(cfg, run, data, execution=execution_for(mode), show_progress=False)
    try:
        camp.run(on_round=report)
    finally:
        camp.close()


def _trial_resources(cfg: Config, cpu: float, gpu: float, mode: str) -> Any:
    """The trial's placement group: the trial process, plus its scorer actors in mode ray."""
    import ray
    from ray import tune

    from autoal_dist.execution import reservation

    bundles = [{"CPU": cpu, "GPU": gpu}]
    if mode == "ray":  # each bundle is what one RayScorer actor asks for
        r = reservation(cfg, ray.cluster_resources())
        bundles += [dict(r.actor)] * r.shards
    return tune.PlacementGroupFactory(bundles)


def _logger_callbacks(names: tuple[str, ...], out: str) -> list[Any]:
    """Tune's TensorBoard files land in its trial directories (synced to `out` by Tune);
    MLflow tracks into out/mlruns, or for a URI `out` into $MLFLOW_TRACKING_URI's server."""
    callbacks: list[Any] = []
    if "tensorboard" in names:
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
    if "mlflow" in names:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        if remote.is_uri(out):
            tracking = os.environ.get("MLFLOW_TRACKING_URI")
            if not tracking:
                raise ConfigError("tune.loggers", "mlflow with a URI --out needs "
                                  "MLFLOW_TRACKING_URI (a tracking server): its file store "
                                  "cannot live in an object store")
        else:
            tracking = (Path(out) / "mlruns").as_uri()
        callbacks.append(MLflowLoggerCallback(tracking_uri=tracking,
                                              experiment_name=PurePosixPath(out).name))
    return callbacks


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _drop_ray_resume_advice(record: logging.LogRecord) -> bool:
    """Tune's own advice on an interrupted sweep (`Tuner.restore(...)`, and the metrics of the
    trials it never started) contradicts the one line this command prints: `tune --resume`."""
    text = record.getMessage()
    return "Tuner.restore" not in text and "Failed to fetch metrics" not in text


def _fit(sweep: Sweep, campaign: dict[str, Any], domains: dict[str, Any],
         samples: list[dict[str, Any]], data: Dataset, out: str, quiet: bool,
         restore: bool = False) -> Any:
    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
        logging.getLogger(name).addFilter(_drop_ray_resume_advice)
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    meta = new_meta({}, data, __version__, mode=sweep.mode)
    trainable = tune.with_parameters(_trial, campaign=campaign, data=data, meta=meta,
                                     trials_dir=remote.join(out, "trials"), mode=sweep.mode)
    trainable = tune.with_resources(trainable, _trial_resources(sweep.base, sweep.cpu,
                                                                 sweep.gpu, sweep.mode))
    experiment = remote.join(out, EXPERIMENT_DIR)
    if restore and tune.Tuner.can_restore(experiment):
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True,
                                   resume_errored=True)
        with contextlib.redirect_stdout(io.StringIO() if quiet else sys.stderr):
            return tuner.fit()
    asha = sweep.scheduler
    scheduler = None if asha is None else ASHAScheduler(
        time_attr="round", max_t=sweep.base.rounds, grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor)
    tuner = tune.Tuner(
        trainable,
        param_space=domains,
        tune_config=tune.TuneConfig(
            metric=sweep.metric, mode="max", num_samples=len(samples), scheduler=scheduler,
            # the generator, not TuneConfig, limits concurrency: Tune ignores
            # max_concurrent_trials with a SearchGenerator such as this one
            search_alg=BasicVariantGenerator(points_to_evaluate=samples,
                                             max_concurrent=sweep.max_concurrent_trials or 0),
            trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name=EXPERIMENT_DIR, storage_path=out,
                                  verbose=0 if quiet else 1,
                                  callbacks=_logger_callbacks(sweep.loggers, out)))
    # stdout is for the ranked table, as `run` keeps it for its table: Tune's prints (its
    # header box even at verbose 0) go to stderr, or nowhere with --quiet
    with contextlib.redirect_stdout(io.StringIO() if quiet else sys.stderr):
        return tuner.fit()


# ---- results ----------------------------------------------------------------------

def write_trial_reports(trials_dir: str, rows: list[dict[str, Any]]) -> None:
    """Each finished or ASHA-stopped trial's curves.png and summary.md (a stopped one's says
    it was stopped, at which round, and why), like the report of a run."""
    from autoal_dist.report import write_report

    for row in rows:
        if row["status"] not in ("complete", "stopped"):
            continue
        location = remote.join(trials_dir, row["trial_id"])
        stopped = (f"ASHA stopped this trial after round {row['last_round']} (its metric "
                   "trailed the other trials' at that round); a stopped trial is not resumed"
                   if row["status"] == "stopped" else None)
        with open_run(location, "read", field="trial") as run:
            if run.metrics():
                write_report(run, stopped)


def result_rows(grid: Any, sweep: Sweep) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(row of tune_results.parquet, the trial's sample) per trial, best first.

    Complete trials come first, by the metric; then ASHA-stopped ones, furthest round first:
    an AUC over fewer rounds is not comparable (ASHA compared them at their last round).
    """
    saved = saved_statuses(grid.experiment_path)
    out = []
    for result in grid:
        last = result.metrics or {}
        last_round = last.get("round")
        trial_id = Path(result.path).name if result.path else "?"
        config = result.config or {}
        status = ("error" if result.error is not None
                  else "unfinished" if saved.get(trial_id, "TERMINATED") != "TERMINATED"
                  else "stopped" if last_round is None or last_round < sweep.base.rounds
                  else "complete")
        row = {"trial_id": trial_id,
               **{key: config.get(key) for key in sweep.space},
               "auc": float(last.get("auc", math.nan)),
               "accuracy": float(last.get("accuracy", math.nan)),
               "n_labeled": last.get("n_labeled"), "last_round": last_round,
               "stopped_early": status == "stopped", "status": status,
               "error": None if result.error is None
               else str(result.error).strip().splitlines()[-1],
               "time_s": last.get("time_total_s")}
        out.append((row, config))

    def rank(row_sample: tuple[dict[str, Any], dict[str, Any]]) -> tuple[int, int, float]:
        row = row_sample[0]
        value = row[sweep.metric]
        return (STATUS_ORDER.index(row["status"]), -(row["last_round"] or 0),
                math.inf if math.isnan(value) else -value)

    return sorted(out, key=rank)


def saved_statuses(experiment: str) -> dict[str, str]:
    """Trial id -> status in Tune's newest saved experiment state: what `Tuner.restore`
    resumes. After a Ctrl-C it holds the trials that were running as RUNNING, while the
    returned trials already read TERMINATED (Tune stopped them on the way out)."""
    from pyarrow import fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(experiment) if remote.is_uri(experiment) \
        else (pafs.LocalFileSystem(), str(experiment))
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return {}
    states = sorted(i.path for i in infos
                    if i.base_name.startswith("experiment_state-")
                    and i.base_name.endswith(".json"))
    if not states:
        return {}
    with filesystem.open_input_stream(states[-1]) as f:
        state = json.loads(f.read())
    statuses = {}
    for entry in state.get("trial_data", []):
        trial = json.loads(entry[0]) if isinstance(entry, list) else entry
        statuses[trial.get("trial_id")] = trial.get("status")
    return statuses


def ranked_table(rows: list[dict[str, Any]], sweep: Sweep) -> str:
    """Best first by the sweep's metric; the sampled values last."""
    other = "accuracy" if sweep.metric == "auc" else "auc"
    head = ["rank", "trial", sweep.metric, other, "labeled", "round", "status", *sweep.space]

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.4g}"
        return "-" if value is None else str(value)

    body = [[str(i), r["trial_id"], fmt(r[sweep.metric]), fmt(r[other]), fmt(r["n_labeled"]),
             "-" if r["last_round"] is None else f"{r['last_round']}/{sweep.base.rounds}",
             r["status"], *(fmt(r[k]) for k in sweep.space)] for i, r in enumerate(rows, 1)]
    widths = [max(len(line[c]) for line in [head, *body]) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
             for line in [head, *body]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_best_config(out_dir: remote.Staged, campaign: dict[str, Any], sample: dict[str, Any],
                      note: str) -> None:
    """The full campaign config of the best trial, for `autoal-dist run --config` (a fresh run:
    no out, no name)."""
    cfg = trial_config(campaign, sample).to_dict()
    cfg.pop("out")
    cfg.pop("name")
    path = out_dir.local / BEST_FILE
    store.write_text(path, f"# {note}\n# autoal-dist run --config {out_dir.where(path)}\n"
                     + yaml.safe_dump(cfg, sort_keys=False), out_dir.commit)


# ---- the command --------------------------------------------------------------------

def _absolute_paths(campaign: dict[str, Any]) -> dict[str, Any]:
    """Tune runs each trial in its own working directory: pin relative paths to this one."""
    return {**campaign, **{k: str(Path(campaign[k]).absolute()) for k in PATH_KEYS
                           if campaign.get(k) is not None}}


def run_tune(config: Path | None, out: str | None, num_samples: int | None, quiet: bool,
             resume: bool = False) -> int:
    """Check the sweep, run it on Ray Tune, write the results; 1 if every trial failed,
    130 if it was interrupted (`resume` then continues it: finished trials stay, unfinished
    ones run, each trial's campaign continuing from its run directory).

    `out` is a local directory or a URI (remote.py): the sweep's files are staged and
    uploaded, Tune writes its experiment there itself, and each trial stages its own run.
    """
    if resume:
        if not out:
            raise ConfigError("--out", "tune --resume needs --out DIR, the sweep to continue")
        if config is not None or num_samples is not None:
            raise ConfigError("--config" if config is not None else "--num-samples",
                              "a resumed sweep keeps the sweep file and trial count it "
                              "started with; drop it")
    elif config is None:
        raise ConfigError("--config", "tune needs --config SWEEP.yaml (or --resume --out DIR)")
    if out is None and config is not None:
        out = str(Path("runs") / f"tune-{config.stem}")
    assert out is not None
    if not remote.is_uri(out):
        out = str(Path(out).absolute())
    if resume:
        with remote.opened(out, field="--out") as out_dir:
            local = out_dir.local
            if not (local / SWEEP_FILE).is_file():
                raise ConfigError("--out", f"{out} holds no {SWEEP_FILE}; not a sweep directory")
            text = (local / SWEEP_FILE).read_text(encoding="utf-8")
            args = json.loads((local / ARGS_FILE).read_text()) \
                if (local / ARGS_FILE).is_file() else {}
            values = yaml.safe_load(text) or {}
            sweep, data, domains, samples, campaign = _prepare(values, args.get("num_samples"))
            _start_ray(sweep)
            return _sweep(sweep, campaign, domains, samples, data, out, out_dir, quiet,
                          restore=True)
    assert config is not None
    values = read_config_file(config)
    if not remote.is_empty(out):
        raise ConfigError("--out", f"{out} is not an empty directory; a sweep writes a new one "
                          "(tune --resume --out continues one)")
    sweep, data, domains, samples, campaign = _prepare(values, num_samples)
    _start_ray(sweep)
    with remote.opened(out, download=False) as out_dir:
        out_dir.local.mkdir(parents=True, exist_ok=True)
        store.write_text(out_dir.local / SWEEP_FILE, config.read_text(encoding="utf-8"),
                         out_dir.commit)
        store.write_json(out_dir.local / ARGS_FILE, {"num_samples": num_samples}, out_dir.commit)
        return _sweep(sweep, campaign, domains, samples, data, out, out_dir, quiet)


def _prepare(values: dict[str, Any], num_samples: int | None
             ) -> tuple[Sweep, Dataset, dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """The checked sweep, its data and its trials, before anything is written."""
    sweep = parse_sweep(values, num_samples)
    try:
        data = prepare_data(sweep.base)
    except ConfigError as e:
        raise prefixed(e, "campaign") from None
    domains, samples = sample_trials(sweep)
    check_samples(sweep, samples, data.num_classes, len(data.train_y))
    return sweep, data, domains, samples, _absolute_paths(sweep.campaign)


def _start_ray(sweep: Sweep) -> None:
    """Start or join Ray (saying which) and check that one trial fits the cluster, before
    the sweep directory is written."""
    from autoal_dist.execution import reservation
    from autoal_dist.ray_cluster import announce, cluster_resources, require
    from autoal_dist.scoring.ray_scorer import default_cache_bytes

    if sweep.mode == "ray":
        default_cache_bytes()  # a bad AUTOAL_DIST_SCORER_CACHE_MB: one line, nothing written
    # The dashboard is needed here: when ASHA kills a trial that runs a Train job, Train V2's
    # placement group cleaner asks the dashboard's state API about the job before freeing
    # its workers.
    print(announce(dashboard=True), file=sys.stderr, flush=True)
    if sweep.mode != "ray":
        require(sweep.cpu, sweep.gpu, f"one trial (tune.resources_per_trial cpu "
                f"{sweep.cpu:g}, gpu {sweep.gpu:g})", "lower tune.resources_per_trial")
        return
    # a trial's scorer actors live as long as the trial, beside its Train workers
    r = reservation(sweep.base, cluster_resources())
    workers = sweep.base.workers
    require(sweep.cpu + r.total("CPU"), sweep.gpu + r.total("GPU"),
            f"one trial (tune.resources_per_trial cpu {sweep.cpu:g}, gpu {sweep.gpu:g}, "
            f"+ {r.shards} scorer actors" + (f", + its Ray Train job's {workers} workers"
                                               if workers else "") + ")",
            "lower tune.resources_per_trial (or campaign.shards"
            + (", campaign.workers" if workers else "") + ")")


def _sweep(sweep: Sweep, campaign: dict[str, Any], domains: dict[str, Any],
           samples: list[dict[str, Any]], data: Dataset, out: str, out_dir: remote.Staged,
           quiet: bool, restore: bool = False) -> int:
    grid = _fit(sweep, campaign, domains, samples, data, out, quiet, restore)
    ranked = result_rows(grid, sweep)
    rows = [row for row, _ in ranked]
    write_trial_reports(remote.join(out, "trials"), rows)
    table = pa.Table.from_pylist(rows)
    store.write_table(out_dir.local / RESULTS_FILE, table.cast(pa.schema(
        [pa.field(f.name, RESULT_TYPES.get(f.name, f.type)) for f in table.schema])),
        out_dir.commit)
    print(ranked_table(rows, sweep))
    for row in rows:
        if row["error"]:
            print(f"trial {row['trial_id']} failed: {row['error']}", file=sys.stderr)
    unfinished = sum(row["status"] == "unfinished" for row in rows)
    if unfinished:
        print(f"autoal-dist: the sweep was interrupted with {unfinished} of {len(rows)} trials "
              f"unfinished; {RESULTS_FILE} holds the rest. Continue it: autoal-dist tune "
              f"--resume --out {out}", file=sys.stderr)
    best, best_sample = ranked[0]
    if best["status"] == "unfinished":
        return EXIT_INTERRUPTED
    if best["status"] == "error":
        print(f"autoal-dist: error: every trial failed; see the errors above and "
              f"{remote.join(out, EXPERIMENT_DIR)}", file=sys.stderr)
        return 1
    write_best_config(out_dir, campaign, best_sample,
                      f"best of the sweep {PurePosixPath(out).name}: trial {best['trial_id']}, "
                      f"{sweep.metric} {best[sweep.metric]:.4f}")
    print(f"\noutputs: {out}/ ({RESULTS_FILE}, {BEST_FILE}, trials/<trial id>/)")
    return EXIT_INTERRUPTED if unfinished else 0
