"""Pools larger than one machine (#16): memory and throughput of a round on a stored pool.

A synthetic pool of the TinyImageNet shape (64x64x3 uint8, 200 classes; random pixels:
content does not change what is read or held) is written with `write_pool` at each size
(default 30k and 300k rows: 0.37 and 3.7 GB of samples) under a temporary directory,
deleted at the end. Each case runs in a fresh process, as a campaign driver would: open
the pool (`pool:DIR`), fingerprint and normaliser from pool.json, read the seed set's rows
by id (what training reads) and evaluate on the test split (materialised, fixed at
--test rows for every size), then one scoring round (entropy) on K Ray scorer actors
(one CPU each, a tiny CNN, actors kept across rounds) and a second round on the
remaining pool (the next round's shards: the actors' kept row groups are hit). Before a
stored case the pool's files are dropped from the page cache (posix_fadvise DONTNEED), so
round 1 reads from disk.

Measured: the driver's peak RSS (VmHWM) at each size, each actor's peak RSS, its RSS
when it started and its shard's decoded bytes; the round's wall time and rows/s. On the
smallest size the same rounds also run the in-memory path (the pool read into the driver
and put in the object store once), side by side, for the throughput ratio.

    python benchmarks/large_pool.py                          # 30k and 300k, K = 1, 2
    python benchmarks/large_pool.py --sizes 3000,12000 --quick   # smoke run, no results file
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common import (
    HelpFormatter,
    command,
    dir_bytes,
    drop_from_page_cache,
    load_average,
    machine,
    write_result,
)

SHAPE, CLASSES = (64, 64, 3), 200
SAMPLE_BYTES = int(np.prod(SHAPE))
BLOCK = 1024  # synthetic rows are generated in blocks seeded by their index
GB, MB = 1e9, 1e6


# ---- the synthetic pool -----------------------------------------------------------------

class SyntheticImages:
    """[n, 64, 64, 3] uint8 generated on indexing (rows are a pure function of their index),
    so a 3.7 GB pool is written without holding it."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self.shape, self.dtype, self.ndim = (n, *SHAPE), np.dtype(np.uint8), 4
        self._last: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.n

    def _block(self, b: int) -> np.ndarray:
        if self._last is None or self._last[0] != b:
            rows = min(BLOCK, self.n - b * BLOCK)
            rng = np.random.default_rng([self.seed, b])
            self._last = (b, rng.integers(0, 256, (rows, *SHAPE), dtype=np.uint8))
        return self._last[1]

    def __getitem__(self, key: slice) -> np.ndarray:
        lo, hi, step = key.indices(self.n)
        assert step == 1, "contiguous slices only"
        out = np.empty((max(0, hi - lo), *SHAPE), np.uint8)
        for b in range(lo // BLOCK, -(-hi // BLOCK)):
            a, z = max(lo, b * BLOCK), min(hi, (b + 1) * BLOCK)
            out[a - lo:z - lo] = self._block(b)[a - b * BLOCK:z - b * BLOCK]
        return out


def write_synthetic_pool(n: int, n_test: int, to: Path) -> float:
    """Write the pool of n rows (and n_test test rows); returns seconds."""
    from autoal_dist.data.base import Dataset
    from autoal_dist.data.pool_write import write_pool

    rng = np.random.default_rng(n)
    test_x = SyntheticImages(n_test, 10**6)[0:n_test]
    data = Dataset(f"synthetic-tinyimagenet-{n}", SyntheticImages(n, 0),  # type: ignore[arg-type]
                   rng.integers(0, CLASSES, n).astype(np.int64), test_x,
                   rng.integers(0, CLASSES, n_test).astype(np.int64), CLASSES)
    t = time.perf_counter()
    write_pool(data, str(to))
    return time.perf_counter() - t


# ---- the tiny classifier (shipped to the actors by value: defined in __main__) ---------

def tiny_spec():
    import torch.nn as nn

    from autoal_dist.models.backbones import Classifier, ModelSpec

    class TinyCNN(Classifier):
        """Two stride-2 convolutions, 16-d embedding: ~0.5 M multiply-adds an image, so a
        300k round on two CPU cores measures reading and decoding, not the network."""

        def __init__(self, num_classes: int, dropout: float) -> None:
            super().__init__(16, num_classes, dropout)
            self.trunk = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten())

    @dataclass(frozen=True)
    class TinySpec(ModelSpec):
        def build(self):  # type: ignore[override]
            return TinyCNN(self.num_classes, self.dropout)

    return TinySpec("tinycnn", SHAPE, CLASSES, 0.3)


