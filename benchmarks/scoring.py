"""Scoring throughput: one shared pass vs one pass per strategy, and scaling over actors.

For a synthetic pool (default: the TinyImageNet shape, 64x64x3, 200 classes) and
the classifier of that shape (ResNet-18, small-image stem), times:
  (a) one plain inference pass (probabilities only);
  (b) every candidate strategy scored and selected from ONE pass (autoal-dist);
  (c) (b) on K = 1, 2, ... Ray scorer actors (results checked equal to (b));
  (d) the naive baseline of the reference AutoAL code: each strategy runs its own
      full forward pass(es), MC-dropout strategies T full stochastic passes.
and prints (b)/(a), (d)/(b) and the speed-up over K=1 actor. Writes
benchmarks/results/scoring.md.

    python benchmarks/scoring.py                 # N=2000 on CPU (minutes on 2 cores)
    python benchmarks/scoring.py --n 100000 --gpu
    python benchmarks/scoring.py --quick         # smoke run, no results file
"""
from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch

from autoal_dist.data.embedded import make_synthetic, parse_synthetic_spec
from autoal_dist.data.transforms import Normalizer
from autoal_dist.models import ModelSpec
from autoal_dist.models.inference import compute_outputs
from autoal_dist.scoring import LocalScorer, selection_from_outputs
from autoal_dist.strategies import get
from common import HelpFormatter, command, machine, write_result

CANDIDATES = ["least_confidence", "margin", "entropy", "kmeans", "bald", "var_ratio",
              "mean_std", "kcenter", "badge"]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


@torch.no_grad()
def plain_pass(model, x, norm, batch_size, device):
    model.eval()
    for lo in range(0, len(x), batch_size):
        torch.softmax(model(norm(x[lo:lo + batch_size]).to(device)), 1).cpu()


