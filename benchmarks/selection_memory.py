"""Time and peak memory of the set-selecting strategies (kcenter, kmeans, badge,
typiclust, probcover), against the hardware floor measured in the same process, and
over Ray actors.

Each case runs in a fresh subprocess. The floor is the arithmetic a strategy cannot
avoid, timed as single library calls on the float32 inputs with the same threads:
one GEMV over the embeddings E [N, D] per greedy step (BADGE: and one over the
probabilities [N, C], the two timed one after the other, as a step reads them), one
GEMM E @ [D, k] per Lloyd pass and for the final labels or pick (and, for kcenter,
the GEMM against the labeled set); ProbCover's are E against its reference sample R
and R against itself (and R's k-means).
Each ratio is given on wall time and on the process's CPU time (on a shared
machine, waiting for a core inflates the wall time of a long run more than that of
the floor's short calls). Memory is resident memory (RSS, so BLAS workspaces count
too): peak RSS during selection minus RSS just before it (/proc/self/clear_refs
resets the peak; falls back to ru_maxrss).

Ray rows (largest N only) run the same selection on K scorer actors (one CPU
each) right after the single-process run with K threads, in the same process,
so their ratio is measured side by side, and check that the ids are identical.

    python benchmarks/selection_memory.py                      # N = 10k, 50k, 100k; Ray 1, 2
    python benchmarks/selection_memory.py --device cuda        # GPU rows (a GPU node)
    python benchmarks/selection_memory.py --quick              # smoke run
    python benchmarks/selection_memory.py --sizes 10000 --gemv-curve  # + GEMV(E) speed by N

A floor is a best case: its GEMV runs back to back on one matrix, which stays in the
CPU's last-level cache wherever E fits there, while a greedy step also reads its rows'
state between GEMVs. `--gemv-curve` shows where that cache edge lies on the machine at
hand (GEMV(E) time and bandwidth for N around the smallest size).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies import STRATEGIES, probcover, typiclust
from autoal_dist.strategies.kmeans import converged, lloyd, nearest_distinct
from autoal_dist.strategies.sharded import greedy_select
from common import RESULTS as RESULTS_DIR
from common import HelpFormatter, command, load_average, machine

STRATEGIES_RUN = ("kcenter", "kmeans", "badge", "typiclust", "probcover")
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


def median_time(fn: Callable[[], Any], reps: int, sync: Callable[[], None]) -> tuple[float, float]:
    """Median (wall, CPU) seconds of `fn` over `reps` calls, after one warm-up call."""
    fn()
    sync()
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def ref_rows(n: int) -> int:
    """Rows of TypiClust's and ProbCover's reference sample R."""
    return min(typiclust.REF_MAX, n)


def clusters(strategy: str, n: int, budget: int, labeled: int) -> int:
    """The k of the case's Lloyd passes: b (kmeans), K (typiclust)."""
    if strategy == "typiclust":
        return min(labeled + budget, typiclust.MAX_CLUSTERS, n)
    return budget


def floors(out: PoolOutputs, strategy: str, k: int, classes: int,
           device: str) -> dict[str, tuple[float, float]]:
    """The float32 single calls the case's floor is made of, (wall, CPU) each: one GEMV over
    E and over P (alone, and one after the other), one GEMM E @ [D, k]; ProbCover: E @ R^T,
    R @ R^T, and R's k-means (a GEMV over R, a GEMM R @ [D, classes])."""
    e, p = out.embeddings, out.probs
    if device == "cpu":
        sync, put = (lambda: None), (lambda a: a)
    else:
        import torch

        sync, put = torch.cuda.synchronize, (lambda a: torch.from_numpy(a).to(device))
    cols = put(np.ascontiguousarray(e[:k].T))
    e, p = put(e), put(p)
    ev, pv = e[3] * 1, p[3] * 1
    f = {"gemv_e": median_time(lambda: e @ ev, 15, sync),
         "gemv_p": median_time(lambda: p @ pv, 15, sync),
         # a BADGE step reads both: timed as a pair, they share the cache as its steps do
         "gemv_ep": median_time(lambda: (e @ ev, p @ pv), 15, sync),
         "gemm": median_time(lambda: e @ cols, 3, sync)}
    if strategy == "probcover":
        r = e[: ref_rows(len(out))]
        rt = put(np.ascontiguousarray(out.embeddings[: len(r)].T))
        rc = put(np.ascontiguousarray(out.embeddings[:classes].T))
        f |= {"gemm_r": median_time(lambda: e @ rt, 3, sync),
              "gemm_rr": median_time(lambda: r @ rt, 3, sync),
              "gemv_r": median_time(lambda: r @ ev, 15, sync),
              "gemm_rc": median_time(lambda: r @ rc, 5, sync)}
    return f


