"""`autoal-dist run | tune | bench | export | import | report | pool`.

Every user error (bad flag, bad config value, unusable dataset) is one line on
stderr and exit code 2, raised before anything in the run directory changes.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoal_dist import __version__
from autoal_dist.config import PRESETS, Config, TrainConfig, read_config_file
from autoal_dist.data import Dataset
from autoal_dist.data.pool_cli import add_pool_parser, cmd_pool
from autoal_dist.errors import UserError
from autoal_dist.labeling import awaiting_labels, export_batch, next_steps
from autoal_dist.labeling.importer import import_labels
from autoal_dist.labeling.labels import LABELS_DIR
from autoal_dist.registry import load_config
from autoal_dist.run import Run, default_name, new_meta, open_run, resume_config
from autoal_dist.run.layout import DEFAULT_MODE, JOURNAL_DIR, MODE_KEY

if TYPE_CHECKING:
    from autoal_dist.execution import Execution

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # as a shell reports a Ctrl-C
_DEFAULTS, _TRAIN_DEFAULTS = Config(), TrainConfig()


class UsageError(UserError):
    """One-line user error for the CLI's own checks."""


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or JSON campaign config")
    p.add_argument("--dataset", help="digits | synthetic[:SPEC] | npz:PATH | parquet:PATH | "
                   "medmnist:NAME[@SIZE] | cifar10 | cifar100 | svhn | tinyimagenet | "
                   "pool:DIR_OR_URI (a stored pool: `autoal-dist pool write`)")
    p.add_argument("--data-root", dest="data_root", help="directory holding the dataset files")
    d = _DEFAULTS
    p.add_argument("--strategy", help="query strategy (see `autoal-dist strategies`; "
                   f"default: {d.strategy})")
    p.add_argument("--candidates", help="comma-separated candidate strategies for autoal "
                   f"(default: {','.join(d.candidates)})")
    p.add_argument("--init", type=int, help="size of the random initial labeled set "
                   f"(default: {d.init})")
    p.add_argument("--budget", type=int, help=f"samples queried per round (default: {d.budget})")
    p.add_argument("--rounds", type=int, help=f"query rounds (default: {d.rounds})")
    p.add_argument("--seed", type=int, help="campaign seed (same seed, same journal; "
                   f"default: {d.seed})")
    p.add_argument("--shards", type=int, help="scorer actors over the pool (0 = one per CPU; "
                   f"default: {d.shards})")
    p.add_argument("--workers", type=int, help="Ray Train workers (0 = train in the driver; "
                   f"default: {d.workers})")
    p.add_argument("--gpu", action="store_true", default=None, help="use GPUs (default: off)")
    p.add_argument("--out", help="run directory (default runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue the campaign in --out")
    p.add_argument("--name", help="run name (default <dataset>-<strategy>-seed<S>)")
    p.add_argument("--model", help="auto | smallcnn | mlp | resnet18 (default: "
                   f"{d.model}: mlp for features, smallcnn up to 16 px, else resnet18)")
    p.add_argument("--epochs", type=int, help="classifier epochs per round (default: "
                   f"{_TRAIN_DEFAULTS.epochs})")
    p.add_argument("--preset", help=f"named defaults under --config and the flags: "
                   f"{' | '.join(PRESETS)} (the paper's CIFAR recipe: init 2000, budget 1000, "
                   "18 rounds, ResNet-18, the paper's 7 candidates; default: none)")
    p.add_argument("--oracle", help="simulated (labels from the dataset) | files (labels "
                   f"from people: export, import; default: {d.oracle})")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no lines about "
                   "steps on Ray; the per-round line and the final table stay (default: off)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true",
                      help="no Ray: scoring AND training (the classifier and AutoAL's "
                      "search) run in this driver process, with the same results; a resumed run "
                      "keeps the mode it was started with unless --local or --ray is given "
                      "(default: --ray)")
    mode.add_argument("--ray", action="store_true",
                      help="score on Ray actors and train with Ray Train (the default of a new "
                      "run); on --resume, switches a run started with --local")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autoal-dist", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"autoal-dist {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _run_flags(sub.add_parser("run", help="run an active-learning campaign"))
    rep = sub.add_parser("report", help="rebuild curves.png and summary.md of a run "
                         "directory; with several, compare them (compare.png, compare.md)")
    rep.add_argument("dir", nargs="+", metavar="DIR", help="run directory; several: a "
                     "comparison by strategy over seeds, written to --to (the run directories "
                     "are only read)")
    rep.add_argument("--to", metavar="OUT", help="comparison: directory for compare.png and "
                     "compare.md (default: ./compare)")
    rep.add_argument("--baseline", metavar="STRATEGY", help="comparison: the strategy the "
                     "paired AUC differences are taken against (default: random if it ran, "
                     "else the first by name)")
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
    exp.add_argument("--dataset", help="where the campaign's dataset is now, if it moved "
                     "(default: config.json's; the data must be the same: fingerprint)")
    exp.add_argument("--data-root", dest="data_root", help="the dataset files' directory, if "
                     "it moved (default: config.json's)")
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
    tun.add_argument("--config", help="sweep YAML: a campaign: section (run's config) and a "
                   "tune: section (search_space, num_samples, scheduler, ...; docs/tune.md); "
                   "required unless --resume")
    tun.add_argument("--resume", action="store_true", help="continue the interrupted sweep "
                     "in --out: finished trials stay, unfinished ones run to the end")
    tun.add_argument("--out",
                     help="sweep directory, new or empty (default runs/tune-<config stem>)")
    tun.add_argument("--num-samples", dest="num_samples", type=int,
                     help="number of trials (replaces tune.num_samples)")
    tun.add_argument("--quiet", action="store_true", help="no Tune progress tables")
    return p


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
NOT_BENCHMARKS = {"common", "pools", "oracle"}  # modules the benchmark scripts share


def cmd_bench(argv: list[str]) -> int:
    """`bench NAME ARGS...` = `python benchmarks/NAME.py ARGS...` of this source checkout.

    The benchmarks are scripts beside the package, not part of it: they exist in a
    checkout (an editable install), not in a wheel.
    """
    import subprocess

    names = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem not in NOT_BENCHMARKS)
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


