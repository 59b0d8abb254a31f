"""How fast the tool answers: commands that need neither torch nor Ray, a finished campaign's
--resume, and where a Ray-mode run's first seconds go.

Each command runs as a user runs it (a fresh process of the installed `autoal-dist`), `--repeat`
times; the table gives the median wall time. The Ray rows time `ray.init` of a private local
Ray with and without the dashboard, and a whole `run --ray --rounds 0` (start-up, one training
of the initial set, shutdown) as the CLI runs it.

    python benchmarks/startup.py            # writes benchmarks/results/startup.md
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HelpFormatter, command, load_average, machine, write_result

CLI = str(Path(sys.executable).with_name("autoal-dist"))
RAY_INIT = ("import time, ray; t = time.perf_counter(); "
            "ray.init(address='local', include_dashboard={dash}, log_to_driver=False, "
            "logging_level='ERROR'); t1 = time.perf_counter(); ray.shutdown(); "
            "print(f'{{t1 - t:.3f}} {{time.perf_counter() - t1:.3f}}')")


def timed(argv: list[str], repeat: int, env: dict | None = None) -> float:
    """Median wall seconds of `argv` in a fresh process (it must exit 0)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ray_init(dashboard: bool, repeat: int) -> tuple[float, float]:
    """Median (init s, shutdown s) of a private local Ray."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", RAY_INIT.format(dash=dashboard)],
                             check=True, capture_output=True, text=True).stdout.split()
        runs.append((float(out[-2]), float(out[-1])))
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))


def timeline(argv: list[str], env: dict) -> list[tuple[float, str]]:
    """(seconds since start, stderr line) of one run, and its exit."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                         env=env)
    assert p.stderr is not None
    lines = [(time.perf_counter() - t, line.strip()) for line in p.stderr if line.strip()]
    if p.wait() != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n" + "\n".join(x for _, x in lines[-5:]))
    return [*lines, (time.perf_counter() - t, "(exit)")]


def phases(lines: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """A Ray-mode run's phases from its stderr: up to the `ray:` line (Python, imports, config,
    data, ray.init), training round 0, the rest of the round, the report and shutdown."""
    def at(prefix: str) -> float:
        return next(t for t, line in lines if line.startswith(prefix))

    ray, trained, logged, end = (at("ray:"), at("round 0: trained"), at("round   0/"),
                                 lines[-1][0])
    return [("start: Python, imports (torch), config, data, ray.init", ray),
            ("round 0: train on Ray Train (local mode), scorer actors", trained - ray),
            ("round 0: evaluate, write metrics", logged - trained),
            ("report (curves.png, summary.md), Ray shutdown, exit", end - logged)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--repeat", type=int, default=3, help="fresh processes per command")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="startup-"))
    env = {**os.environ, "RAY_ADDRESS": ""}  # a private local Ray, as on a laptop
    print(machine() + f"command: {command()}", flush=True)
    before = load_average()
    pool, done = work / "pool", work / "done"
    subprocess.run([CLI, "pool", "write", "--dataset", "digits", "--to", str(pool)], check=True,
                   capture_output=True)
    subprocess.run([CLI, "run", "--local", "--dataset", "digits", "--rounds", "1", "--epochs",
                    "2", "--out", str(done), "--quiet"], check=True, capture_output=True)
    rows = [(f"autoal-dist {' '.join(a)}", timed([CLI, *a], args.repeat)) for a in (
        ["--help"], ["strategies"], ["bench", "--list"], ["pool", "info", str(pool)],
        ["report", str(done)], ["run", "--resume", "--out", str(done)])]
    dash_on, dash_off = ray_init(True, args.repeat), ray_init(False, args.repeat)
    steps = phases(timeline([CLI, "run", "--ray", "--dataset", "digits", "--rounds", "0",
                             "--epochs", "1", "--out", str(work / "ray-run")], env))
    ray_run = sum(s for _, s in steps)
    shutil.rmtree(work, ignore_errors=True)
    lines = ["| command | median s |", "|---|---:|",
             *[f"| `{name}` | {s:.2f} |" for name, s in rows]]
    ray = ["| private local Ray | ray.init s | ray.shutdown s |", "|---|---:|---:|",
           f"| with the dashboard (Ray's default with ray[default]) | {dash_on[0]:.2f} | "
           f"{dash_on[1]:.2f} |",
           f"| without the dashboard (`autoal-dist run`) | {dash_off[0]:.2f} | "
           f"{dash_off[1]:.2f} |"]
    text = "\n".join([
        "# Start-up: how fast the tool answers", "", f"Command: `{command()}`", "",
        machine().rstrip(), f"- load average (1/5/15 min) before: {before}, after: "
        f"{load_average()}", "",
        f"Median of {args.repeat} fresh processes each (`autoal-dist` of this venv); the "
        "finished campaign is a 1-round `--local` digits run, the pool a digits stored pool.",
        "", *lines, "", "## Ray mode", "", *ray, "",
        "Where a whole `autoal-dist run --ray --dataset digits --rounds 0 --epochs 1` spends its "
        f"**{ray_run:.1f} s** (one run, from its stderr lines):", "",
        "| phase | s |", "|---|---:|", *[f"| {name} | {s:.2f} |" for name, s in steps], "",
        "The dashboard is what a campaign does not use: `autoal-dist run` starts its private Ray "
        "without it (a Tune sweep keeps it: Train's placement-group cleaner asks its state API "
        "when ASHA stops a trial). The rest is torch's import (~2-3 s, in the driver and in each "
        "scorer actor), Ray Train's controller, and Ray's shutdown.", ""])
    print("\n" + text)
    print(f"wrote {write_result('startup.md', text)}")


if __name__ == "__main__":
    main()
