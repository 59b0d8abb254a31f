"""Learning curves: AutoAL vs its candidates' plain vote, every candidate alone, random and ALBL.

Every strategy runs the same campaign (dataset, init, budget, rounds, seed) in this
process, one after another, for each seed; the seed fixes the initial labeled set,
so all strategies start from the same labels. Reports per strategy: mean and std
of test accuracy per round, the area under the learning curve
(`autoal_dist.report.learning_curve_auc`) and the final accuracy, mean ± std over
seeds. Writes benchmarks/results/accuracy.md and accuracy.png (other datasets:
accuracy-<dataset>.md/.png).

`autoal` is the default search (heads on f's embeddings), `autoal-paper` the
paper's per-sample CNN SearchNet (`autoal.mode: paper`), `vote` the candidates'
plain vote with no search: the control that says whether the search adds anything.

    python benchmarks/accuracy.py                        # digits, 13 strategies, seeds 0-4
    python benchmarks/accuracy.py --pool shifted-digits  # AutoAL's regime (benchmarks/pools.py)
    python benchmarks/accuracy.py --dataset npz:/data/pathmnist.npz --seeds 0,1,2
    python benchmarks/accuracy.py --quick                # smoke run, no results file
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import numpy as np

from autoal_dist.albl.policy import STATE_FILE
from autoal_dist.config import DEFAULT_CANDIDATES, Config
from autoal_dist.report import learning_curve_auc
from common import PHASES, RESULTS, command, machine, mean_std, run_campaign, write_result
from pools import POOLS

STRATEGIES = ["autoal", "autoal-paper", "vote", "albl", *DEFAULT_CANDIDATES, "random"]
QUICK = ["entropy", "vote"]
# benchmark labels that are a strategy with settings of their own
VARIANTS = {"autoal-paper": {"strategy": "autoal", "autoal": {"mode": "paper"}}}
# --pool NAME: its campaign (init, budget, rounds) unless given on the command line
POOL_CAMPAIGNS = {"shifted-digits": {"init": 1200, "budget": 100, "rounds": 6}}


def variant(name: str, overrides: dict) -> dict:
    """The campaign overrides of benchmark label `name` (a strategy or a VARIANTS entry)."""
    extra = VARIANTS.get(name, {"strategy": name})
    merged = {**overrides, **extra}
    merged["autoal"] = {**overrides.get("autoal", {}), **extra.get("autoal", {})}
    return merged


def seed_std(acc: np.ndarray) -> np.ndarray:
    """Per-round sample std over seeds (rows); zeros for a single seed."""
    return acc.std(0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])


def curves(strategies: list[str], seeds: list[int], overrides: dict, workdir: Path) -> dict:
    """strategy -> {'n': [R+1], 'acc': [seeds, R+1], 'seconds': [seeds]} (campaigns in series:
    on a 2-core machine parallel campaigns would only contend for the cores)."""
    out = {}
    for name in strategies:
        runs = [run_campaign({**variant(name, overrides), "seed": s},
                             workdir / f"{name}-seed{s}") for s in seeds]
        out[name] = {"n": np.array([r["n_labeled"] for r in runs[0]]),
                     "acc": np.array([[r["accuracy"] for r in rows] for rows in runs]),
                     "seconds": np.array([sum(r[p] for r in rows for p in PHASES)
                                          for rows in runs])}
        aucs = [learning_curve_auc(out[name]["n"], a) for a in out[name]["acc"]]
        print(f"{name:>16}  AUC {mean_std(aucs)}  final {mean_std(out[name]['acc'][:, -1])}",
              flush=True)
    return out


def albl_probabilities(workdir: Path, seeds: list[int]) -> str:
    """ALBL's expert distribution in its last queried round, mean over seeds (a markdown line)."""
    states = [json.loads((workdir / f"albl-seed{s}" / STATE_FILE).read_text()) for s in seeds]
    p = np.mean([s["rounds"][-1]["p"] for s in states], axis=0)
    return ", ".join(f"{e} {v:.3f}" for e, v in zip(states[0]["experts"], p))