def _check_writable(run: Run, flag: str) -> None:
    """A local run directory a command will write must be writable (and its journal/ and
    labels/): refused in one line before anything starts, not by a failed write midway."""
    if run.is_remote:
        return
    for d in (run.dir, run.path(JOURNAL_DIR), run.path(LABELS_DIR)):
        if d.is_dir() and not os.access(d, os.W_OK | os.X_OK):
            raise UsageError(f"{flag}: {d} is read-only (no permission to write there); "
                             "nothing was changed")


def stored_data(cfg: Config, meta: dict) -> Dataset:
    """The campaign's dataset, refused if it changed since the campaign started. `cfg` may
    name the data elsewhere than config.json does (a moved dataset): accepted when what is
    found there has the campaign's fingerprint. Imports no torch (a finished campaign's
    --resume checks its data and answers at once)."""
    from autoal_dist.data import DataError, load_dataset

    try:
        data = load_dataset(cfg.dataset, cfg.data_root, cfg.seed)
    except DataError as e:
        if (cfg.dataset, cfg.data_root) != (meta["config"].get("dataset"),
                                            meta["config"].get("data_root")):
            raise
        raise DataError(f"{e}; if the data moved, give its new place with --dataset (or "
                        "--data-root): the same data, checked by fingerprint, is accepted") \
            from None
    if data.fingerprint() != meta["dataset_fingerprint"]:
        stored = meta["config"]
        if (cfg.dataset, cfg.data_root) != (stored.get("dataset"), stored.get("data_root")):
            where = cfg.dataset + (f" under --data-root {cfg.data_root}" if cfg.data_root else "")
            raise UsageError(f"--dataset: the data of {where} is not the campaign's (its "
                             "fingerprint differs from config.json's dataset_fingerprint); "
                             "the campaign needs the same data")
        raise UsageError(f"--dataset: the data of {cfg.dataset!r} changed since the campaign "
                         "started (fingerprint differs); the campaign needs the same data")
    return data


