"""`autoal-dist run | tune | bench | export | import | report | pool`.

Every user error (bad flag, bad config value, unusable dataset) is one line on
stderr and exit code 2, raised before anything in the run directory changes.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from autoal_dist import remote, rundir, __version__
from autoal_dist.config import Config, ConfigError, read_config_file
from autoal_dist.registry import load_config
from autoal_dist.data import DataError, Dataset
from autoal_dist.data.pool_cli import add_pool_parser, cmd_pool
from autoal_dist.labeling.importer import import_labels
from autoal_dist.labeling import LabelError, export_batch, next_steps
from autoal_dist.remote import RemoteError
from autoal_dist.rundir import RunDirError

EXIT_USAGE = 2
# Settings a resumed campaign may change: they alter how it runs, not what it selects.
RESUMABLE_OVERRIDES = {"rounds", "shards", "workers", "gpu"}


class UsageError(Exception):
    """One-line user error for the CLI's own checks (run directory, resume)."""


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or JSON campaign config")
    p.add_argument("--dataset", help="digits | synthetic[:SPEC] | npz:PATH | parquet:PATH | "
                   "medmnist:NAME[@SIZE] | cifar10 | cifar100 | svhn | tinyimagenet | "
                   "pool:DIR_OR_URI (a stored pool: `autoal-dist pool write`)")
    p.add_argument("--data-root", dest="data_root", help="directory holding the dataset files")
    p.add_argument("--strategy", help="query strategy (see `autoal-dist strategies`)")
    p.add_argument("--candidates", help="comma-separated candidate strategies for autoal")
    p.add_argument("--init", type=int, help="size of the random initial labeled set")
    p.add_argument("--budget", type=int, help="samples queried per round")
    p.add_argument("--rounds", type=int, help="query rounds")
    p.add_argument("--seed", type=int, help="campaign seed (same seed, same journal)")
    p.add_argument("--shards", type=int, help="scorer actors over the pool (0 = one per CPU)")
    p.add_argument("--workers", type=int, help="Ray Train workers (0 = local)")
    p.add_argument("--gpu", action="store_true", default=None, help="use GPUs")
    p.add_argument("--out", help="run directory (default runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue the campaign in --out")
    p.add_argument("--name", help="run name (default <dataset>-<strategy>-seed<S>)")
    p.add_argument("--model", help="auto | smallcnn | mlp | resnet18")
    p.add_argument("--epochs", type=int, help="classifier epochs per round")
    p.add_argument("--preset", help="named defaults, e.g. paper-cifar")
    p.add_argument("--oracle", help="simulated (labels from the dataset) | files")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true",
                      help="score in the driver process instead of on Ray actors (same results); "
                      "a resumed run keeps the mode it was started with unless --local or --ray "
                      "is given")
    mode.add_argument("--ray", action="store_true",
                      help="score on Ray actors and train with Ray Train (the default of a new "
                      "run); on --resume, switches a run started with --local")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autoal-dist", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"autoal-dist {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _run_flags(sub.add_parser("run", help="run an active-learning campaign"))
    rep = sub.add_parser("report", help="rebuild curves.png and summary.md of a run directory")
    rep.add_argument("dir")
    sub.add_parser("strategies", help="list the registered query strategies")
    exp = sub.add_parser("export", help="write a queried batch for people to label "
                         "(PNG images, batch.csv, Label Studio tasks)")
    exp.add_argument("dir", help="run directory")
    exp.add_argument("--round", type=int, help="journal round to export (default: the round "
                     "awaiting labels)")
    exp.add_argument("--to", required=True, help="new (or empty) directory to write")
    exp.add_argument("--ls-root", dest="ls_root", help="Label Studio's "
                     "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: the parent of --to); "
                     "the folder above --to's parent lets one local-files storage, --to's "
                     "parent, serve every round")
    imp = sub.add_parser("import", help="record people's labels for queried samples")
    imp.add_argument("dir", help="run directory (started with --oracle files)")
    imp.add_argument("--labels", required=True, help="UTF-8 CSV with the columns id,label, or "
                     "a Label Studio project's JSON export (Export > JSON)")
    imp.add_argument("--relabel", action="store_true", help="replace recorded labels the file "
                     "changes (corrections; the replaced labels are kept in "
                     "labels/history.parquet)")
    sub.add_parser("bench", help="run a benchmark of the repository's benchmarks/ folder: "
                   "bench NAME [ARGS...] (bench --list names them)", add_help=False)
    add_pool_parser(sub)  # pool write|info|verify (data/pool_cli.py)
    tun = sub.add_parser("tune", help="search candidate pools and AutoAL hyperparameters "
                         "with Ray Tune (ASHA stops weak trials between rounds)")
    tun.add_argument("--config", required=True,
                     help="sweep YAML: a campaign: and a tune: section")
    tun.add_argument("--out",
                     help="sweep directory, new or empty (default runs/tune-<config stem>)")
    tun.add_argument("--num-samples", dest="num_samples", type=int,
                     help="number of trials (replaces tune.num_samples)")
    tun.add_argument("--quiet", action="store_true", help="no Tune progress tables")
    return p


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def cmd_bench(argv: list[str]) -> int:
    """`bench NAME ARGS...` = `python benchmarks/NAME.py ARGS...` of this source checkout.

    The benchmarks are scripts beside the package, not part of it: they exist in a
    checkout (an editable install), not in a wheel.
    """
    import subprocess

    names = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "common")
    if not BENCHMARKS.is_dir():
        raise UsageError(f"bench: no benchmarks/ folder at {BENCHMARKS}; run from a source "
                         "checkout installed with pip install -e .")
    if not argv or argv[0] in ("--list", "-h", "--help"):
        print("benchmarks: " + ", ".join(names) + "\nusage: autoal-dist bench NAME [ARGS...] "
              "(NAME --help for its flags)")
        return 0
    if argv[0] not in names:
        raise UsageError(f"bench: unknown benchmark {argv[0]!r}; allowed: {', '.join(names)}")
    return subprocess.call([sys.executable, str(BENCHMARKS / f"{argv[0]}.py"), *argv[1:]])


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("dataset", "data_root", "strategy", "candidates", "init", "budget", "rounds", "seed",
            "shards", "workers", "gpu", "out", "name", "model", "preset", "oracle")
    out = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.epochs is not None:
        out["train"] = {"epochs": args.epochs}
    return out


