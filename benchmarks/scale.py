"""A million rows, two nodes (#28): one campaign on a stored pool, on one Ray node and on two.

A synthetic pool of flat features (default 1,000,000 rows of 512 float32 = 2 KB a row, 2 GB;
10 Gaussian-blob classes; rows are generated a block at a time from their index, so the
pool is written with `write_pool` without being held) goes under a temporary directory,
deleted at the end. The same campaign (`autoal-dist run --dataset pool:DIR --ray --shards 2
--rounds R --strategy entropy`, the MLP, training in the driver: `--workers 0`) then runs on
two Ray clusters, each in a network namespace of its own holding only loopback
(`cluster/netns.sh`, which needs `unshare -n`): ONE node (127.0.0.1, 2 CPUs) and TWO nodes
(127.0.0.1 and 127.0.0.2, 1 CPU each), so the two scorer actors share a node or get one each.
Before each, the pool's files are dropped from the page cache (round 1 reads from disk).

The driver runs inside the namespace as a child process of this script (`--child`), runs
the campaign in-process (`autoal_dist.cli.main`, as scorer_reads.py does) and writes JSON
that this script reads. Measured per configuration: the driver's peak RSS (VmHWM); after
each round's forward pass, each scorer actor's node, peak RSS, RSS when it started, its
shard's decoded bytes and the row groups / bytes it read from storage that round
(`ScorerActor.stats()`); seconds per round (metrics.parquet's phases, and the forward
pass alone); the object store's use (`memory_summary`, sampled every second and after
each forward pass: the pool must not enter it; each node's store is capped at
--object-store bytes); the journal's sha256, which must be equal on one node and two.
One actor's rows/s (a forward pass over its shard in round 2) says what one row costs.

    python benchmarks/scale.py                        # 1,000,000 rows, 1 node and 2 nodes
    python benchmarks/scale.py --rows 20000 --quick   # smoke run, no results file
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import (
    HelpFormatter,
    command,
    dir_bytes,
    drop_from_page_cache,
    journal_digest,
    load_average,
    machine,
    write_result,
)

REPO = Path(__file__).resolve().parent.parent
NETNS = REPO / "cluster" / "netns.sh"
BLOCK = 8192  # synthetic rows are generated in blocks seeded by their index
GB, MB = 1e9, 1e6
UNSHARE_REFUSED = 77  # netns.sh's exit status when `unshare -n` is not permitted


# ---- the synthetic pool -----------------------------------------------------------------

class SyntheticFeatures:
    """[n, dim] float32 Gaussian blobs generated on indexing (each block of rows is a pure
    function of its index and the labels), so a 2 GB pool is written without holding it."""

    def __init__(self, y: np.ndarray, centers: np.ndarray, seed: int) -> None:
        self.y, self.centers, self.seed = y, centers, seed
        self.n, dim = len(y), centers.shape[1]
        self.shape, self.dtype, self.ndim = (self.n, dim), np.dtype(np.float32), 2
        self._last: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.n

    def _block(self, b: int) -> np.ndarray:
        if self._last is None or self._last[0] != b:
            lo, hi = b * BLOCK, min(self.n, (b + 1) * BLOCK)
            noise = np.random.default_rng([self.seed, b]).standard_normal(
                (hi - lo, self.shape[1]), dtype=np.float32)
            self._last = (b, self.centers[self.y[lo:hi]] + noise)
        return self._last[1]

    def __getitem__(self, key: slice) -> np.ndarray:
        lo, hi, step = key.indices(self.n)
        assert step == 1, "contiguous slices only"
        out = np.empty((max(0, hi - lo), self.shape[1]), np.float32)
        for b in range(lo // BLOCK, -(-hi // BLOCK)):
            a, z = max(lo, b * BLOCK), min(hi, (b + 1) * BLOCK)
            out[a - lo:z - lo] = self._block(b)[a - b * BLOCK:z - b * BLOCK]
        return out


def write_synthetic_pool(n: int, n_test: int, dim: int, classes: int, to: Path) -> float:
    """Write the pool of n rows (and n_test test rows); returns seconds."""
    from autoal_dist.data.base import Dataset
    from autoal_dist.data.pool_write import write_pool

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 0.1, (classes, dim)).astype(np.float32)
    y, test_y = rng.integers(0, classes, n), rng.integers(0, classes, n_test)
    test_x = SyntheticFeatures(test_y, centers, 10**6)[0:n_test]
    data = Dataset(f"synthetic-features-{n}x{dim}", SyntheticFeatures(y, centers, 0),  # type: ignore[arg-type]
                   y, test_x, test_y, classes)
    t = time.perf_counter()
    write_pool(data, str(to))
    return time.perf_counter() - t


# ---- the harness: a cluster of one or two loopback nodes in a network namespace ----------

def in_netns(nodes: int, cpus: int, argv: list[str], *, timeout: float,
             object_store: int | None = None, log: Path | None = None
             ) -> subprocess.CompletedProcess:
    """`argv` run by `cluster/netns.sh` on a fresh cluster of `nodes` loopback nodes with
    `cpus` CPUs each (RAY_ADDRESS and token auth set for it). On a timeout or an interrupt
    netns.sh gets SIGTERM (it stops both nodes by process group), then SIGKILL after 60 s.
    Its exit status 77 (UNSHARE_REFUSED) says `unshare -n` is not permitted here.
    stdout and stderr go to `log` (default: captured)."""
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "RAY_API_SERVER"))}
    env.update(RAY=ray_bin, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    cmd = [str(NETNS), "--nodes", str(nodes), "--cpus", str(cpus),
           *(["--object-store-memory", str(object_store)] if object_store else []), "--", *argv]
    out = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except BaseException:  # a timeout, Ctrl-C: netns.sh stops its nodes on SIGTERM
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout or "", "")


def netns_permitted() -> bool:
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


# ---- the driver, inside the namespace -------------------------------------------------

def plasma() -> tuple[float, int]:
    """(MiB, objects) of the object store over all nodes (`memory_summary`)."""
    from ray._private.internal_api import memory_summary

    text = memory_summary(stats_only=True)
    m = re.search(r"Plasma memory usage (\d+) MiB, (\d+) objects", text)
    return (float(m.group(1)), int(m.group(2))) if m else (float("nan"), -1)


def actor_node(actor: Any, addresses: dict[str, str]) -> str:
    """The address of the node an actor runs on (from the GCS)."""
    import ray._private.state as gcs

    info = gcs.actors(actor._actor_id.hex())
    return addresses.get((info.get("Address") or {}).get("NodeID"), "?")


def child(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    import torch

    from autoal_dist.cli import main
    from autoal_dist.scoring.actors import peak_rss_bytes
    from autoal_dist.scoring.ray_scorer import RayScorer

    torch.set_num_threads(1)  # training in the driver is exact at equal thread counts
    rounds: list[dict[str, Any]] = []
    seen: dict[int, tuple[int, int]] = {}  # actor pid -> (groups, bytes) at its last snapshot
    peak = {"mib": 0.0, "objects": 0}
    stop = threading.Event()
    prepare = RayScorer.prepare

    def sample() -> None:  # the object store's use, every second while the campaign runs
        while not stop.wait(1.0):
            if ray.is_initialized():
                try:
                    mib, objects = plasma()
                except Exception:  # noqa: BLE001 - Ray starting or stopping
                    continue
                if mib >= peak["mib"]:
                    peak.update(mib=mib, objects=max(objects, peak["objects"]))

    def recorded(self: RayScorer, model, positions, *args, **kwargs):
        t = time.perf_counter()
        got = prepare(self, model, positions, *args, **kwargs)
        seconds = time.perf_counter() - t
        nodes = ray.nodes()
        addresses = {n["NodeID"]: n["NodeManagerAddress"] for n in nodes}
        mib, objects = plasma()
        actors = []
        for k, st in enumerate(self.stats()):
            g0, b0 = seen.get(st["pid"], (0, 0))
            actors.append({**st, "node": actor_node(self.actors[k], addresses),
                           "shard_rows": len(self.tasks[k].positions),
                           "labeled_rows": len(self.tasks[k].labeled_positions),
                           "groups": st["groups_read"] - g0, "bytes": st["bytes_read"] - b0,
                           "new_process": st["pid"] not in seen})
            seen[st["pid"]] = (st["groups_read"], st["bytes_read"])
        rounds.append({"round": len(rounds), "forward_s": seconds, "rows": len(positions),
                       "plasma_mib": mib, "plasma_objects": objects, "actors": actors,
                       "row_bytes": int(self.pool.row_bytes) if self.stored else None,
                       "model_bytes": sum(p.numel() * p.element_size()
                                          for p in model.parameters()),
                       "nodes": sorted(n["NodeManagerAddress"] for n in nodes if n["Alive"])})
        return got

    RayScorer.prepare = recorded  # type: ignore[method-assign]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    try:
        code = main(["run", "--dataset", f"pool:{args.pool}", "--ray", "--shards",
                     str(args.shards), "--rounds", str(args.rounds), "--init", str(args.init),
                     "--budget", str(args.budget), "--epochs", str(args.epochs), "--strategy",
                     args.strategy, "--seed", str(args.seed), "--out", str(args.out), "--quiet"])
    finally:
        RayScorer.prepare = prepare  # type: ignore[method-assign]
        stop.set()
    wall = time.perf_counter() - t
    if code != 0:
        raise SystemExit(f"the campaign failed (exit {code})")
    import pyarrow.parquet as pq

    return {"rounds": rounds, "wall_s": wall, "driver_peak_rss": peak_rss_bytes(),
            "plasma_peak_mib": peak["mib"], "plasma_peak_objects": peak["objects"],
            "journal": journal_digest(Path(args.out)),
            "metrics": pq.read_table(Path(args.out) / "metrics.parquet").to_pylist()}


def model_child(args: argparse.Namespace) -> dict[str, Any]:
    """What running the model and opening the pool cost a fresh process that has imported
    what a scorer actor imports (torch, Ray): its peak RSS growth while it builds the MLP and
    scores two batches held in memory (as large_pool.py's `model_child`), then while it opens
    the stored pool as an actor does (its StoredArray, the actor's reader settings) and reads
    its first two batches (pyarrow's parquet code and buffers: fixed, whatever the shard).
    An actor's `grew` is compared with its shard's decoded bytes plus the model's."""
    import torch

    import autoal_dist.scoring.actors  # noqa: F401 - the imports a scorer actor has made
    from autoal_dist.data.pool_read import StoredArray, read_meta
    from autoal_dist.data.transforms import Normalizer
    from autoal_dist.models.backbones import build_model
    from autoal_dist.models.inference import compute_outputs
    from autoal_dist.scoring.actors import ACTOR_LRU_BYTES, peak_rss_bytes, rss_bytes
    from autoal_dist.scoring.rows import rows_at

    torch.set_num_threads(1)
    x = np.random.default_rng(0).standard_normal((2 * 256, args.dim), dtype=np.float32)
    norm = Normalizer.fit(x)
    before = rss_bytes()
    model = build_model("mlp", (args.dim,), args.classes)
    compute_outputs(model, x, np.arange(len(x)), norm, batch_size=256)
    res = {"model_run_bytes": peak_rss_bytes() - before,
           "model_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}
    before = rss_bytes()
    pool = StoredArray(str(args.pool), "train", read_meta(str(args.pool)))
    pool.cache_bytes = max(ACTOR_LRU_BYTES, 2 * pool.max_group_bytes)  # as ScorerActor.attach
    pool.readers, pool.row_cache_bytes = 1, 0
    with rows_at(pool, np.arange(2 * 256)) as rows:
        compute_outputs(model, rows, np.arange(2 * 256), norm, batch_size=256)
    res["reader_bytes"] = peak_rss_bytes() - before
    return res


def campaign_argv(pool: Path, out: Path, result: Path, args: argparse.Namespace) -> list[str]:
    """The child's command line (the campaign's flags are this script's)."""
    return [sys.executable, str(Path(__file__).resolve()), "--child", "campaign", "--pool",
            str(pool), "--out", str(out), "--json", str(result), "--shards", str(args.shards),
            "--rounds", str(args.rounds), "--init", str(args.init), "--budget",
            str(args.budget), "--epochs", str(args.epochs), "--strategy", args.strategy,
            "--seed", str(args.seed)]


def run_config(nodes: int, cpus: int, pool: Path, root: Path, args: argparse.Namespace
               ) -> dict[str, Any]:
    """One campaign on a fresh cluster of `nodes` x `cpus`; the child's measurements."""
    out, result = root / f"run-{nodes}node", root / f"result-{nodes}node.json"
    log = root / f"log-{nodes}node.txt"
    drop_from_page_cache(pool)
    t = time.perf_counter()
    done = in_netns(nodes, cpus, campaign_argv(pool, out, result, args), timeout=args.timeout,
                    object_store=args.object_store, log=log)
    if done.returncode == UNSHARE_REFUSED:
        sys.exit("scale.py: `unshare -n` is not permitted here (needs root or user namespaces)")
    if done.returncode != 0 or not result.exists():
        sys.stderr.write(log.read_text()[-6000:])
        sys.exit(f"scale.py: the {nodes}-node campaign failed (exit {done.returncode})")
    res = json.loads(result.read_text())
    res.update(nodes=nodes, cpus=cpus, outer_s=time.perf_counter() - t)
    shutil.rmtree(out)
    return res


# ---- the report ---------------------------------------------------------------------------

def fmt_gb(n: float) -> str:
    return f"{n / GB:.2f} GB" if abs(n) >= 0.1 * GB else f"{n / MB:.0f} MB"


PHASES = ("train_s", "eval_s", "score_s", "select_s")


def phases(m: dict) -> str:
    """A metrics row's seconds: the sum (its phases)."""
    return f"{sum(m[k] for k in PHASES):.1f} ({' + '.join(f'{m[k]:.1f}' for k in PHASES)})"


def report(cases: list[dict], written: dict, model: dict, args: argparse.Namespace,
           total_s: float) -> str:
    n, row = args.rows, 4 * args.dim
    one, two = (next(c for c in cases if c["nodes"] == k) for k in (1, 2))
    same = one["journal"] == two["journal"]
    lines = [f"# A million rows, two nodes (#28): {n:,}-row stored pool, 1 node vs 2 nodes\n\n",
             f"Command: {command()}; total {total_s / 60:.1f} min; load average (1/5/15 min) at "
             f"the end: {load_average()}\n\n", machine(),
             f"\nPool: {n:,} train rows of {args.dim} float32 ({row:,} B a row decoded; "
             f"{n * row / GB:.2f} GB) + {args.test:,} test rows, {args.classes} classes, "
             f"written with `write_pool` in {written['seconds']:.0f} s: "
             f"{fmt_gb(written['disk'])} on disk, deleted at the end. Campaign: `--dataset "
             f"pool:DIR --ray --shards {args.shards} --rounds {args.rounds} --init {args.init} "
             f"--budget {args.budget} --epochs {args.epochs} --strategy {args.strategy} --seed "
             f"{args.seed}` (MLP {args.dim}-256-256-{args.classes}; training in the driver, "
             "`--workers 0`; the scorer actors live for the whole campaign). Each node's object "
             f"store is capped at {fmt_gb(args.object_store)}; the pool's page cache is dropped "
             "before each configuration. Both clusters run in a network namespace holding only "
             "`lo` (`cluster/netns.sh`): 1 node = head 127.0.0.1 with 2 CPUs; 2 nodes = head "
             "127.0.0.1 + node 127.0.0.2, 1 CPU each.\n\n"]
    lines.append("## The two configurations\n\n| | 1 node | 2 nodes |\n|---|---|---|\n")

    def row_of(label: str, f) -> None:
        lines.append(f"| {label} | {f(one)} | {f(two)} |\n")

    row_of("actors' nodes (round 1 / 2)", lambda c: " / ".join(
        ", ".join(a["node"] for a in r["actors"]) for r in c["rounds"]))
    row_of("actor processes (pids, same in every round)", lambda c: ", ".join(
        str(a["pid"]) for a in c["rounds"][0]["actors"]) + (
        "" if all(not a["new_process"] for r in c["rounds"][1:] for a in r["actors"])
        else " (**restarted**)"))
    for i in range(len(one["rounds"])):
        row_of(f"round {i + 1}: seconds (train + eval + score + select; metrics round {i})",
               lambda c, i=i: phases(c["metrics"][i]))
        row_of(f"round {i + 1}: forward pass over {one['rounds'][i]['rows']:,} rows (s, rows/s)",
               lambda c, i=i: f"{c['rounds'][i]['forward_s']:.1f} s, "
               f"{c['rounds'][i]['rows'] / c['rounds'][i]['forward_s']:,.0f} rows/s")
    row_of(f"last training + evaluation (s; metrics round {len(one['rounds'])})",
           lambda c: phases(c["metrics"][-1]))
    row_of("campaign wall time in the driver (s; Ray join included)",
           lambda c: f"{c['wall_s']:.1f}")
    row_of("driver peak RSS (VmHWM)", lambda c: fmt_gb(c["driver_peak_rss"]))
    row_of("object store: peak sampled / after each forward pass",
           lambda c: f"{c['plasma_peak_mib']:.0f} MiB ({c['plasma_peak_objects']} objects) / "
           + ", ".join(f"{r['plasma_mib']:.0f} MiB" for r in c["rounds"]))
    row_of("final accuracy", lambda c: f"{c['metrics'][-1]['accuracy']:.4f}")
    row_of("journal sha256", lambda c: f"`{c['journal'][:16]}`")
    lines.append(f"\nJournals equal on 1 and 2 nodes: **{'yes' if same else 'NO'}**. The pool "
                 f"({n * row / GB:.2f} GB) never entered the object store: its peak use was "
                 f"{max(one['plasma_peak_mib'], two['plasma_peak_mib']):.0f} MiB (the round's "
                 "weights and results).\n")
    ratios = ", ".join(f"{b['forward_s'] / a['forward_s']:.2f}x" for a, b in
                       zip(one["rounds"], two["rounds"]))
    lines.append(
        "\nBoth nodes run on the same 2 cores of one machine, so two nodes cannot be faster "
        f"here: the forward passes on two nodes took {ratios} the one-node time (rounds 1, "
        f"2), the campaign {two['wall_s'] / one['wall_s']:.2f}x (a second raylet and its "
        "agents on the same cores; the machine is shared, see the load average). What the "
        "comparison shows is that spreading the scorer actors over nodes (`SPREAD`, one per "
        "node) changes neither the selections nor what each actor reads and holds: each "
        "reads only its own shard, from storage, and the driver holds ids, labels and the "
        "round's small results.\n")

    lines.append("\n## Scorer actors, per round\n\n`read` = row groups / bytes this actor "
                 "fetched from storage in that round (`ScorerActor.stats()`, counters of its "
                 "process); `kept` = decoded bytes it keeps for the next round (its keep "
                 "budget); `outputs` = its shard's probabilities and embeddings (held for the "
                 "round's selection); `rest` = grew - kept - outputs: the batch in flight and "
                 "the one read ahead, the reader's cache, the model, allocator slack; "
                 "`grew` = peak RSS - RSS when it started (torch and Ray loaded); "
                 "`shard` = its shard's decoded bytes (rows x row bytes); `model` = "
                 f"{fmt_gb(model['model_run_bytes'])}: the peak RSS growth of a fresh process "
                 "with an actor's imports while it builds the MLP "
                 f"({fmt_gb(model['model_bytes'])} of parameters) and scores two batches "
                 "(`model_child`).\n\n"
                 "| config | round | actor | node | shard rows | shard | read | kept | outputs "
                 "| rest | peak RSS | at start | grew | grew <= shard + model |\n"
                 "|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|\n")
    for c in cases:
        for r in c["rounds"]:
            for k, a in enumerate(r["actors"]):
                shard = a["shard_rows"] * (r["row_bytes"] or row)
                run = model["model_run_bytes"]
                grow = a["peak_rss"] - a["rss_at_start"]
                ok = (f"yes ({fmt_gb(shard + run - grow)} to spare)" if grow <= shard + run
                      else f"**no** ({fmt_gb(grow - shard - run)} over)")
                lines.append(
                    f"| {c['nodes']} node{'s' * (c['nodes'] > 1)} | {r['round'] + 1} | {k} | "
                    f"{a['node']} | {a['shard_rows']:,} | {fmt_gb(shard)} | {a['groups']} / "
                    f"{fmt_gb(a['bytes'])} | {fmt_gb(a['kept_bytes'])} | "
                    f"{fmt_gb(a['outputs_bytes'])} | "
                    f"{fmt_gb(grow - a['kept_bytes'] - a['outputs_bytes'])} | "
                    f"{fmt_gb(a['peak_rss'])} "
                    f"| {fmt_gb(a['rss_at_start'])} | {fmt_gb(grow)} | {ok} |\n")
    from autoal_dist.scoring.actors import READ_RESERVE_BYTES

    rests = [a["peak_rss"] - a["rss_at_start"] - a["kept_bytes"] - a["outputs_bytes"]
             for c in cases for r in c["rounds"] for a in r["actors"]]
    lines.append(
        f"\n`rest` was {fmt_gb(min(rests))} to {fmt_gb(max(rests))}. The keep budget "
        f"reserves {fmt_gb(READ_RESERVE_BYTES)} (`READ_RESERVE_BYTES`) for the reader and the "
        "batches beside the kept rows and the outputs; opening the stored pool and reading "
        f"its first two batches alone costs a fresh process {fmt_gb(model['reader_bytes'])} "
        "(`model_child`: pyarrow's parquet code and buffers, fixed whatever the shard), "
        "which an actor's `at start` does not include yet.\n")
    per_actor = [r["rows"] / len(r["actors"]) / r["forward_s"] for c in cases
                 for r in c["rounds"][1:]]
    lines.append(
        f"\nOne row costs a scorer actor about {1e6 / max(per_actor):.1f} µs in round 2 "
        f"({min(per_actor):,.0f} to {max(per_actor):,.0f} rows/s per actor over the "
        "configurations: the shard's rows read (what the keep tier does not hold), decoded, "
        f"normalised, through the MLP; one CPU each). Round 1 reads every row of each shard "
        "from disk; round 2 re-reads what the keep tier could not hold (its budget is bounded "
        "by the shard's decoded bytes less the round's outputs, `actors.keep_budget`).\n")
    return "".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="pool rows")
    p.add_argument("--dim", type=int, default=512, help="float32 features a row")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--test", type=int, default=2000, help="test rows")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--init", type=int, default=1000)
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--strategy", default="entropy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--object-store", dest="object_store", type=int, default=500 * 10**6,
                   help="each node's object store, bytes")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
    p.add_argument("--workdir", help="where to write the pool (default: a temp dir in /tmp)")
    p.add_argument("--quick", action="store_true", help="smoke run: no results file")
    p.add_argument("--child", choices=["campaign", "model"], help=argparse.SUPPRESS)
    p.add_argument("--pool", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        res = model_child(args) if args.child == "model" else child(args)
        Path(args.json).write_text(json.dumps(res, default=int))
        return
    if not netns_permitted():
        sys.exit("scale.py: `unshare -n` is not permitted here (needs root or user namespaces)")
    root = Path(tempfile.mkdtemp(prefix="scale-", dir=args.workdir))
    need = 1.2 * (args.rows + args.test) * 4 * args.dim
    free = shutil.disk_usage(root).free
    if need > free:
        shutil.rmtree(root)
        sys.exit(f"need {need / GB:.1f} GB free under {root.parent}, have {free / GB:.1f} GB; "
                 "lower --rows or pass --workdir")
    print(f"pool under {root} ({need / GB:.1f} GB of {free / GB:.1f} GB free)", flush=True)
    t0 = time.perf_counter()
    cases = []
    try:
        pool = root / "pool"
        seconds = write_synthetic_pool(args.rows, args.test, args.dim, args.classes, pool)
        written = {"seconds": seconds, "disk": dir_bytes(pool)}
        print(f"wrote {args.rows:,} rows in {seconds:.0f} s ({fmt_gb(written['disk'])})",
              flush=True)
        subprocess.run([sys.executable, __file__, "--child", "model", "--dim", str(args.dim),
                        "--classes", str(args.classes), "--pool", str(pool), "--json",
                        str(root / "model.json")],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        model = json.loads((root / "model.json").read_text())
        print(f"the model costs a fresh process {fmt_gb(model['model_run_bytes'])}, opening "
              f"the pool and reading two batches {fmt_gb(model['reader_bytes'])}", flush=True)
        for nodes, cpus in ((1, 2), (2, 1)):
            c = run_config(nodes, cpus, pool, root, args)
            cases.append(c)
            print(f"{nodes} node(s): driver peak {fmt_gb(c['driver_peak_rss'])}, actors on "
                  f"{[a['node'] for a in c['rounds'][0]['actors']]}, forward passes "
                  f"{[round(r['forward_s'], 1) for r in c['rounds']]} s, object store peak "
                  f"{c['plasma_peak_mib']:.0f} MiB, journal {c['journal'][:16]}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = report(cases, written, model, args, time.perf_counter() - t0)
    print("\n" + text)
    if not args.quick:
        print(f"wrote {write_result('scale.md', text)}")


if __name__ == "__main__":
    main()