def _resume_config(args: argparse.Namespace, meta: dict) -> Config:
    """The stored config with the flags given on --resume (run/lifecycle.py says which may
    change)."""
    if args.config:
        raise UsageError("--config: a resumed campaign keeps its stored config; drop --config")
    overrides = _overrides(args)
    overrides.pop("out", None)
    return resume_config(meta, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    """A new campaign, or (--resume) the one in --out; a URI --out is staged (remote.py)."""
    if args.resume:
        if not args.out:
            raise UsageError("--resume needs --out DIR, the run directory to continue")
        with open_run(args.out, "resume", command="autoal-dist run --resume") as run:
            meta = run.meta()
            cfg = _resume_config(args, meta)
            _check_writable(run, "--out")
            mode = _mode(args, meta.get(MODE_KEY, DEFAULT_MODE))  # or switch it
            data = stored_data(cfg, meta)
            if (stop := _nothing_to_do(cfg, meta, run, mode)) is not None:
                return stop
            from autoal_dist.campaign import check_data

            run.check_data(data)  # the campaign's data first, then the config against it
            check_data(cfg, data)
            execution = _started(mode, cfg)
            return _run_campaign(args, cfg, data, meta, run, execution)
    from autoal_dist.campaign import prepare_data

    file_values = read_config_file(args.config) if args.config else {}
    cfg = load_config(file_values, _overrides(args))
    data = prepare_data(cfg)
    if cfg.out:
        from autoal_dist.run.lifecycle import check_out

        check_out(cfg.out)
    execution = _started(_mode(args, DEFAULT_MODE), cfg)
    with open_run(cfg.out, "new", name=cfg.name or default_name(cfg)) as run:
        meta = new_meta(cfg.to_dict(), data, __version__, execution.name)
        run.create(meta, data)
        return _run_campaign(args, cfg, data, meta, run, execution)


def _nothing_to_do(cfg: Config, meta: dict, run: Run, mode: str) -> int | None:
    """A resume that has nothing to run stops here, before torch is imported or Ray starts
    (exit 0): a finished campaign says so and prints its table (rebuilding the report if a
    crash left it older than metrics.parquet); with oracle files, a next round whose batch is
    not fully labeled says what to do. A config.json the flags changed (the mode, where the
    data lies) is still recorded."""
    complete = run.is_complete(cfg.rounds)
    awaiting = None if complete else awaiting_labels(run, cfg.oracle, cfg.rounds)
    if not complete and awaiting is None:
        return None
    updated = {**meta, "config": cfg.to_dict(), MODE_KEY: mode}
    if updated != meta:
        run.write_meta(updated)
    print(f"run directory: {run.location}", file=sys.stderr)
    if awaiting is not None:
        print(next_steps(run, awaiting))
        return 0
    from autoal_dist.report import format_table, write_report

    run.tidy()
    rows = run.metrics()
    print(write_report(run) if run.report_is_stale() else format_table(rows))
    print(f"\nthe campaign is complete: rounds 0..{cfg.rounds} are evaluated (final accuracy "
          f"{rows[-1]['accuracy']:.4f} with {rows[-1]['n_labeled']} labels); nothing to run. "
          f"To query more: autoal-dist run --resume --out {run.location} --rounds "
          f"{cfg.rounds + 1}")
    return 0


def _started(mode: str, cfg: Config) -> Execution:
    """The run's execution mode, started (Ray joined, requests checked): before anything in
    the run directory is written. Its line is the run's first."""
    from autoal_dist.execution import execution_for

    execution = execution_for(mode)
    print(execution.start(cfg), file=sys.stderr, flush=True)
    return execution


def _run_campaign(args: argparse.Namespace, cfg: Config, data: Dataset, meta: dict,
                  run: Run, execution: Execution) -> int:
    from autoal_dist.campaign import Campaign
    from autoal_dist.report import write_report

    run.ensure_pool(data)  # absent if a crash came right after config.json
    print(f"run directory: {run.location}", file=sys.stderr)
    meta["config"] = cfg.to_dict()  # a resume may raise rounds
    meta[MODE_KEY] = execution.name
    run.write_meta(meta)
    campaign = Campaign(cfg, run, data, execution=execution, show_progress=not args.quiet)
    try:
        campaign.run()
    except KeyboardInterrupt:
        print(f"autoal-dist: interrupted; every finished step is saved: continue with "
              f"autoal-dist run --resume --out {run.location}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        campaign.close()
    if campaign.awaiting is not None:
        print(next_steps(run, campaign.awaiting))
        return 0
    run.tidy()
    print(write_report(run))
    print(f"\noutputs: {run.location}/ (metrics.parquet, journal/, curves.png, summary.md)")
    return 0


def _mode(args: argparse.Namespace, kept: str) -> str:
    """`local` or `ray`: the flag given, else the mode the run was started with (`kept`)."""
    return "local" if args.local else "ray" if args.ray else kept


def cmd_report(args: argparse.Namespace) -> int:
    """One run directory: rebuild its report. Several (or --to/--baseline): compare them."""
    from autoal_dist.report import write_report
    from autoal_dist.run.layout import METRICS_FILE

    if len(args.dir) > 1 or args.to is not None or args.baseline is not None:
        return cmd_compare(args)
    (location,) = args.dir
    with open_run(location, "read", field="report") as run:
        if not run.path(METRICS_FILE).is_file():
            raise UsageError(f"report: {location} holds no {METRICS_FILE}")
        run.check()
        _check_writable(run, "report")
        print(write_report(run))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """`report DIR DIR ... [--to OUT] [--baseline S]`: runs side by side (compare.py), read
    only; OUT gets compare.md and compare.png."""
    from autoal_dist import compare
    from autoal_dist.remote import is_uri

    out = Path(args.to or compare.DEFAULT_OUT)
    if is_uri(str(out)):
        raise UsageError(f"--to: {args.to} is a URI; the comparison is written to a local "
                         "directory")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--to: {out} is a file, not a directory")
    with ExitStack() as opened:
        runs = []
        for location in dict.fromkeys(args.dir):  # a directory named twice counts once
            run = opened.enter_context(open_run(location, "read", field="report"))
            if not run.is_remote and _inside(out, run.dir):
                raise UsageError(f"--to: {out} lies in the run directory {location}; the "
                                 "runs are only read: choose a directory outside them")
            runs.append(compare.load_run(run))
        result = compare.compare(runs, args.baseline)
    written = compare.write(result, out)
    print("\n".join([compare.table(result), "", *compare.explanation(result), ""]))
    print("written: " + ", ".join(map(str, written)))
    return 0


def _inside(path: Path, directory: Path) -> bool:
    path, directory = path.resolve(), directory.resolve()
    return path == directory or directory in path.parents


def cmd_strategies(args: argparse.Namespace) -> int:
    """Every name `--strategy` takes: the registered strategies, then the round policies
    that combine the candidates (autoal, albl, vote). Imports no torch."""
    from autoal_dist.policies import POLICIES
    from autoal_dist.strategies import STRATEGIES

    def summary(doc: str | None) -> str:  # the docstring's first paragraph, on one line
        return " ".join(doc.strip().split("\n\n")[0].split()) if doc else ""

    rows: list[tuple[str, str, str, str]] = [
        (name, s.kind, ",".join(sorted(s.needs)) or "-", summary(s.doc))
        for name, s in sorted(STRATEGIES.items())]
    rows += [(name, "policy", "over --candidates", POLICIES.summaries[name])
             for name in sorted(POLICIES)]
    header = ("STRATEGY", "KIND", "NEEDS", "WHAT IT QUERIES")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[3])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autoal_dist.remote import is_uri

    if is_uri(args.to):
        raise UsageError(f"--to: {args.to} is a URI; the export is a local directory of files "
                         "for people (or Label Studio) to open")
    with open_run(args.dir, "read", field="export") as run:
        meta = run.meta("export")
        run.check()
        moved = {k: v for k, v in (("dataset", args.dataset), ("data_root", args.data_root))
                 if v is not None}

        def load_data():  # a moved dataset: the same data (fingerprint) at its new place
            return stored_data(load_config(meta["config"], moved), meta)

        print(export_batch(run, args.round, load_data, Path(args.to),
                           Path(args.ls_root) if args.ls_root else None,
                           importable=meta["config"].get("oracle") == "files"))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Read, merge and write the labels store under the run lock: two imports (or an import
    and a running campaign) never interleave, so no label is silently lost."""
    with open_run(args.dir, "resume", command="autoal-dist import", field="import") as run:
        meta = run.meta("import")
        oracle = meta["config"].get("oracle")
        if oracle != "files":
            raise UsageError(f"import: {args.dir} runs with oracle {oracle!r}, which takes labels "
                             "from the dataset; start the campaign with --oracle files to label "
                             "with people")
        _check_writable(run, "import")
        print(import_labels(run, Path(args.labels), meta["num_classes"], args.relabel))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from autoal_dist.sweep.runner import run_tune

    return run_tune(Path(args.config) if args.config else None, args.out, args.num_samples,
                    args.quiet, resume=args.resume)


COMMANDS = {"run": cmd_run, "report": cmd_report, "strategies": cmd_strategies,
            "export": cmd_export, "import": cmd_import, "tune": cmd_tune, "pool": cmd_pool}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "bench":  # the rest of the line belongs to the script
            return cmd_bench(argv[1:])
        args = parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"autoal-dist: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("autoal-dist: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:  # the filesystem refused: read-only, disk full, not a directory...
        from autoal_dist.store import WriteError

        if e.errno not in FS_ERRNOS and not isinstance(e, WriteError):
            raise
        print(f"autoal-dist: error: {_os_error(e)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError as e:
        print(f"autoal-dist: error: out of memory: the dataset or settings need more memory than "
              f"this machine has ({_one_line(e) or 'MemoryError'}); choose a smaller size",
              file=sys.stderr)
        return EXIT_USAGE
    except UnicodeDecodeError as e:
        name = _decoded_file(e.__traceback__)
        print(f"autoal-dist: error: {name + ' is' if name else 'a file read is'} not UTF-8 text "
              f"(byte {e.start}: {e.reason}); save it as UTF-8", file=sys.stderr)
        return EXIT_USAGE


# errnos of a filesystem refusing a path: one line naming it, not a traceback
FS_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
             errno.EISDIR, errno.ENOENT, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG,
             errno.ENOTEMPTY, errno.ELOOP}
_OS_HINTS = {errno.ENOSPC: "the disk is full: free space and rerun (the run directory keeps "
                           "its last complete state; --resume continues from it)",
             errno.EDQUOT: "the disk quota is exceeded: free space and rerun",
             errno.EROFS: "the filesystem is read-only",
             errno.EACCES: "no permission", errno.EPERM: "not permitted"}


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def _os_error(e: OSError) -> str:
    what = _OS_HINTS.get(e.errno or 0) or e.strerror or _one_line(e) or type(e).__name__
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    return f"{' -> '.join(names)}: {what}" if names else what


def _decoded_file(tb) -> str | None:
    """The file a UnicodeDecodeError came from, if a pathlib or open() frame shows it."""
    name = None
    while tb is not None:
        local = tb.tb_frame.f_locals
        for key in ("self", "path", "file", "filename"):
            v = local.get(key)
            if isinstance(v, Path) or (key != "self" and isinstance(v, str) and os.sep in v):
                name = str(v)
                break
        tb = tb.tb_next
    return name
