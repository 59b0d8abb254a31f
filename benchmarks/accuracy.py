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

    python benchmarks/accuracy.py                        # digits, every strategy, seeds 0-4
    python benchmarks/accuracy.py --pool shifted-digits  # one generated pool (benchmarks/pools.py)
    python benchmarks/accuracy.py --suite --jobs 2       # the regime suite: every pool, one table
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

from autoal_dist.albl.state import STATE_FILE
from autoal_dist.config import DEFAULT_CANDIDATES, Config
from autoal_dist.report import learning_curve_auc
from common import (
    PHASES,
    RESULTS,
    HelpFormatter,
    command,
    machine,
    mean_std,
    run_campaign,
    write_result,
)
from oracle import ORACLE
from pools import CAMPAIGNS, POOLS, SUITE

STRATEGIES = ["autoal", "autoal-paper", "vote", "albl", *DEFAULT_CANDIDATES, "random", ORACLE]
SUITE_STRATEGIES = ["autoal", "vote", "albl", *DEFAULT_CANDIDATES, "random", ORACLE]
QUICK = ["entropy", "vote"]
# benchmark labels that are a strategy with settings of their own
VARIANTS = {"autoal-paper": {"strategy": "autoal", "autoal": {"mode": "paper"}},
            "autoal-lossrank": {"strategy": "autoal", "autoal": {"reward": "loss_rank"}},
            "autoal-argmax": {"strategy": "autoal", "autoal": {"switch_se": 0.0,
                                                                "evidence_decay": 0.0}},
            "autoal-gain": {"strategy": "autoal", "autoal": {"reward": "gain"}},
            "autoal-coldev": {"strategy": "autoal", "autoal": {"cold_evidence": True}},
            ORACLE: {"strategy": "vote"}}  # the oracle's policy replaces the vote's (oracle.py)
# --pool NAME: its campaign (init, budget, rounds) unless given on the command line
POOL_CAMPAIGNS = CAMPAIGNS


def variant(name: str, overrides: dict) -> dict:
    """The campaign overrides of benchmark label `name` (a strategy or a VARIANTS entry)."""
    extra = VARIANTS.get(name, {"strategy": name})
    merged = {**overrides, **extra}
    merged["autoal"] = {**overrides.get("autoal", {}), **extra.get("autoal", {})}
    return merged


def seed_std(acc: np.ndarray) -> np.ndarray:
    """Per-round sample std over seeds (rows); zeros for a single seed."""
    return acc.std(0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])


def one_campaign(task: tuple[str, int, dict, str]) -> dict:
    """One (label, seed) campaign in this process: its curve, seconds and, for autoal, the
    per-round rank correlation of the search's estimates with the oracle's true gains."""
    import torch

    from oracle import install

    name, seed, overrides, run_dir = task
    torch.set_num_threads(1)
    install(name)
    rows = run_campaign({**variant(name, overrides), "seed": seed}, Path(run_dir))
    corr: list[float] = []
    search = Path(run_dir) / "autoal_search.parquet"
    if name.startswith("autoal") and search.exists():
        import pyarrow.parquet as pq

        t = pq.read_table(search).to_pandas()
        if "oracle_corr" in t:
            corr = t.groupby("round")["oracle_corr"].first().tolist()
    return {"n": [r["n_labeled"] for r in rows], "acc": [r["accuracy"] for r in rows],
            "seconds": sum(r[p] for r in rows for p in PHASES), "oracle_corr": corr}


def run_tasks(tasks: list[tuple[str, int, dict, str]], jobs: int) -> list[dict]:
    """Campaigns in `jobs` processes (spawned: each imports torch afresh, one thread each),
    results in task order."""
    if jobs <= 1:
        return [one_campaign(t) for t in tasks]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(one_campaign, tasks))


def curves(strategies: list[str], seeds: list[int], overrides: dict, workdir: Path,
           jobs: int = 1) -> dict:
    """strategy -> {'n': [R+1], 'acc': [seeds, R+1], 'seconds': [seeds], 'oracle_corr':
    [seeds][rounds]}."""
    tasks = [(name, s, overrides, str(workdir / f"{name}-seed{s}"))
             for name in strategies for s in seeds]
    results = iter(run_tasks(tasks, jobs))
    out = {}
    for name in strategies:
        runs = [next(results) for _ in seeds]
        out[name] = {"n": np.array(runs[0]["n"]), "acc": np.array([r["acc"] for r in runs]),
                     "seconds": np.array([r["seconds"] for r in runs]),
                     "oracle_corr": [r["oracle_corr"] for r in runs]}
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