# ---- one case, in a fresh process -------------------------------------------------------

def peak_rss() -> int:
    """VmHWM (ru_maxrss survives execve: a child would report the writer's peak)."""
    from autoal_dist.scoring.actors import peak_rss_bytes

    return peak_rss_bytes()


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    import torch

    from autoal_dist.campaign import initial_ids
    from autoal_dist.data import load_dataset
    from autoal_dist.data.transforms import Normalizer
    from autoal_dist.models.inference import predict
    from autoal_dist.run.layout import pool_table
    from autoal_dist.scoring.ray_scorer import RayScorer

    torch.set_num_threads(1)
    ray.init(num_cpus=args.actors, object_store_memory=int(1.5 * 2**30),
             include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    res: dict[str, Any] = {"mode": args.child, "actors": args.actors, "rss_ray_started": rss_now()}
    t = time.perf_counter()
    data = load_dataset(f"pool:{args.pool}")  # what `run --dataset pool:DIR` does
    norm = Normalizer.for_dataset(data)
    res["fingerprint"] = data.fingerprint()
    pool_table(data.train_y, data.test_y)  # rundir's pool.parquet
    res["open_s"] = time.perf_counter() - t
    n = len(data.train_y)
    spec = tiny_spec()
    torch.manual_seed(0)
    model = spec.build()
    labeled = initial_ids(n, args.init, 0)
    t = time.perf_counter()
    x_lab = data.train_x[labeled]  # Campaign.train reads the labeled rows by id
    res["labeled_read_s"] = time.perf_counter() - t
    res["labeled_groups_read"] = getattr(data.train_x, "groups_read", 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    y_lab = torch.from_numpy(data.train_y[labeled])
    for lo in range(0, len(labeled), 128):  # one epoch, so the weights are not random
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(norm(x_lab[lo:lo + 128])),
                                                 y_lab[lo:lo + 128])
        loss.backward()
        opt.step()
    del x_lab
    predict(model, data.test_x, norm)  # evaluate: the materialised test split
    pool: Any = data.train_x
    if args.child == "memory":
        t = time.perf_counter()
        pool = data.train_x[:]  # the in-memory path: the driver holds it, puts it once
        res["load_s"] = time.perf_counter() - t
    res["rss_before_scoring"] = rss_now()
    t = time.perf_counter()
    scorer = RayScorer(pool, norm, spec, shards=args.actors, batch_size=args.batch_size,
                       mc_samples=1)
    scorer.stats()  # actors started (and, in memory, the pool mapped) before timing
    res["start_s"] = time.perf_counter() - t
    unlabeled = np.setdiff1d(np.arange(n), labeled)
    rounds = []
    for r in (1, 2):
        t = time.perf_counter()
        sel = scorer.select_many(model, unlabeled, ["entropy"], args.budget, r, labeled)
        seconds = time.perf_counter() - t
        rounds.append({"round": r, "rows": len(unlabeled), "seconds": seconds,
                       "actors": scorer.stats(),
                       "shard_rows": [len(task.positions) for task in scorer.tasks]})
        labeled = np.union1d(labeled, sel["entropy"].ids)
        unlabeled = np.setdiff1d(unlabeled, sel["entropy"].ids)
    scorer.close()
    res.update(rounds=rounds, n=n, driver_peak_rss=peak_rss(),
               model_bytes=sum(p.numel() * p.element_size() for p in model.parameters()))
    ray.shutdown()
    return res


def model_child(args: argparse.Namespace) -> dict[str, Any]:
    """What running the model costs a fresh process that has imported what a scorer actor
    imports (torch, Ray, pyarrow): its peak RSS growth while it builds the model and scores
    two batches held in memory (parameters, activations, the float32 batch, torch's kernels
    paged in, and what the allocator keeps of them). An actor's `grew` is compared with its
    shard's decoded bytes plus this."""
    import torch

    import autoal_dist.scoring.actors  # noqa: F401 - the imports a scorer actor has made
    from autoal_dist.data.transforms import Normalizer
    from autoal_dist.models.inference import compute_outputs

    torch.set_num_threads(1)
    x = np.random.default_rng(0).integers(0, 256, (2 * args.batch_size, *SHAPE), dtype=np.uint8)
    norm = Normalizer.fit(x)
    before = rss_now()
    model = tiny_spec().build()
    compute_outputs(model, x, np.arange(len(x)), norm, batch_size=args.batch_size)
    return {"model_run_bytes": peak_rss() - before}


def run_child(mode: str, pool: Path, actors: int, args: argparse.Namespace) -> dict[str, Any]:
    if mode == "stored":
        drop_from_page_cache(pool)
    cmd = [sys.executable, __file__, "--child", mode, "--pool", str(pool), "--actors",
           str(actors), "--init", str(args.init), "--budget", str(args.budget),
           "--batch-size", str(args.batch_size)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---- the report -------------------------------------------------------------------------

def fmt_gb(b: float) -> str:
    return f"{b / GB:.2f} GB" if b >= 0.1 * GB else f"{b / MB:.0f} MB"


def report(cases: list[dict], written: dict[int, dict], args: argparse.Namespace,
           total_s: float, model: int) -> str:
    sizes = sorted(written)
    lines = [f"# Stored pools larger than one machine (#16)\n\nCommand: {command()}\n\n{machine()}"
             f"- Load average (1/5/15 min) at the end: {load_average()}; total {total_s / 60:.1f} "
             "min\n",
             f"- Pool: synthetic {'x'.join(map(str, SHAPE))} uint8, {CLASSES} classes, random "
             f"pixels, `write_pool` defaults (raw, ~4 MiB row groups); test split {args.test} rows "
             f"(materialised by `open_pool`); seed set {args.init} rows read by id; entropy, "
             f"b = {args.budget}, batch {args.batch_size}, a tiny CNN (2 convs, 16-d embedding), "
             "1 torch thread per process, actors kept across rounds, keep budget "
             f"{args.keep_budget} per actor; page cache dropped for the pool's files before each "
             "stored case\n"]
    lines.append("\n## Pools written\n\n| rows | samples | on disk | write (s) |\n"
                 "|---:|---:|---:|---:|\n")
    for n in sizes:
        w = written[n]
        lines.append(f"| {n:,} | {fmt_gb(n * SAMPLE_BYTES)} | {fmt_gb(w['disk'])} | "
                     f"{w['seconds']:.0f} |\n")

    lines.append("\n## Driver peak RSS\n\n| rows | path | K | driver peak RSS | RSS after "
                 "`ray.init` | open pool (s) | seed set by id (s, row groups) |\n"
                 "|---:|---|---:|---:|---:|---:|---:|\n")
    for c in cases:
        lines.append(f"| {c['n']:,} | {c['mode']} | {c['actors']} | {fmt_gb(c['driver_peak_rss'])}"
                     f" | {fmt_gb(c['rss_ray_started'])} | {c['open_s']:.1f} | "
                     f"{c['labeled_read_s']:.1f} ({c['labeled_groups_read']}) |\n")
    verdicts = []
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        extra = (hi - lo) * SAMPLE_BYTES
        for k in sorted({c["actors"] for c in cases}):
            a = next((c for c in cases if c["mode"] == "stored" and c["n"] == lo
                      and c["actors"] == k), None)
            b = next((c for c in cases if c["mode"] == "stored" and c["n"] == hi
                      and c["actors"] == k), None)
            if a and b:
                grow = b["driver_peak_rss"] - a["driver_peak_rss"]
                verdicts.append(
                    f"- K = {k}: driver peak {fmt_gb(b['driver_peak_rss'])} at {hi:,} rows vs "
                    f"{fmt_gb(a['driver_peak_rss'])} at {lo:,}: **{grow / MB:+.0f} MB** for "
                    f"{fmt_gb(extra)} more pool = **{100 * grow / extra:.1f}%** of it "
                    f"(target <= 10%: {'met' if grow <= 0.1 * extra else 'NOT met'})\n")
    lines.append("\n" + "".join(verdicts))

    lines.append("\n## Scorer actors (peaks over rounds 1 and 2)\n\n"
                 "`grew` = peak RSS - RSS when the actor started (torch and Ray loaded); `kept` = "
                 "decoded row groups its keep tier holds (`keep_budget`: at most the keep cap, "
                 "and at most its shard's decoded bytes less the outputs, two batches and the "
                 "reader's LRU cache); `outputs` = its shard's probabilities and embeddings; "
                 "`rest` = grew - kept - outputs: the batch in flight and the one read ahead, "
                 "the reader's LRU cache and code, activations, allocator slack; `model` = "
                 f"{fmt_gb(model)}: the peak RSS growth of a fresh process with an actor's "
                 "imports while it builds the model and scores two batches held in memory "
                 "(`model_child`).\n\n"
                 "| rows | path | K | actor | shard rows | shard decoded | peak RSS | at start "
                 "| grew | kept | outputs | rest | model | row groups read r1 / r2 "
                 "| grew <= shard + model |\n"
                 "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    for c in cases:
        r1, r2 = c["rounds"]
        for i, (s1, s2) in enumerate(zip(r1["actors"], r2["actors"])):
            shard = r1["shard_rows"][i] * SAMPLE_BYTES
            grow = s2["peak_rss"] - s1["rss_at_start"]
            outputs = max(s1.get("outputs_bytes", 0), s2.get("outputs_bytes", 0))
            rest = grow - s2["kept_bytes"] - outputs
            verdict = (f"met ({fmt_gb(shard + model - grow)} to spare)" if grow <= shard + model
                       else f"**not met** ({fmt_gb(grow - shard - model)} over)")
            lines.append(
                f"| {c['n']:,} | {c['mode']} | {c['actors']} | {i} | {r1['shard_rows'][i]:,} | "
                f"{fmt_gb(shard)} | {fmt_gb(s2['peak_rss'])} | {fmt_gb(s1['rss_at_start'])} | "
                f"{fmt_gb(grow)} | {fmt_gb(s2['kept_bytes'])} | {fmt_gb(outputs)} | "
                f"{fmt_gb(rest)} | {fmt_gb(model)} | "
                f"{s1['groups_read']} / {s2['groups_read'] - s1['groups_read']} | "
                + ("n/a: maps the pool, copies its shard" if c["mode"] == "memory" else verdict)
                + " |\n")

    lines.append("\n## Throughput\n\n| rows | path | K | round 1 (s) | rows/s | round 2 (s) | "
                 "rows/s | vs in-memory, round 1 / 2 |\n|---:|---|---:|---:|---:|---:|---:|---|\n")
    for c in cases:
        r1, r2 = c["rounds"]
        mem = next((m for m in cases if m["mode"] == "memory" and m["n"] == c["n"]
                    and m["actors"] == c["actors"]), None)
        ratio = ""
        if mem is not None and c["mode"] == "stored":
            m1, m2 = mem["rounds"]
            ratio = (f"**{m1['seconds'] / r1['seconds']:.2f}x / "
                     f"{m2['seconds'] / r2['seconds']:.2f}x** the in-memory rows/s")
        lines.append(f"| {c['n']:,} | {c['mode']} | {c['actors']} | {r1['seconds']:.1f} | "
                     f"{r1['rows'] / r1['seconds']:,.0f} | {r2['seconds']:.1f} | "
                     f"{r2['rows'] / r2['seconds']:,.0f} | {ratio} |\n")
    lines.append(
        "\nRound 1 of a stored case reads every row of each shard from disk (page cache "
        "dropped); round 2 reads what the actor's keep tier could not hold. The in-memory path "
        "needs the driver to read the whole pool and put it in the object store first (not "
        "timed in its rounds: `load_s` "
        + ", ".join(f"{m['load_s']:.1f} s at {m['n']:,}, K={m['actors']}" for m in cases
                    if m["mode"] == "memory") + ").\n")
    return "".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--sizes", default="30000,300000", help="pool rows, comma-separated")
    p.add_argument("--actors", default="1,2", help="comma-separated K")
    p.add_argument("--memory-sizes", dest="memory_sizes",
                   help="sizes also run in memory (default: the smallest)")
    p.add_argument("--test", type=int, default=2000, help="test rows (same at every size)")
    p.add_argument("--init", type=int, default=1000, help="seed set (read by id)")
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=256)
    p.add_argument("--workdir", help="where to write the pools (default: a temp dir in /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the pools written")
    p.add_argument("--quick", action="store_true", help="smoke run: no results file")
    p.add_argument("--child", choices=["stored", "memory", "model"], help=argparse.SUPPRESS)
    p.add_argument("--pool", help=argparse.SUPPRESS)
    args = p.parse_args()
    from autoal_dist.scoring.ray_scorer import default_cache_bytes

    budget = default_cache_bytes()
    args.keep_budget = ("`keep_budget`'s (the shard's bound, up to 1 GiB)" if budget is None
                        else f"{budget >> 20} MiB (AUTOAL_DIST_SCORER_CACHE_MB)")
    if args.child:
        args.actors = int(args.actors)
        res = model_child(args) if args.child == "model" else child(args)
        print(json.dumps(res, default=int))
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    actors = [int(k) for k in args.actors.split(",")]
    memory = ({int(s) for s in args.memory_sizes.split(",")} if args.memory_sizes
              else {sizes[0]})
    root = Path(tempfile.mkdtemp(prefix="large_pool-", dir=args.workdir))
    need = 1.1 * sum(n + args.test for n in sizes) * SAMPLE_BYTES
    free = shutil.disk_usage(root).free
    if need > free:
        shutil.rmtree(root)
        sys.exit(f"need {need / GB:.1f} GB free under {root.parent}, have {free / GB:.1f} GB; "
                 "lower --sizes or pass --workdir")
    print(f"pools under {root} ({need / GB:.1f} GB of {free / GB:.1f} GB free)", flush=True)
    t0 = time.perf_counter()
    model = run_child("model", root, 1, args)["model_run_bytes"]
    print(f"the model costs a fresh process {fmt_gb(model)}", flush=True)
    written: dict[int, dict] = {}
    cases: list[dict] = []
    try:
        for n in sizes:
            pool = root / f"pool-{n}"
            seconds = write_synthetic_pool(n, args.test, pool)
            written[n] = {"seconds": seconds, "disk": dir_bytes(pool)}
            print(f"wrote {n:,} rows in {seconds:.0f} s ({fmt_gb(written[n]['disk'])})", flush=True)
            for k in actors:
                for mode in (["memory"] if n in memory else []) + ["stored"]:
                    c = run_child(mode, pool, k, args)
                    cases.append(c)
                    r1, r2 = c["rounds"]
                    print(f"{n:>8,} {mode:<6} K={k}: driver peak {fmt_gb(c['driver_peak_rss'])}, "
                          f"actor peaks {[fmt_gb(a['peak_rss']) for a in r2['actors']]}, "
                          f"rounds {r1['seconds']:.1f} s / {r2['seconds']:.1f} s", flush=True)
            if not args.keep:
                shutil.rmtree(pool)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    text = report(cases, written, args, time.perf_counter() - t0, model)
    print("\n" + text)
    if not args.quick:
        print(f"wrote {write_result('large_pool.md', text)}")


if __name__ == "__main__":
    main()