def gemv_curve(n: int, dim: int, threads: int) -> str:
    """GEMV(E) time and bandwidth for pools around n rows: where E stops fitting the
    last-level cache, the GEMV slows to memory speed."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    lines = ["| N | E MiB | GEMV(E) ms | GB/s |", "|---:|---:|---:|---:|"]
    with threadpool_limits(limits=threads, user_api="blas"):
        for f in (0.4, 0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.6, 2.0):
            rows = int(n * f)
            e = rng.standard_normal((rows, dim), dtype=np.float32)
            ev = e[3] * 1
            t = median_time(lambda e=e, ev=ev: e @ ev, 15, lambda: None)[0]
            lines.append(f"| {rows} | {e.nbytes / MiB:.1f} | {t * 1e3:.3f} | "
                         f"{e.nbytes / t / 1e9:.1f} |")
    return "\n".join(lines) + "\n"


def floor_of(strategy: str, f: dict[str, float], row: dict, budget: int, labeled: int,
             classes: int) -> float:
    """The strategy's unavoidable products, from one clock's floors `f`."""
    if strategy == "badge":
        return budget * f["gemv_ep"]
    if strategy == "kcenter":
        return budget * f["gemv_e"] + f["gemm"] * labeled / budget
    if strategy == "probcover":  # counts: E x R; delta: R x R and R's k-means
        return (f["gemm_r"] + f["gemm_rr"] + classes * f["gemv_r"]
                + row["passes"] * f["gemm_rc"])
    # kmeans, typiclust: k seeding steps, each Lloyd pass and the final labels or pick
    return row["k"] * f["gemv_e"] + (row["passes"] + 1) * f["gemm"]


class LloydPasses:
    """Counts the passes of the `lloyd` runs a low-budget driver makes (its floor)."""

    def __init__(self) -> None:
        self.passes = 0

    def __enter__(self) -> LloydPasses:
        def counted(*args: Any, **kw: Any) -> Any:
            centers, changes = lloyd(*args, **kw)
            self.passes += len(changes)
            return centers, changes

        self.saved = typiclust.lloyd, probcover.lloyd
        typiclust.lloyd = probcover.lloyd = counted
        return self

    def __exit__(self, *exc: Any) -> None:
        typiclust.lloyd, probcover.lloyd = self.saved


def run(name: str, make_shards: Callable[[], list], budget: int) -> tuple[np.ndarray, dict]:
    """One selection, phase by phase for kmeans (seeding, Lloyd, pick)."""
    t0, c0 = time.perf_counter(), time.process_time()
    shards = make_shards()
    if name != "kmeans":
        with LloydPasses() as lloyd_passes:
            ids = STRATEGIES[name].drive(shards, budget, 0)
        return ids, {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                     "passes": lloyd_passes.passes}
    seeds = greedy_select(shards, budget, seed=0)
    t1, c1 = time.perf_counter(), time.process_time()
    centers, changes = lloyd(shards, np.stack([c.payload[0] for c in seeds]))
    t2, c2 = time.perf_counter(), time.process_time()
    ids = nearest_distinct(shards, centers)
    t3, c3 = time.perf_counter(), time.process_time()
    return ids, {"seconds": t3 - t0, "cpu_s": c3 - c0, "seed_s": t1 - t0, "seed_cpu": c1 - c0,
                 "lloyd_s": t2 - t1, "lloyd_cpu": c2 - c1, "pick_s": t3 - t2,
                 "pick_cpu": c3 - c2, "passes": len(changes), "last_changed": changes[-1]}


def local_case(args: argparse.Namespace, out: PoolOutputs) -> dict:
    """Single process: time, memory, and the floor measured around it."""
    strategy = STRATEGIES[args.case]
    labeled = args.labeled if args.case == "kcenter" else 0
    k = clusters(args.case, args.case_n, args.budget, labeled)
    f_before = floors(out, args.case, k, args.classes, args.device)
    base = rss_bytes("VmRSS")
    exact_peak = reset_peak()
    _, row = run(args.case, lambda: [strategy.make_shard(out, args.block, 0, device=args.device)],
                 args.budget)
    peak = rss_bytes("VmHWM") if exact_peak else (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    f_after = floors(out, args.case, k, args.classes, args.device)
    f = {key: (f_before[key][0] + f_after[key][0]) / 2 for key in f_before}
    f_cpu = {key: (f_before[key][1] + f_after[key][1]) / 2 for key in f_before}
    row["k"] = k
    if args.case == "kmeans":
        row["converged"] = converged([row.pop("last_changed")], args.case_n)
    return {**row, "peak_above_inputs_mib": (peak - base) / MiB,
            "peak_method": "VmHWM" if exact_peak else "ru_maxrss",
            "floor_s": floor_of(args.case, f, row, args.budget, labeled, args.classes),
            "floor_cpu": floor_of(args.case, f_cpu, row, args.budget, labeled, args.classes),
            **f, **{key + "_cpu": v for key, v in f_cpu.items()}}


def ray_case(args: argparse.Namespace, out: PoolOutputs) -> dict:
    """K scorer actors vs one process with K threads, back to back; ids must match."""
    import ray

    from autoal_dist.scoring.ray_scorer import RayScorer

    ray.init(num_cpus=args.actors, include_dashboard=False, log_to_driver=False,
             object_store_memory=2 * 1024**3)
    os.environ["OMP_NUM_THREADS"] = str(args.actors)  # this process only: Ray has started
    strategy, lab = STRATEGIES[args.case], out.labeled_embeddings
    single_ids, single = run(
        args.case, lambda: [strategy.make_shard(out, args.block, 0, device=args.device)],
        args.budget)
    scorer = RayScorer(np.zeros((1, 1), np.float32), None, None, shards=args.actors,
                       batch_size=args.block)
    scorer.load_outputs(out)
    ray_ids, ray_row = run(args.case, lambda: scorer.set_shards(args.case, lab), args.budget)
    scorer.close()
    ray.shutdown()
    return {"single_s": single["seconds"], "seconds": ray_row["seconds"],
            "same_ids": bool(np.array_equal(single_ids, ray_ids))}


def run_case(args: argparse.Namespace) -> dict:
    """One measurement, in this (fresh) process."""
    labeled = args.labeled if args.case == "kcenter" else 0
    out = make_inputs(args.case_n, args.classes, args.dim, labeled)
    row = ray_case(args, out) if args.actors else local_case(args, out)
    return {"strategy": args.case, "n": args.case_n, "actors": args.actors,
            "inputs_mib": (out.probs.nbytes + out.embeddings.nbytes) / MiB, **row}


def spawn(args: argparse.Namespace, strategy: str, n: int, actors: int = 0) -> dict:
    """Run one case in a fresh interpreter; a local case gets `--threads` BLAS threads."""
    cmd = [sys.executable, __file__, "--case", strategy, "--case-n", str(n), "--actors",
           str(actors), "--budget", str(args.budget), "--classes", str(args.classes),
           "--dim", str(args.dim), "--labeled", str(args.labeled), "--block", str(args.block),
           "--device", args.device]
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
        if not actors:  # a Ray case sets its own: actors get one CPU each
            env[var] = str(args.threads)
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def kmeans_note(r: dict) -> str:
    per_pass = r["lloyd_cpu"] / r["passes"]
    return (f"seed {r['seed_s']:.1f}s = {r['seed_cpu'] / (r['k'] * r['gemv_e_cpu']):.2f}x b "
            f"GEMV; Lloyd {r['passes']} passes "
            f"({'converged' if r['converged'] else 'not converged'}), "
            f"{per_pass / r['gemm_cpu']:.2f}x GEMM a pass; pick {r['pick_s']:.1f}s = "
            f"{r['pick_cpu'] / r['gemm_cpu']:.1f}x GEMM (CPU time)")


def note(r: dict, budget: int) -> str:
    """kmeans: its phases; BADGE: its ratios to the GEMVs timed alone too; the low-budget
    strategies: the sizes their floors count."""
    if r["strategy"] == "kmeans":
        return kmeans_note(r)
    if r["strategy"] == "badge":
        alone = budget * (r["gemv_e_cpu"] + r["gemv_p_cpu"])
        return (f"pair {r['gemv_ep'] * 1e3:.1f} ms; {r['cpu_s'] / alone:.2f}x b x (GEMV(E) + "
                f"GEMV(P)) each timed alone, {r['cpu_s'] / (budget * r['gemv_e_cpu']):.2f}x "
                f"b GEMV(E) alone (CPU time)")
    if r["strategy"] == "typiclust":
        return f"K = {r['k']} clusters, {r['passes']} Lloyd passes"
    if r["strategy"] == "probcover":
        return f"GEMM(E, R) {r['gemm_r']:.2f}s, GEMM(R, R) {r['gemm_rr']:.2f}s; " \
               f"R's k-means {r['passes']} passes"
    return ""


def report(args: argparse.Namespace, rows: list[dict], loads: tuple[str, str]) -> str:
    local = [r for r in rows if not r["actors"]]
    remote = [r for r in rows if r["actors"]]
    head = (f"# Set-selection time and memory against the hardware floor\n\n"
            f"Command: {command()}\n\n"
            f"{machine()}"
            f"- Load average (1/5/15 min) at start: {loads[0]}; at end: {loads[1]} (a 2-core "
            f"machine shared with other benchmarks: absolute seconds move with load, the ratios "
            f"below are measured side by side in one process and move much less).\n"
            f"- Inputs: C={args.classes}, D={args.dim}, b={args.budget}, float32 "
            f"softmax(3*N(0,1)) probs, N(0,1) embeddings; kcenter also gets {args.labeled} "
            f"labeled embeddings; block {args.block} rows (the scorers' batch size); device "
            f"{args.device}; {args.threads} thread(s) per single-process case.\n"
            f"- Floor: float32 single calls in the same process (mean of before and after the "
            f"selection, each a median): kcenter b GEMV(E) + GEMM(E, labeled); BADGE b x "
            f"(GEMV(E) then GEMV(P), timed as a pair: a step reads both, so the two matrices "
            f"share the cache as in its steps); kmeans b GEMV(E) (seeding) + one GEMM(E, b) "
            f"per Lloyd pass and one for the pick; typiclust K GEMV(E) + one GEMM(E, K) per "
            f"Lloyd pass and one for the final labels (its typicality, each row against its "
            f"own cluster's rows of R, is not counted); probcover GEMM(E, R) + GEMM(R, R) + "
            f"R's k-means (C GEMV(R) + a GEMM(R, C) per pass), |R| = min(4096, N). x floor: "
            f"seconds / floor on wall time, and on the process's CPU time (both clocks read "
            f"around the same calls).\n"
            f"- Memory: peak RSS during selection minus RSS after the inputs were built, each "
            f"case in a fresh subprocess ({local[0]['peak_method'] if local else '-'}).\n\n"
            "| strategy | N | inputs MiB | peak above inputs MiB | seconds | floor s "
            "| x floor (wall) | x floor (CPU) | GEMV(E) ms | GEMV(P) ms | GEMM s | notes |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    body = ""
    for r in local:
        body += (f"| {r['strategy']} | {r['n']} | {r['inputs_mib']:.0f} | "
                 f"{r['peak_above_inputs_mib']:.0f} | {r['seconds']:.1f} | {r['floor_s']:.1f} | "
                 f"{r['seconds'] / r['floor_s']:.2f} | {r['cpu_s'] / r['floor_cpu']:.2f} | "
                 f"{r['gemv_e'] * 1e3:.1f} | {r['gemv_p'] * 1e3:.1f} | {r['gemm']:.2f} | "
                 f"{note(r, args.budget)} |\n")
    if remote:
        body += ("\nRay scorer actors (one CPU each) against one process with as many threads, "
                 "run back to back in one process:\n\n"
                 "| strategy | N | actors | single-process s | Ray s | Ray / single | same ids |\n"
                 "|---|---:|---:|---:|---:|---:|---|\n")
        body += "".join(f"| {r['strategy']} | {r['n']} | {r['actors']} | {r['single_s']:.1f} | "
                        f"{r['seconds']:.1f} | {r['seconds'] / r['single_s']:.2f} | "
                        f"{'yes' if r['same_ids'] else 'NO'} |\n" for r in remote)
    return head + body


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--sizes", default="10000,50000,100000", help="comma-separated pool sizes N")
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--labeled", type=int, default=1000, help="labeled embeddings for kcenter")
    p.add_argument("--block", type=int, default=256, help="alignment unit (scorer batch size)")
    p.add_argument("--strategies", default=",".join(STRATEGIES_RUN))
    p.add_argument("--threads", type=int, default=1,
                   help="threads per single-process case (1 = one Ray actor with num_cpus=1)")
    p.add_argument("--ray", default="1,2", help="Ray actor counts at the largest N ('' = none)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU node")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    p.add_argument("--gemv-curve", action="store_true",
                   help="also time GEMV(E) alone for N around the smallest size (the cache edge)")
    p.add_argument("--out", type=Path, help=f"results file (default {RESULTS}; --quick: none)")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--case-n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--actors", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.sizes, args.budget, args.classes, args.dim, args.labeled = "2000,5000", 50, 10, 32, 100
    return args


def main() -> None:
    args = parse()
    if args.case:
        print(json.dumps(run_case(args)))
        return
    start_load = load_average()
    sizes = [int(s) for s in args.sizes.split(",")]
    cases = [(s, n, 0) for n in sizes for s in args.strategies.split(",")]
    cases += [(s, sizes[-1], int(k)) for s in args.strategies.split(",")
              for k in filter(None, args.ray.split(","))]
    rows = []
    for strategy, n, actors in cases:
        rows.append(spawn(args, strategy, n, actors))
        r = rows[-1]
        detail = (f"x{r['seconds'] / r['single_s']:.2f} vs single, same ids {r['same_ids']}"
                  if actors else
                  f"floor {r['floor_s']:.1f} s  x{r['seconds'] / r['floor_s']:.2f} wall  "
                  f"x{r['cpu_s'] / r['floor_cpu']:.2f} CPU  +{r['peak_above_inputs_mib']:.0f} MiB")
        print(f"{strategy:8s} N={n:>7d} actors={actors}  {r['seconds']:7.1f} s  {detail}",
              flush=True)
    text = report(args, rows, (start_load, load_average()))
    if args.gemv_curve:
        text += (f"\nGEMV(E) alone by pool size (float32, D = {args.dim}, {args.threads} "
                 f"thread(s), median of 15 back to back): where E outgrows the last-level "
                 f"cache\n\n" + gemv_curve(sizes[0], args.dim, args.threads))
    print("\n" + text)
    out = args.out or (None if args.quick else RESULTS)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


if __name__ == "__main__":
    main()