def default_name(cfg: Config) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{cfg.dataset}-{cfg.strategy}-seed{cfg.seed}")


def fresh_location(cfg: Config) -> str:
    """--out as given (must be new or empty); else runs/<name>, suffixed -2, -3... if taken."""
    if cfg.out:
        if not remote.is_empty(cfg.out):
            raise UsageError(f"--out: {cfg.out} already holds a run; pass --resume to continue "
                             "it or choose another directory")
        return cfg.out
    base = Path("runs") / (cfg.name or default_name(cfg))
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return str(out)


def stored_data(cfg: Config, meta: dict) -> Dataset:
    """The campaign's dataset, refused if it changed since the campaign started."""
    from autoal_dist.campaign import prepare_data

    data = prepare_data(cfg)
    if rundir.dataset_fingerprint(data) != meta["dataset_fingerprint"]:
        raise UsageError(f"--dataset: the data of {cfg.dataset!r} changed since the campaign "
                         "started (fingerprint differs); the campaign needs the same data")
    return data


def _resume_config(args: argparse.Namespace, run_dir: Path) -> tuple[Config, dict]:
    meta = rundir.read_meta(run_dir, "--out")
    stored = meta["config"]
    overrides = _overrides(args)
    overrides.pop("out", None)
    if args.config:
        raise UsageError("--config: a resumed campaign keeps its stored config; drop --config")
    for key, value in overrides.items():
        if key not in RESUMABLE_OVERRIDES and stored.get(key) != value:
            raise UsageError(f"--{key.replace('_', '-')}: differs from the campaign's stored "
                             f"value {stored.get(key)!r}; on --resume only "
                             f"{', '.join(sorted(RESUMABLE_OVERRIDES))} may change")
    cfg = load_config(stored, {k: v for k, v in overrides.items() if k in RESUMABLE_OVERRIDES})
    return cfg, meta


def cmd_run(args: argparse.Namespace) -> int:
    """A new campaign, or (--resume) the one in --out; a URI --out is staged (remote.py)."""
    from autoal_dist.campaign import prepare_data

    if args.resume:
        if not args.out:
            raise UsageError("--resume needs --out DIR, the run directory to continue")
        with remote.opened(args.out) as run_dir:
            cfg, meta = _resume_config(args, run_dir)
            return _run_campaign(args, cfg, stored_data(cfg, meta), meta, run_dir)
    file_values = read_config_file(args.config) if args.config else {}
    cfg = load_config(file_values, _overrides(args))
    data = prepare_data(cfg)
    location = fresh_location(cfg)
    with remote.opened(location, download=False) as run_dir:
        meta = rundir.new_meta(cfg.to_dict(), data, __version__, _mode(args, rundir.DEFAULT_MODE))
        rundir.create(run_dir, meta, data)
        return _run_campaign(args, cfg, data, meta, run_dir)


