"""Scaling over Ray scorer actors: scoring throughput and per-round time for K = 1, 2, ... actors.

The target is the paper's largest pool: 100k x 64x64x3, 200 classes (TinyImageNet),
ResNet-18. On CPU the pool is cut to N (default 2000) and the result projected to
100k: the scoring pass is linear in the pool size, so per K

    t_round(N) = t_train + (c_score(K) + c_select(K)) * N

with c = measured seconds per unlabeled sample, t_train measured once (it does not
depend on K: scorer actors only score). The round scores all default candidates
from one shared pass (what AutoAL and ALBL need), on K RayScorer actors
(`ray.init(num_cpus=K_max)`, 1 CPU and 1 torch thread each); selections are checked
equal to K=1's. Speed-ups need idle cores: the load average before and after is
written to benchmarks/results/scaling.md.

    python benchmarks/scaling.py                         # N=2000, K=1,2 on CPU
    python benchmarks/scaling.py --n 100000 --actors 1,2,4,8 --gpu
    python benchmarks/scaling.py --quick                 # tiny 32x32 pool, no results file
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from autoal_dist.campaign import initial_ids
from autoal_dist.config import DEFAULT_CANDIDATES
from autoal_dist.seeds import derive
from autoal_dist.strategies.sharded import shard_slices
from common import HelpFormatter, command, load_average, machine, opened_campaign, write_result

TARGET_N = 100_000


def balance_bound(n: int, k: int, block: int) -> float:
    """The best speed-up K shards can give: shards start on scoring-batch boundaries
    (for exactness), so the largest shard, not n / K, sets the pass time."""
    return n / max(s.stop - s.start for s in shard_slices(n, k, block))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="pool size (train split)")
    p.add_argument("--shape", default="tinyimagenet",
                   help="synthetic spec keys, e.g. hw=32,classes=10")
    p.add_argument("--actors", default="1,2", help="comma-separated actor counts K")
    p.add_argument("--init", type=int, default=200, help="labeled set (>= number of classes)")
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--epochs", type=int, default=1,
                   help="classifier epochs for t_train (CPU: 1; default config: 40)")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--quick", action="store_true", help="N=300, 32x32, 10 classes; no results file")
    args = p.parse_args()
    if args.quick:
        args.n, args.shape, args.init, args.budget = 300, "hw=32,classes=10", 20, 10
    ks = [int(k) for k in args.actors.split(",")]
    load_before = load_average()
    print(machine() + f"command: {command()}\nload average before: {load_before}", flush=True)

    with opened_campaign({"dataset": f"synthetic:{args.shape},n={args.n},test=10",
                          "init": args.init, "budget": args.budget, "rounds": 1,
                          "gpu": args.gpu, "train": {"epochs": args.epochs, "min_steps": 0}},
                         Path(tempfile.mkdtemp(prefix="scaling-"))) as camp:
        cfg, data = camp.cfg, camp.data
        labeled = initial_ids(len(data.train_y), cfg.init, derive(cfg.seed, 0, "init"))
        unlabeled = np.setdiff1d(np.arange(len(data.train_y)), labeled)
        t0 = time.perf_counter()
        model = camp.train(labeled, 0)
        t_train = time.perf_counter() - t0
    seed = derive(cfg.seed, 0, "select")
    print(f"pool {data.train_x.shape}, {camp.spec.name}, |U| = {len(unlabeled)}, "
          f"b = {cfg.budget}; train {t_train:.1f} s", flush=True)

    import ray

    from autoal_dist.scoring.ray_scorer import RayScorer

    ray.init(address="local", num_cpus=max(ks), include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    rows, ref = [], None
    for k in ks:
        scorer = RayScorer(data.train_x, camp.normalize, camp.spec, shards=k,
                           batch_size=cfg.score.batch_size, mc_samples=cfg.score.mc_samples,
                           use_gpu=cfg.gpu)
        # warm-up: actors import torch and build the model on their first call
        scorer.select_many(model, unlabeled[:cfg.score.batch_size * k], ["entropy"], 1, seed,
                           labeled)
        timings: dict[str, float] = {}
        sels = scorer.select_many(model, unlabeled, DEFAULT_CANDIDATES, cfg.budget, seed,
                                  labeled, timings)
        scorer.close()
        if ref is None:
            ref = sels
        same = all(np.array_equal(sels[n].ids, ref[n].ids) for n in DEFAULT_CANDIDATES)
        rows.append((k, timings["score_s"], timings["select_s"], same))
        print(f"K={k}: score {timings['score_s']:.1f} s, select {timings['select_s']:.1f} s, "
              f"equal to K={ks[0]}: {same}", flush=True)
    ray.shutdown()
    load_after = load_average()

    n_u, (k1, s1) = len(unlabeled), rows[0][:2]
    table = ["| K actors | score s | samples/s | speed-up (score) | shard-balance bound "
             "| select s | round s (train + score + select) | c_score ms/sample "
             "| c_select ms/sample | projected "
             f"round s at N = {TARGET_N:,} | equal to K={k1} |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for k, score_s, select_s, same in rows:
        c_score, c_select = score_s / n_u, select_s / n_u
        table.append(f"| {k} | {score_s:.1f} | {n_u / score_s:.1f} | **{s1 / score_s:.2f}x** | "
                     f"{balance_bound(n_u, k, cfg.score.batch_size):.2f}x | {select_s:.1f} | "
                     f"{t_train + score_s + select_s:.1f} | "
                     f"{c_score * 1e3:.2f} | {c_select * 1e3:.2f} | "
                     f"{t_train + (c_score + c_select) * TARGET_N:,.0f} | {same} |")
    text = "\n".join([
        "# Scaling over Ray scorer actors", "", f"Command: {command()}", "", machine().rstrip(),
        f"- Load average (1/5/15 min) before: {load_before}; after: {load_after} (work of "
        "others on the cores lowers the speed-up; the shard-balance bound caps it).",
        f"- Device: {'GPU' if cfg.gpu else 'CPU only'}; 1 torch thread per actor",
        f"- Pool: {len(data.train_y):,} x {data.input_shape} synthetic, {data.num_classes} "
        f"classes, model {camp.spec.name}; |L| = {cfg.init}, |U| = {n_u:,}, b = {cfg.budget}; "
        f"candidates from one shared pass: {', '.join(DEFAULT_CANDIDATES)} "
        f"(T = {cfg.score.mc_samples} head-only MC-dropout samples, batch {cfg.score.batch_size})",
        f"- t_train = {t_train:.1f} s ({cfg.train.epochs} epoch(s), min_steps 0 on CPU; "
        "independent of K)",
        f"- Projection: t_round(N) = t_train + (c_score(K) + c_select(K)) * N, N = {TARGET_N:,}; "
        "the pass is linear in N; k-means' selection grows faster (N x b per Lloyd pass), so "
        "the projection is a lower bound for it.", "", *table, ""])
    print("\n" + text)
    if not args.quick:
        print(f"wrote {write_result('scaling.md', text)}")


if __name__ == "__main__":
    main()