def plot(res: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab20").colors
    for i, (name, r) in enumerate(res.items()):
        mean, std = r["acc"].mean(0), seed_std(r["acc"])
        bold = name in ("autoal", "autoal-paper", "vote", "albl")
        ax.plot(r["n"], mean, "o-" if bold else ".-", color=colors[i % 20], label=name,
                lw=2.2 if bold else 1.0, ms=4)
        ax.fill_between(r["n"], mean - std, mean + std, color=colors[i % 20], alpha=0.12)
    ax.set_xlabel("labeled samples")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


COMBINERS = ("autoal", "autoal-paper", "vote", "albl", "random")  # not a single candidate


def paired(aucs: dict[str, list[float]]) -> list[str]:
    """AutoAL minus the plain vote and minus the best single candidate, seed by seed (the
    same initial labels): the comparison that says whether the search adds anything."""
    singles = [n for n in aucs if n not in COMBINERS]
    rivals = [n for n in ("vote", max(singles, key=lambda n: np.mean(aucs[n]), default=None))
              if n in aucs]
    rows = []
    for a in ("autoal", "autoal-paper"):
        for b in rivals if a in aucs else []:
            d = np.subtract(aucs[a], aucs[b])
            rows.append(f"| {a} - {b} | {mean_std(d)} | {int((d > 0).sum())}/{len(d)} | "
                        + ", ".join(f"{v:+.4f}" for v in d) + " |")
    if not rows:
        return []
    return ["## AutoAL against the vote and the best single candidate, paired by seed", "",
            "| difference in AUC | mean ± std | seeds won | per seed |", "|---|---|---:|---|",
            *rows, ""]


def report(res: dict, args: argparse.Namespace, seeds: list[int], iters: tuple[int, int],
           albl_line: str | None) -> str:
    aucs = {n: [learning_curve_auc(r["n"], a) for a in r["acc"]] for n, r in res.items()}
    order = sorted(res, key=lambda n: -np.mean(aucs[n]))
    table = ["| rank | strategy | AUC (mean ± std) | final accuracy (mean ± std) "
             "| s per campaign |",
             "|---:|---|---|---|---:|"]
    table += [f"| {i + 1} | {n} | {mean_std(aucs[n])} | {mean_std(res[n]['acc'][:, -1])} | "
              f"{res[n]['seconds'].mean():.0f} |" for i, n in enumerate(order)]
    n_lab = res[order[0]]["n"]
    curve = ["| strategy | " + " | ".join(str(n) for n in n_lab) + " |",
             "|---|" + "---:|" * len(n_lab)]
    curve += [f"| {n} | " + " | ".join(f"{m:.3f}±{s:.3f}" for m, s in
                                      zip(res[n]["acc"].mean(0), seed_std(res[n]["acc"])))
              + " |" for n in order]
    source = f"the `{args.pool}` pool (benchmarks/pools.py)" if args.pool else f"`{args.dataset}`"
    lines = [f"# Accuracy: learning curves on {source}", "", f"Command: {command()}", "",
             machine().rstrip(), "- Device: CPU only (no GPU in this run); 1 torch thread",
             f"- Campaign: init {args.init}, budget {args.budget} per round, {args.rounds} rounds, "
             f"seeds {', '.join(map(str, seeds))} (a seed fixes the initial labeled set: every "
             "strategy starts from the same labels); other settings are `autoal-dist run`'s "
             "defaults",
             f"- AutoAL: `autoal` = default mode (heads on f's embeddings, search_iters at most "
             f"{iters[0]}), `autoal-paper` = `autoal.mode: paper` (search_iters {iters[0]}, "
             f"fitnet_pretrain_iters {iters[1]}); `vote` = the candidates' plain vote (no "
             f"search); candidates {', '.join(DEFAULT_CANDIDATES)}",
             "- ALBL: EXP4.P over the same candidates + a uniform sampler (batch adaptation in "
             "`autoal_dist/albl/bandit.py`)",
             "- AUC: area under accuracy vs labeled samples, divided by the labeled range "
             "(`learning_curve_auc`); std is the sample std over seeds; seconds per campaign "
             "sum the recorded phases", "",
             "## Sorted by AUC", "", *table, ""]
    lines += paired(aucs)
    if albl_line:
        lines += [f"ALBL's expert probabilities in its last queried round (mean over seeds): "
                  f"{albl_line}", ""]
    lines += ["## Mean ± std accuracy per round (columns: labeled samples)", "", *curve, ""]
    return "\n".join(lines)


def main() -> None:
    defaults = Config()
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits",
                   help="digits | npz:PATH | any autoal-dist dataset")
    p.add_argument("--pool", choices=sorted(POOLS),
                   help="a generated pool (benchmarks/pools.py), with its campaign settings")
    p.add_argument("--data-root", help="directory holding the dataset files")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--init", type=int)
    p.add_argument("--budget", type=int)
    p.add_argument("--rounds", type=int)
    p.add_argument("--autoal-iters", metavar="SEARCH,PRETRAIN",
                   help="AutoAL's search_iters,fitnet_pretrain_iters (default: the config's "
                        f"{defaults.autoal.search_iters},{defaults.autoal.fitnet_pretrain_iters})")
    p.add_argument("--workdir", help="campaign run directories (default: a fresh temp dir); "
                   "campaigns already there are resumed, not rerun")
    p.add_argument("--quick", action="store_true",
                   help=f"{', '.join(QUICK)}, seed 0, 2 rounds; no results file")
    args = p.parse_args()
    if args.quick:
        args.strategies, args.seeds, args.rounds = ",".join(QUICK), "0", 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="accuracy-"))
    campaign = {"init": defaults.init, "budget": defaults.budget, "rounds": defaults.rounds}
    if args.pool:
        workdir.mkdir(parents=True, exist_ok=True)
        args.dataset = f"parquet:{POOLS[args.pool](workdir / f'{args.pool}.parquet')}"
        campaign.update(POOL_CAMPAIGNS.get(args.pool, {}))
    for key, value in campaign.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    strategies, seeds = args.strategies.split(","), [int(s) for s in args.seeds.split(",")]
    iters = (tuple(int(v) for v in args.autoal_iters.split(",")) if args.autoal_iters
             else (defaults.autoal.search_iters, defaults.autoal.fitnet_pretrain_iters))
    overrides = {"dataset": args.dataset, "data_root": args.data_root, "init": args.init,
                 "budget": args.budget, "rounds": args.rounds,
                 "autoal": {"search_iters": iters[0], "fitnet_pretrain_iters": iters[1]}}
    print(machine() + f"command: {command()}", flush=True)
    print(f"campaign run directories: {workdir}", flush=True)
    res = curves(strategies, seeds, overrides, workdir)
    text = report(res, args, seeds, iters,
                  albl_probabilities(workdir, seeds) if "albl" in res else None)
    print("\n" + text)
    if args.quick:
        return
    slug = ("" if args.dataset == "digits" else "-" + (args.pool or re.sub(
        r"[^A-Za-z0-9]+", "_", Path(args.dataset).stem)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / f"accuracy{slug}.png"
    plot(res, png, f"{args.dataset}: mean ± std over {len(seeds)} seeds")
    md = write_result(f"accuracy{slug}.md", text + f"\n![learning curves]({png.name})\n")
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