def _run_campaign(args: argparse.Namespace, cfg: Config, data: Dataset, meta: dict,
                  run_dir: Path) -> int:
    from autoal_dist.campaign import Campaign
    from autoal_dist.execution import execution_for
    from autoal_dist.report import write_report

    rundir.ensure_pool(run_dir, data)  # absent if a crash came right after config.json
    where = remote.location_of(run_dir)
    print(f"run directory: {where}", file=sys.stderr)
    meta["config"] = cfg.to_dict()  # a resume may raise rounds
    mode = _mode(args, meta.get(rundir.MODE_KEY, rundir.DEFAULT_MODE))  # or switch the mode
    meta[rundir.MODE_KEY] = mode
    rundir.write_meta(run_dir, meta)
    campaign = Campaign(cfg, run_dir, data, execution=execution_for(mode),
                        show_progress=not args.quiet)
    try:
        campaign.run()
    finally:
        campaign.close()
    if campaign.awaiting is not None:
        print(next_steps(run_dir, campaign.awaiting))
        return 0
    print(write_report(run_dir))
    print(f"\noutputs: {where}/ (metrics.parquet, journal/, curves.png, summary.md)")
    return 0


def _mode(args: argparse.Namespace, kept: str) -> str:
    """`local` or `ray`: the flag given, else the mode the run was started with (`kept`)."""
    return "local" if args.local else "ray" if args.ray else kept


def cmd_report(args: argparse.Namespace) -> int:
    from autoal_dist.report import write_report

    with remote.opened(args.dir, field="report") as run_dir:
        if not (run_dir / rundir.METRICS_FILE).is_file():
            raise UsageError(f"report: {args.dir} holds no {rundir.METRICS_FILE}")
        print(write_report(run_dir))
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    """Every name `--strategy` takes: the registered strategies, then the round policies
    that combine the candidates (autoal, albl, vote)."""
    from autoal_dist.policies import POLICIES
    from autoal_dist.strategies import STRATEGIES

    for name, s in sorted(STRATEGIES.items()):
        print(f"{name:<18} {s.kind:<8} needs {','.join(sorted(s.needs)) or '-':<28} "
              f"{s.doc.splitlines()[0] if s.doc else ''}")
    for name, policy in sorted(POLICIES.items()):
        doc = (policy.__doc__ or "").strip().splitlines()
        print(f"{name:<18} {'policy':<8} {'over --candidates':<34} {doc[0] if doc else ''}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if remote.is_uri(args.to):
        raise UsageError(f"--to: {args.to} is a URI; the export is a local directory of files "
                         "for people (or Label Studio) to open")
    with remote.opened(args.dir, field="export") as run_dir:
        meta = rundir.read_meta(run_dir, "export")

        def load_data():
            return stored_data(load_config(meta["config"]), meta)

        print(export_batch(run_dir, args.round, load_data, Path(args.to),
                           Path(args.ls_root) if args.ls_root else None))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    with remote.opened(args.dir, field="import") as run_dir:
        meta = rundir.read_meta(run_dir, "import")
        oracle = meta["config"]["oracle"]
        if oracle != "files":
            raise UsageError(f"import: {args.dir} runs with oracle {oracle!r}, which takes labels "
                             "from the dataset; start the campaign with --oracle files to label "
                             "with people")
        print(import_labels(run_dir, Path(args.labels), meta["num_classes"], args.relabel))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from autoal_dist.sweep.runner import run_tune

    return run_tune(Path(args.config), args.out, args.num_samples, args.quiet)


COMMANDS = {"run": cmd_run, "report": cmd_report, "strategies": cmd_strategies,
            "export": cmd_export, "import": cmd_import, "tune": cmd_tune, "pool": cmd_pool}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "bench":  # the rest of the line belongs to the script
            return cmd_bench(argv[1:])
        args = parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (ConfigError, DataError, LabelError, RemoteError, RunDirError, UsageError) as e:
        print(f"autoal-dist: error: {e}", file=sys.stderr)
        return EXIT_USAGE