@torch.no_grad()
def naive(model, x, ids, norm, names, budget, seed, batch_size, mc_samples, labeled, device):
    """Per strategy: its own full pass(es). MC strategies: T full passes in train mode (the
    dropout layers only), as the reference code's predict_prob_dropout_split does."""
    for name in names:
        needs = get(name).needs
        out = compute_outputs(model, x, ids, norm, batch_size=batch_size, device=device)
        if "mc_probs" in needs:
            model.train()
            for m in model.modules():  # keep BatchNorm in eval mode, as MC dropout should
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
            out.mc_probs = np.stack([
                np.concatenate([torch.softmax(model(norm(x[lo:lo + batch_size]).to(device)), 1)
                                .cpu().numpy() for lo in range(0, len(x), batch_size)])
                for _ in range(mc_samples)])
            model.eval()
        if "labeled_embeddings" in needs:
            out.labeled_embeddings = compute_outputs(model, labeled, np.arange(len(labeled)),
                                                     norm, batch_size=batch_size,
                                                     device=device).embeddings
        selection_from_outputs(out, name, budget, seed, batch_size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="pool size")
    p.add_argument("--shape", default="tinyimagenet",
                   help="synthetic spec keys, e.g. hw=32,classes=10")
    p.add_argument("--budget", type=int, default=0, help="b (0: N/20)")
    p.add_argument("--actors", default="1,2", help="comma-separated actor counts for (c)")
    p.add_argument("--batch-size", type=int, default=128, help="rows per forward batch")
    p.add_argument("--mc-samples", type=int, default=10,
                   help="MC-dropout samples (BALD, mean_std)")
    p.add_argument("--gpu", action="store_true", help="score on the GPU")
    p.add_argument("--quick", action="store_true", help="tiny pool, no results file")
    args = p.parse_args()
    if args.quick:
        args.n, args.shape = 256, "hw=32,classes=10"
    spec_d = parse_synthetic_spec(f"{args.shape},n={args.n},test=1")
    x, _ = make_synthetic(spec_d)
    x = x[:args.n]
    labeled, x = x[: args.n // 10], x[args.n // 10:]
    ids = np.arange(len(x), dtype=np.int64)
    budget = args.budget or max(10, len(x) // 20)
    device = "cuda" if args.gpu and torch.cuda.is_available() else "cpu"
    norm = Normalizer.fit(x)
    spec = ModelSpec.resolve("auto", x.shape[1:], spec_d["classes"], 0.3)
    torch.manual_seed(0)
    model = spec.build().to(device).eval()
    torch.set_num_threads(1)  # one core per worker everywhere, so K actors compare fairly
    print(f"pool {x.shape}, {spec.name}, b={budget}, {len(CANDIDATES)} candidates, "
          f"device {device}", flush=True)

    _, t_a = timed(lambda: plain_pass(model, x, norm, args.batch_size, device))
    print(f"(a) plain pass           {t_a:8.1f} s", flush=True)
    local = LocalScorer(x, norm, args.batch_size, args.mc_samples, device, show_progress=False)
    lab_pos = np.arange(len(x), len(x) + len(labeled))
    xl = np.concatenate([x, labeled])
    local.x = xl
    ref, t_b = timed(lambda: local.select_many(model, ids, CANDIDATES, budget, 0, lab_pos))
    print(f"(b) one pass, all        {t_b:8.1f} s", flush=True)
    _, t_d = timed(lambda: naive(model, x, ids, norm, CANDIDATES, budget, 0, args.batch_size,
                                 args.mc_samples, labeled, device))
    print(f"(d) one pass per strategy{t_d:8.1f} s", flush=True)

    import ray

    from autoal_dist.scoring.ray_scorer import RayScorer

    ray.init(num_cpus=max(int(k) for k in args.actors.split(",")), log_to_driver=False,
             include_dashboard=False, logging_level="WARNING")
    rows = []
    for k in (int(k) for k in args.actors.split(",")):
        scorer = RayScorer(xl, norm, spec, shards=k, batch_size=args.batch_size,
                           mc_samples=args.mc_samples, use_gpu=args.gpu)
        scorer.select_many(model, ids[:args.batch_size], ["entropy"], 1, 0, lab_pos[:1])  # warm
        got, t_c = timed(functools.partial(scorer.select_many, model, ids, CANDIDATES, budget, 0,
                                           lab_pos))
        same = all(np.array_equal(got[n].ids, ref[n].ids) for n in CANDIDATES)
        rows.append((k, t_c, same))
        print(f"(c) K={k} actors          {t_c:8.1f} s  selections equal to (b): {same}",
              flush=True)
        scorer.close()
    ray.shutdown()

    t1 = rows[0][1]
    table = ("| measure | seconds | ratio |\n|---|---:|---|\n"
             f"| (a) plain inference pass | {t_a:.1f} | |\n"
             f"| (b) {len(CANDIDATES)} candidates from one pass | {t_b:.1f} | "
             f"(b)/(a) = **{t_b / t_a:.2f}** (target <= 1.5) |\n"
             f"| (d) one pass per strategy (reference-code style) | {t_d:.1f} | "
             f"(d)/(b) = **{t_d / t_b:.1f}** (target >= 5) |\n"
             + "".join(f"| (c) K={k} actors | {t:.1f} | speed-up vs K=1: **{t1 / t:.2f}**"
                       f"{' (target >= 1.6 at K=2)' if k == 2 else ''}; equal to (b): {same} |\n"
                       for k, t, same in rows))
    text = (f"# Scoring throughput\n\nCommand: {command()}\n\n{machine()}"
            f"- Pool: {len(x)} x {x.shape[1:]} uint8 synthetic, {spec_d['classes']} classes, "
            f"model {spec.name}, b = {budget}, T = {args.mc_samples} MC samples, batch "
            f"{args.batch_size}, 1 torch thread per process; "
            f"candidates: {', '.join(CANDIDATES)}\n\n"
            + table)
    print("\n" + text)
    if not args.quick:
        print(f"wrote {write_result('scoring.md', text)}")


if __name__ == "__main__":
    main()