COMBINERS = ("autoal", "autoal-paper", "autoal-lossrank", "vote", "albl", "random", ORACLE)


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


def pool_dataset(pool: str, workdir: Path) -> str:
    """The dataset spec of a suite pool: the embedded digits, or a generated parquet file."""
    if pool == "digits":
        return "digits"
    workdir.mkdir(parents=True, exist_ok=True)
    return f"parquet:{POOLS[pool](workdir / f'{pool}.parquet')}"


def suite_aucs(res: dict[str, dict]) -> dict[str, dict[str, list[float]]]:
    return {pool: {n: [learning_curve_auc(r["n"], a) for a in r["acc"]] for n, r in per.items()}
            for pool, per in res.items()}


def ranked(name: str) -> bool:
    """Strategies the mean rank compares: not the oracle (a bound) and not AutoAL's ablation
    variants (`autoal-...`: the default with one choice changed)."""
    return name != ORACLE and not name.startswith("autoal-")


def mean_ranks(aucs: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """Each strategy's rank by mean AUC within each pool (1 = best; the oracle and the
    ablation variants are left out: `ranked`), averaged over pools."""
    ranks: dict[str, list[float]] = {}
    for per in aucs.values():
        names = [n for n in per if ranked(n)]
        means = np.array([np.mean(per[n]) for n in names])
        from scipy.stats import rankdata

        for n, r in zip(names, rankdata(-means)):
            ranks.setdefault(n, []).append(float(r))
    return {n: float(np.mean(r)) for n, r in ranks.items()}


def best_single(per: dict[str, list[float]]) -> str | None:
    """The single strategy of best mean AUC (None: the run had none, e.g. only ablations,
    to be merged with one that has them)."""
    singles = [n for n in per if n not in COMBINERS and not n.startswith("autoal")]
    return max(singles, key=lambda n: np.mean(per[n]), default=None)


def sources(res: dict[str, dict]) -> list[str]:
    """Where each pool's campaigns ran: this run, or the merged --raw files' machines."""
    found: dict[str, list[str]] = {}
    for pool, per in res.items():
        src = per.get("_source")
        key = (f"Command: {src['command']}\n\n{src['machine'].rstrip()}" if src else
               f"Command: {command()}\n\n{machine().rstrip()}")
        found.setdefault(key, []).append(pool)
    return [f"Pools {', '.join(pools)}:\n\n{key}\n" for key, pools in found.items()]


def signed(d: np.ndarray) -> str:
    """A paired difference: `+mean ± std` over seeds."""
    return f"{d.mean():+.4f} ± {d.std(ddof=1) if len(d) > 1 else 0.0:.4f}"


def suite_report(res: dict[str, dict], seeds: list[int]) -> str:
    sourced = sources(res)
    res = {pool: {n: e for n, e in per.items() if n != "_source"} for pool, per in res.items()}
    aucs = suite_aucs(res)
    pools = list(res)
    ranks = mean_ranks(aucs)
    names = sorted(ranks, key=lambda n: ranks[n])
    names += sorted({n for per in aucs.values() for n in per if not ranked(n)} - {ORACLE})
    if any(ORACLE in per for per in aucs.values()):
        names.append(ORACLE)
    head = "| strategy | mean rank | " + " | ".join(pools) + " |"
    table = [head, "|---|---:|" + "---:|" * len(pools)]
    for n in names:
        cells = []
        for pool in pools:
            v = aucs[pool].get(n)
            top = max((m for m in aucs[pool] if ranked(m)), default=None,
                      key=lambda m: np.mean(aucs[pool][m]))
            star = "**" if n == top else ""
            cells.append(f"{star}{mean_std(v)}{star}" if v is not None else "")
        rank = (f"{ranks[n]:.2f}" if n in ranks else "(bound)" if n == ORACLE
                else "(ablation)")
        table.append(f"| {n} | {rank} | " + " | ".join(cells) + " |")
    diffs = ["| pool | best single | autoal - best single | seeds won | autoal - vote | seeds won "
             "| oracle - best single | search vs oracle: mean per-round Spearman |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for pool in pools:
        per = aucs[pool]
        best = best_single(per)
        if "autoal" not in per or best is None:
            continue
        d_best = np.subtract(per["autoal"], per[best])
        d_vote = np.subtract(per["autoal"], per["vote"]) if "vote" in per else None
        d_orc = (f"{np.mean(per[ORACLE]) - np.mean(per[best]):+.4f}" if ORACLE in per else "")
        corr = [c for run in res[pool]["autoal"]["oracle_corr"] for c in run if np.isfinite(c)]
        diffs.append(
            f"| {pool} | {best} | {signed(d_best)} | {int((d_best > 0).sum())}/{len(d_best)} | "
            + (f"{signed(d_vote)} | {int((d_vote > 0).sum())}/{len(d_vote)}" if d_vote
               is not None else " | ")
            + f" | {d_orc} | {np.mean(corr) if corr else float('nan'):+.3f} ({len(corr)} rounds) |")
    campaigns = "; ".join(f"{p}: init {CAMPAIGNS[p]['init']}, budget {CAMPAIGNS[p]['budget']}, "
                          f"{CAMPAIGNS[p]['rounds']} rounds" if p in CAMPAIGNS else p
                          for p in pools)
    return "\n".join([
        "# Accuracy: the regime suite", "", *sourced,
        "- Device: CPU only (no GPU used); 1 torch thread per campaign, campaigns in parallel "
        "processes",
        f"- Pools (benchmarks/pools.py): {campaigns}; seeds {', '.join(map(str, seeds))} (a "
        "seed fixes the initial labeled set: every strategy starts from the same labels)",
        f"- Candidates (the default pool): {', '.join(DEFAULT_CANDIDATES)}; `vote` = their "
        "plain vote; `albl` = ALBL over them; `oracle` = each round the batch of the "
        "candidate whose *true* gain (head on the round's embeddings, refitted with the "
        "batch, scored on the test split) is largest: the room a strategy-level combiner has, "
        "not a strategy (benchmarks/oracle.py)",
        "- AUC: area under test accuracy vs labeled samples over the labeled range, mean ± "
        "std over seeds; bold = the best strategy of the pool; mean rank over pools by mean "
        "AUC (oracle excluded); per-seed figures in accuracy-suite.parquet", "",
        "## AUC per pool and strategy", "", *table, "",
        "## AutoAL paired by seed, per pool", "", *diffs, "",
        "Search vs oracle: each round of `autoal`, the Spearman correlation between the search's "
        "estimated gains of the candidates and their true gains (the oracle's measure). "
        "Ablations (not ranked): `autoal-argmax` takes the leader's batch every round, on "
        "this round's evidence alone (`switch_se: 0`, `evidence_decay: 0`), `autoal-gain` is "
        "the simulated-acquisition reward (`reward: gain`, the default before the expected "
        "error reduction), `autoal-lossrank` the loss-rank reward (`reward: loss_rank`), all "
        "over the same candidates.", "",
        "![learning curves per pool](accuracy-suite.png)", ""])


def write_suite_parquet(res: dict[str, dict], seeds: list[int], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [(pool, n, s, auc) for pool, per in suite_aucs(res).items() for n, v in per.items()
            for s, auc in zip(seeds, v)]
    pq.write_table(pa.table({"pool": [r[0] for r in rows], "strategy": [r[1] for r in rows],
                             "seed": pa.array([r[2] for r in rows], pa.int64()),
                             "auc": [r[3] for r in rows]}), path)


def plot_suite(res: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(res), figsize=(5 * len(res), 4.5), squeeze=False)
    colors = plt.get_cmap("tab20").colors
    for ax, (pool, per) in zip(axes[0], res.items()):
        for i, (name, r) in enumerate(per.items()):
            bold = name in ("autoal", "vote", ORACLE)
            ax.plot(r["n"], r["acc"].mean(0), marker="o" if bold else ".", color=colors[i % 20],
                    label=name, lw=2.2 if bold else 1.0, ms=3,
                    ls="--" if name == ORACLE else "-" if ranked(name) else ":")
        ax.set_title(pool)
        ax.set_xlabel("labeled samples")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test accuracy (mean over seeds)")
    axes[0, -1].legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_raw(res: dict[str, dict], path: Path) -> None:
    """The suite's curves as JSON, so runs on several machines (pools split between them)
    can be merged into one table (`--merge`)."""
    import json

    curves = {pool: {n: {k: np.asarray(v).tolist() if k != "oracle_corr" else v
                         for k, v in e.items()} for n, e in per.items()}
              for pool, per in res.items()}
    path.write_text(json.dumps({"machine": machine(), "command": command(), "pools": curves}))


def load_raw(paths: list[str]) -> dict[str, dict]:
    import json

    res: dict[str, dict] = {}
    for p in paths:
        raw = json.loads(Path(p).read_text())
        for pool, per in raw["pools"].items():
            per["_source"] = {"machine": raw["machine"], "command": raw["command"]}
            res[pool] = {n: e if n == "_source" else
                         {k: np.array(v) if k != "oracle_corr" else v for k, v in e.items()}
                         for n, e in per.items()}
    return {pool: res[pool] for pool in [*SUITE, *sorted(set(res) - set(SUITE))] if pool in res}


def write_suite(res: dict[str, dict], seeds: list[int]) -> str:
    text = suite_report(res, seeds)
    res = {pool: {n: e for n, e in per.items() if n != "_source"} for pool, per in res.items()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_suite_parquet(res, seeds, RESULTS / "accuracy-suite.parquet")
    plot_suite(res, RESULTS / "accuracy-suite.png")
    write_result("accuracy-suite.md", text)
    return text


def suite(strategies: list[str], seeds: list[int], workdir: Path, jobs: int,
          pools: list[str], raw: Path | None = None) -> str:
    """Every pool's campaigns in one process pool; the suite's table and files."""
    tasks, keys = [], []
    for pool in pools:
        overrides = {"dataset": pool_dataset(pool, workdir), **CAMPAIGNS[pool]}
        for name in strategies:
            for s in seeds:
                tasks.append((name, s, overrides, str(workdir / pool / f"{name}-seed{s}")))
                keys.append((pool, name))
    results = run_tasks(tasks, jobs)
    res: dict[str, dict] = {}
    for (pool, name), r in zip(keys, results):
        entry = res.setdefault(pool, {}).setdefault(
            name, {"n": np.array(r["n"]), "acc": [], "seconds": [], "oracle_corr": []})
        entry["acc"].append(r["acc"])
        entry["seconds"].append(r["seconds"])
        entry["oracle_corr"].append(r["oracle_corr"])
    for per in res.values():
        for entry in per.values():
            entry["acc"] = np.array(entry["acc"])
            entry["seconds"] = np.array(entry["seconds"])
    if raw is not None:
        save_raw(res, raw)
    return write_suite(res, seeds)


def main() -> None:
    defaults = Config()
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=HelpFormatter)
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
    p.add_argument("--suite", action="store_true",
                   help=f"every pool of the regime suite ({', '.join(SUITE)}) with its own "
                   "campaign; writes accuracy-suite.md/.parquet/.png (strategies default: "
                   f"{','.join(SUITE_STRATEGIES)})")
    p.add_argument("--pools", default=",".join(SUITE), help="with --suite: the pools to run")
    p.add_argument("--raw", help="with --suite: also save the curves as JSON here")
    p.add_argument("--merge", help="comma-separated --raw files (pools run on several "
                   "machines): write the suite's table from them, run nothing")
    p.add_argument("--jobs", type=int, default=1,
                   help="campaigns run in this many processes (one torch thread each)")
    args = p.parse_args()
    unknown = sorted(set(args.pools.split(",")) - set(CAMPAIGNS))
    if unknown:
        p.error(f"--pools: unknown {', '.join(unknown)}; allowed: {', '.join(CAMPAIGNS)}")
    missing = [f for f in (args.merge or "").split(",") if f and not Path(f).is_file()]
    if missing:
        p.error(f"--merge: no such file {', '.join(missing)}")
    if args.merge:
        print(write_suite(load_raw(args.merge.split(",")), [int(s) for s in args.seeds.split(",")]))
        return
    if args.suite:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="accuracy-suite-"))
        names = (args.strategies if "--strategies" in " ".join(__import__("sys").argv)
                 else ",".join(SUITE_STRATEGIES)).split(",")
        print(machine() + f"command: {command()}\ncampaign run directories: {workdir}",
              flush=True)
        print(suite(names, [int(s) for s in args.seeds.split(",")], workdir, args.jobs,
                    args.pools.split(","), Path(args.raw) if args.raw else None))
        return
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
    res = curves(strategies, seeds, overrides, workdir, args.jobs)
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
