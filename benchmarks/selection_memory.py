"""Peak memory and time of the set-selecting strategies (kcenter, kmeans, badge).

Each (strategy, N) case runs in a fresh subprocess. Memory is resident memory
(RSS, so BLAS workspaces count too): the subprocess builds its inputs, resets
the kernel's peak-RSS mark (/proc/self/clear_refs; falls back to ru_maxrss),
runs the selection, and reports peak RSS minus the RSS just before selecting.

    python benchmarks/selection_memory.py                      # N = 10k, 50k, 100k
    python benchmarks/selection_memory.py --quick              # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies import select
from autoal_dist.strategies.kmeans import KMeansShard, lloyd, nearest_distinct
from autoal_dist.strategies.sharded import greedy_select
from common import RESULTS as RESULTS_DIR, command, machine

STRATEGIES = ("kcenter", "kmeans", "badge")
RESULTS = RESULTS_DIR / "selection_memory.md"
MiB = 1024 * 1024


def make_inputs(n: int, c: int, d: int, m: int) -> PoolOutputs:
    """Random float32 softmax probabilities and embeddings, built without float64 temporaries."""
    rng = np.random.default_rng(0)
    probs = rng.standard_normal((n, c), dtype=np.float32)
    probs *= 3.0
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=1, keepdims=True)
    return PoolOutputs(
        ids=np.arange(n, dtype=np.int64),
        probs=probs,
        embeddings=rng.standard_normal((n, d), dtype=np.float32),
        labeled_embeddings=rng.standard_normal((m, d), dtype=np.float32) if m else None,
    )


def rss_bytes(field: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak() -> bool:
    """Reset the peak-RSS mark (Linux clear_refs 5); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_kmeans(out: PoolOutputs, budget: int, iters: int) -> dict:
    """The kmeans driver phase by phase, so seeding and Lloyd costs show separately."""
    shards = [KMeansShard(out)]
    t0 = time.perf_counter()
    seeds = greedy_select(shards, budget, seed=0)
    t1 = time.perf_counter()
    centers, changes = lloyd(shards, np.stack([c.payload[0] for c in seeds]), iters)
    t2 = time.perf_counter()
    nearest_distinct(shards, centers)
    t3 = time.perf_counter()
    return {"note": f"seed {t1 - t0:.1f}s, Lloyd {len(changes)} passes {t2 - t1:.1f}s "
                    f"(last changed {changes[-1]}), pick {t3 - t2:.1f}s"}


def run_case(args: argparse.Namespace) -> dict:
    """One measurement, in this (fresh) process."""
    labeled = args.labeled if args.case == "kcenter" else 0
    out = make_inputs(args.case_n, args.classes, args.dim, labeled)
    base = rss_bytes("VmRSS")
    exact_peak = reset_peak()
    t0 = time.perf_counter()
    if args.case == "kmeans":
        info = run_kmeans(out, args.budget, args.kmeans_iters)
    else:
        select(args.case, out, args.budget, seed=0)
        info = {"note": ""}
    seconds = time.perf_counter() - t0
    if exact_peak:
        peak = rss_bytes("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"strategy": args.case, "n": args.case_n, "seconds": seconds,
            "inputs_mib": (out.probs.nbytes + out.embeddings.nbytes) / MiB,
            "peak_above_inputs_mib": (peak - base) / MiB,
            "peak_method": "VmHWM" if exact_peak else "ru_maxrss", **info}


def spawn(args: argparse.Namespace, strategy: str, n: int) -> dict:
    """Run one case in a fresh interpreter with the requested BLAS thread count."""
    cmd = [sys.executable, __file__, "--case", strategy, "--case-n", str(n),
           "--budget", str(args.budget), "--classes", str(args.classes), "--dim", str(args.dim),
           "--labeled", str(args.labeled), "--kmeans-iters", str(args.kmeans_iters)]
    threads = str(args.threads)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads}
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace, rows: list[dict]) -> str:
    head = (f"# Set-selection memory and time\n\n"
            f"Command: {command()}\n\n"
            f"{machine()}"
            f"- Inputs: C={args.classes}, D={args.dim}, b={args.budget}, float32 "
            f"softmax(3*N(0,1)) probs, N(0,1) embeddings; kcenter also gets {args.labeled} "
            f"labeled embeddings; kmeans max_iter={args.kmeans_iters}.\n"
            f"- Memory: peak RSS during selection minus RSS after the inputs were built, each "
            f"case in a fresh subprocess ({rows[0]['peak_method'] if rows else '-'}); "
            f"{args.threads} BLAS thread(s) per case.\n\n"
            "| strategy | N | inputs MiB | peak above inputs MiB | seconds | notes |\n"
            "|---|---:|---:|---:|---:|---|\n")
    body = "".join(f"| {r['strategy']} | {r['n']} | {r['inputs_mib']:.0f} | "
                   f"{r['peak_above_inputs_mib']:.0f} | {r['seconds']:.1f} | {r['note']} |\n"
                   for r in rows)
    return head + body


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,50000,100000", help="comma-separated pool sizes N")
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--labeled", type=int, default=1000, help="labeled embeddings for kcenter")
    p.add_argument("--kmeans-iters", type=int, default=20, help="Lloyd max passes")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads per case (1 = what one Ray actor with num_cpus=1 gets)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    p.add_argument("--out", type=Path, help=f"results file (default {RESULTS}; --quick: none)")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--case-n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.sizes, args.budget, args.classes, args.dim, args.labeled = "2000,5000", 50, 10, 32, 100
    return args


def main() -> None:
    args = parse()
    if args.case:
        print(json.dumps(run_case(args)))
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for strategy in args.strategies.split(","):
            rows.append(spawn(args, strategy, n))
            r = rows[-1]
            print(f"{strategy:8s} N={n:>7d}  +{r['peak_above_inputs_mib']:7.0f} MiB  "
                  f"{r['seconds']:7.1f} s  {r['note']}", flush=True)
    text = report(args, rows)
    print("\n" + text)
    out = args.out or (None if args.quick else RESULTS)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


if __name__ == "__main__":
    main()
