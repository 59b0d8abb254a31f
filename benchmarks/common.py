"""Shared by the benchmark scripts: machine description and result files."""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _threadpools() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return threadpool_info()


def machine() -> str:
    """CPU, cores, RAM, Python/numpy/BLAS/torch/Ray versions (and GPU) as markdown bullets."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                if line.startswith("model name")), platform.processor())
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    blas = ", ".join(f"{i['internal_api']} {i['version']}" for i in _threadpools())
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [f"- CPU: {cpu}, {os.cpu_count()} cores; RAM {ram:.0f} GiB; load average when "
             f"written (1/5/15 min): {load} (other work on a shared machine slows runs)",
             f"- Python {platform.python_version()}, numpy {np.__version__}, "
             f"BLAS: {blas or 'unknown'}"]
    try:
        import ray
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        lines.append(f"- torch {torch.__version__}, Ray {ray.__version__}, GPU: {gpu}")
    except ImportError:
        pass
    return "\n".join(lines) + "\n"


def load_average() -> str:
    """1/5/15-minute load averages: on a shared machine, what else competed for the cores."""
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def command() -> str:
    return f"`python {shlex.join(sys.argv)}`"


def write_result(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(text, encoding="utf-8")
    return path


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and each flag's default in its help (flags whose
    default is None say what they default to themselves)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


PHASES = ("train_s", "eval_s", "score_s", "search_s", "select_s")


@contextmanager
def opened_campaign(overrides: dict, run_dir: Path) -> Iterator:
    """An in-process Campaign (LocalScorer, in-process training) for config overrides:
    benchmarks time the algorithm, not Ray's startup, unless they measure Ray itself.

    The run directory is opened as `autoal-dist run` opens one (`open_run`: the lock, the
    checks): a directory that holds the campaign resumes it exactly (a benchmark restarted
    with the same --workdir only runs what is missing), one that holds another campaign is
    refused (the stored config differs).
    """
    from autoal_dist import __version__, remote
    from autoal_dist.campaign import Campaign, prepare_data
    from autoal_dist.registry import load_config
    from autoal_dist.run import new_meta, open_run, resume_config

    how = "new" if remote.is_empty(str(run_dir)) else "resume"
    with open_run(str(run_dir), how, command="autoal-dist bench") as run:
        if how == "new":
            cfg = load_config({}, overrides)
            data = prepare_data(cfg)
            run.create(new_meta(cfg.to_dict(), data, __version__, "local"), data)
        else:
            cfg = resume_config(run.meta(), overrides)
            data = prepare_data(cfg)
        camp = Campaign(cfg, run, data, show_progress=False)
        try:
            yield camp
        finally:
            camp.close()


def run_campaign(overrides: dict, run_dir: Path) -> list[dict]:
    """One in-process campaign's metric rows; the rows keep each phase's seconds (PHASES)
    from the run that measured them."""
    with opened_campaign(overrides, run_dir) as camp:
        return camp.run()


def mean_std(values) -> str:
    """`mean ± std` over seeds (sample std, ddof=1; 0 for one seed)."""
    v = np.asarray(values, float)
    return f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}"


def drop_from_page_cache(pool: Path) -> None:
    """Evict the pool's files from the page cache (only those pages; nothing else)."""
    for f in pool.rglob("*.parquet"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def journal_digest(run: Path) -> str:
    """sha256 over the journal's files (name and bytes), in name order."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted((run / "journal").glob("*.parquet")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()
