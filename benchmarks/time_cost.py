"""Time cost per round (the paper's Table 2 form): each candidate alone, ALBL and AutoAL vs Entropy.

One harness per round and labeled-set size: the classifier is trained once (every
strategy trains the same classifier on the same labeled set, so the train column is
shared), then
  - each candidate alone: its own scoring pass + its selection. Candidates with the
    same needs (probs; mc_probs; embeddings) run the identical pass, so it is timed
    once per needs group and charged to each of them;
  - ALBL, vote and AutoAL: their round policies, exactly as a campaign calls them (one
    pass for all candidates; AutoAL adds its search): `autoal` is the default mode
    (the expected-error-reduction reward: f embeds L, the candidates' batches and a
    sample of U, then label draws of head refits), `autoal-paper` the paper's
    per-sample CNN SearchNet.
Reports train / score / search / select seconds per round, the total as a ratio to
Entropy's (the paper: AutoAL 2.95x-6.54x Entropy with 7 candidates) and the search
share of AutoAL's time. Labeled sets are random of the round's size (init + r * b):
timing does not depend on which samples are labeled.

Datasets: `digits` (the `autoal-dist run` defaults, every round) and a synthetic
TinyImageNet-shaped pool (64x64x3, 200 classes, ResNet-18). On CPU the latter runs at
a small N, one round and cut-down training/search, and the results file projects the
round to the paper's scale from the measured unit costs (formula in the file).

    python benchmarks/time_cost.py                      # digits (8 rounds) + tiny N=2000
    python benchmarks/time_cost.py --tiny-n 100000 --tiny-epochs 40 \\
        --tiny-autoal-iters 400,200 --gpu
    python benchmarks/time_cost.py --quick              # digits, 1 round, no results file
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autoal_dist.albl.policy import albl_policy
from autoal_dist.autoal.gain import base_min_steps
from autoal_dist.autoal.policy import autoal_policy, vote_policy
from autoal_dist.campaign import Campaign, initial_ids, start_journal
from autoal_dist.config import DEFAULT_CANDIDATES, Config, TrainConfig
from autoal_dist.data import Dataset
from autoal_dist.rounds import RoundContext
from autoal_dist.run import Run
from autoal_dist.scoring import selection_from_outputs
from autoal_dist.seeds import derive
from autoal_dist.strategies import needs_of
from autoal_dist.training.loop import num_steps
from common import HelpFormatter, command, load_average, machine, opened_campaign, write_result

COLUMNS = ("train_s", "score_s", "search_s", "select_s")
TARGET_N = 100_000  # TinyImageNet's train pool
TARGET_L = 2_000  # the paper recipe's initial labeled set
PAPER_ITERS: dict[str, dict[str, int]] = {}  # dataset -> paper-mode iterations (cut on CPU)
SIM_TRAIN_S: dict[str, list[float]] = {}  # dataset -> per round, seconds `autoal` trained f_B
WARM_UP_S: dict[str, list[list[float]]] = {}  # dataset -> per round, the untimed passes' seconds
SETTLED = 0.05  # warm-up ends when a pass is within 5% of the one before
WARM_UP_MAX = 5  # passes at most


def warm_up(one_pass) -> list[float]:
    """Run `one_pass` (untimed for the table) until its time settles: at least 2 passes, at
    most WARM_UP_MAX, stopping at the first within SETTLED of the pass before. Returns
    their seconds."""
    times: list[float] = []
    while len(times) < WARM_UP_MAX:
        t0 = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t0)
        if len(times) >= 2 and abs(times[-1] - times[-2]) <= SETTLED * times[-2]:
            break
    return times


@dataclass
class Setting:
    """One dataset's campaign settings for the harness."""

    title: str
    overrides: dict
    rounds: int
    notes: list[str] = field(default_factory=list)


def round_costs(camp: Campaign, labeled: np.ndarray, round_: int) -> dict[str, dict[str, float]]:
    """Seconds per phase of one round, per strategy (see the module docstring)."""
    cfg, data = camp.cfg, camp.data
    t0 = time.perf_counter()
    model = camp.train(labeled, round_)
    train_s = time.perf_counter() - t0
    unlabeled = np.setdiff1d(np.arange(len(data.train_y)), labeled)
    seed = derive(cfg.seed, round_, "select")
    costs: dict[str, dict[str, float]] = {}
    # Untimed passes first, until the pass time settles (at most WARM_UP_MAX), recorded in the
    # results file: at the TinyImageNet shape the round's first passes ran slower than its
    # later identical ones (AutoAL's, the first timed, 92.6 s against 70.0 s for the vote's),
    # and the recorded passes show whether more of them absorb that (they did not: 95, 101,
    # 103 s, then AutoAL's 102.8 s, the vote's 67.6 s; the results file's note).
    WARM_UP_S.setdefault(cfg.dataset, []).append(warm_up(
        lambda: camp.scorer.outputs(model, unlabeled, list(cfg.candidates), seed, labeled)))
    # Policies first: in a separate check a pass right after network training ran ~5%
    # faster (likely allocator state), so every timed pass runs after AutoAL's training.
    paper = dataclasses.replace(cfg, autoal=dataclasses.replace(cfg.autoal, mode="paper",
                                                                **PAPER_ITERS.get(cfg.dataset, {})))
    sim_train = SIM_TRAIN_S.setdefault(cfg.dataset, [])

    def timed_fit(ids: np.ndarray, seed: int, name: str, *, min_steps: int | None = None):
        t = time.perf_counter()
        model = camp.fit(ids, seed, name, min_steps=min_steps)
        sim_train.append(time.perf_counter() - t)
        return model

    for name, policy, pcfg in (("autoal", autoal_policy, cfg),
                               ("autoal-paper", autoal_policy, paper),
                               ("vote", vote_policy, cfg), ("albl", albl_policy, cfg)):
        scratch = Run.at(camp.directory.dir / name)  # the policy's own files, inside the run
        scratch.dir.mkdir(parents=True, exist_ok=True)
        ctx = RoundContext(pcfg, data, camp.normalize, model, camp.scorer, round_, labeled,
                           unlabeled, camp.device, scratch, fit=timed_fit)
        start_journal(pcfg, scratch, len(data.train_y))  # the gain reward reads round 0
        policy(ctx)
        costs[name] = {"train_s": train_s, **{c: ctx.timings.get(c, 0.0) for c in COLUMNS[1:]}}
    passes: dict[frozenset, tuple] = {}
    for name in dict.fromkeys([*cfg.candidates, "entropy"]):  # entropy: the ratios' base
        needs = needs_of([name])
        if needs not in passes:
            t0 = time.perf_counter()
            out = camp.scorer.outputs(model, unlabeled, [name], seed, labeled)
            passes[needs] = (out, time.perf_counter() - t0)
        out, score_s = passes[needs]
        t0 = time.perf_counter()
        selection_from_outputs(out, name, cfg.budget, seed, cfg.score.batch_size)
        costs[name] = {"train_s": train_s, "score_s": score_s, "search_s": 0.0,
                       "select_s": time.perf_counter() - t0}
    return costs


def measure(setting: Setting, workdir: Path) -> tuple[Campaign, dict[str, np.ndarray]]:
    """strategy -> [rounds, 4] seconds (COLUMNS), rounds r = 0..R-1 at |L| = init + r b."""
    per_round = []
    with opened_campaign(setting.overrides, workdir) as camp:
        cfg, data = camp.cfg, camp.data
        for r in range(setting.rounds):
            labeled = initial_ids(len(data.train_y), cfg.init + r * cfg.budget,
                                  derive(cfg.seed, 0, "init"))
            costs = round_costs(camp, labeled, r)
            per_round.append(costs)
            print(f"{setting.title} round {r}: " + ", ".join(
                f"{n} {sum(c.values()):.1f}s" for n, c in costs.items()), flush=True)
    return camp, {n: np.array([[c[n][k] for k in COLUMNS] for c in per_round])
                       for n in per_round[0]}


def table(res: dict[str, np.ndarray]) -> str:
    """Mean seconds per round and the ratio of totals to Entropy's, AutoAL's search share."""
    base = res["entropy"].mean(0).sum()
    lines = ["| strategy | train s | score s | search s | select s | total s/round | "
             "ratio to Entropy |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, t in sorted(res.items(), key=lambda kv: kv[1].mean(0).sum()):
        m = t.mean(0)
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in m)
                     + f" | {m.sum():.2f} | **{m.sum() / base:.2f}x** |")
    lines.append("")
    for name in ("autoal", "autoal-paper"):
        a = res[name].mean(0)
        lines.append(f"- `{name}` / Entropy = **{a.sum() / base:.2f}x**; search share of its "
                     f"round = **{a[2] / a.sum():.1%}**; its one scoring pass for "
                     f"{len(DEFAULT_CANDIDATES)} candidates = {a[1]:.2f} s vs Entropy's "
                     f"{res['entropy'].mean(0)[1]:.2f} s.")
    return "\n".join(lines)


def f_b_steps(labeled: int, t: TrainConfig) -> int:
    """Steps of AutoAL's f_B at |L| = labeled: half of L, its step floor scaled alike."""
    half = max(1, labeled // 2)
    return num_steps(half, dataclasses.replace(
        t, min_steps=base_min_steps(t.min_steps, half, labeled)))


def projection(cfg: Config, data: Dataset, res: dict[str, np.ndarray]) -> str:
    """Scale the measured tiny round to N = TARGET_N and the default training/search.

    t_round(N) = t_step * S + t_search + (c_score + c_select) * N, with the measured
    per-step and per-pool-sample costs; S is the default's at |L| = TARGET_L (the training
    and f_B's are projected at the same |L|). t_search: `autoal-paper`
    per iteration times the default iterations; `autoal`: with reward gain, f_B's training
    per step times the default's steps on TARGET_L / 2 rows; plus the rest (reward eer: all
    of its search; passes over L, the batches and a sample of U, head fits on |L| + b rows)
    scaled linearly from the measured |L| (for eer an upper bound: only L grows).
    """
    d, t = Config(), cfg.train
    measured = t
    full = dataclasses.replace(t, epochs=d.train.epochs, min_steps=d.train.min_steps)
    steps, steps_full = num_steps(cfg.init, measured), num_steps(TARGET_L, full)
    cut = PAPER_ITERS.get(cfg.dataset, {})
    iters = cut.get("search_iters", d.autoal.search_iters) + cut.get(
        "fitnet_pretrain_iters", d.autoal.fitnet_pretrain_iters)
    iters_full = d.autoal.search_iters + d.autoal.fitnet_pretrain_iters
    n_u = len(data.train_y) - cfg.init
    rows = ["| strategy | per pool sample: score + select ms | projected s/round at N = "
            f"{TARGET_N:,} | ratio to Entropy |", "|---|---:|---:|---:|"]
    proj = {}
    for name, tt in res.items():
        train_s, score_s, search_s, select_s = tt.mean(0)
        per_sample = (score_s + select_s) / n_u
        if name == "autoal":
            fits = SIM_TRAIN_S.get(cfg.dataset) or [0.0]  # reward eer trains no f_B
            fb_s = float(np.mean(fits))
            fb_steps = f_b_steps(cfg.init, measured)
            search_full = (fb_s / fb_steps * f_b_steps(TARGET_L, full)
                           + (search_s - fb_s) * TARGET_L / cfg.init)
        else:
            search_full = search_s / iters * iters_full if iters else 0.0
        proj[name] = (train_s / steps * steps_full + search_full + per_sample * TARGET_N,
                      per_sample)
    for name, (total, per_sample) in sorted(proj.items(), key=lambda kv: kv[1][0]):
        rows.append(f"| {name} | {per_sample * 1e3:.2f} | {total:,.0f} | "
                    f"{total / proj['entropy'][0]:.2f}x |")
    return "\n".join([
        f"Measured at N = {len(data.train_y):,} ({n_u:,} unlabeled), |L| = {cfg.init}, "
        f"{steps} training steps; `autoal-paper` ran {iters} search + pre-fit iterations, "
        "`autoal` its defaults. Projection: "
        f"t_round(N) = t_step * S + t_search + (c_score + c_select) * N with the measured "
        f"t_step = train_s / {steps} and c = seconds per unlabeled sample; "
        f"S = {steps_full} (default epochs {d.train.epochs} at |L| = {TARGET_L:,}, the paper "
        "recipe's initial set, the |L| f_B's half is taken of too); t_search "
        f"of `autoal-paper` = its search_s / {iters} x {iters_full} default iterations (an "
        "upper bound: it also carries the fixed L_search pass), of `autoal` = its search_s "
        f"x {TARGET_L:,} / {cfg.init} (reward eer trains no second model: the outputs of "
        "L, of the candidates' batches and of a sample of U read back from the scoring pass, "
        "head fits on [|L| + b, D]; linear in |L|, an upper bound, since the "
        "batches and the sample do not grow with L; with reward gain "
        f"f_B's training is projected apart, per step x its steps on {TARGET_L // 2:,} rows). "
        "Linear in N for the pass; k-means' selection grows faster "
        "(N x b per Lloyd pass), so its row is a lower bound.", "",
        *rows])


def warm_up_note(rounds: list[list[float]]) -> str:
    """The untimed passes before each round's timed ones: whether the pass time settled."""
    shown = "; ".join(", ".join(f"{t:.2f}" for t in r) for r in rounds[:3])
    more = f" (first 3 of {len(rounds)} rounds)" if len(rounds) > 3 else ""
    return (f"Untimed warm-up passes over the pool for all candidates before each round's timed "
            f"ones, until one is within {SETTLED:.0%} of the one before (at most "
            f"{WARM_UP_MAX}), s: {shown}{more}.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--digits-rounds", type=int, default=Config().rounds,
                   help="digits rounds measured (|L| = init + r b)")
    p.add_argument("--tiny-n", type=int, default=2000, help="synthetic TinyImageNet pool size")
    p.add_argument("--tiny-rounds", type=int, default=1)
    p.add_argument("--tiny-init", type=int, default=200, help=">= 200 classes")
    p.add_argument("--tiny-budget", type=int, default=100)
    p.add_argument("--tiny-epochs", type=int, default=1,
                   help="classifier epochs on the tiny pool (CPU: 1; default config: 40)")
    p.add_argument("--tiny-autoal-iters", default="2,2", metavar="SEARCH,PRETRAIN",
                   help="autoal-paper's iterations on the tiny pool (CPU: 2,2; default config: "
                        "400,200); the default mode always runs its defaults")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--quick", action="store_true", help="digits, 1 round; no results file")
    args = p.parse_args()
    search_iters, pretrain_iters = (int(v) for v in args.tiny_autoal_iters.split(","))
    tiny = f"synthetic:tinyimagenet,n={args.tiny_n},test=100"
    PAPER_ITERS[tiny] = {"search_iters": search_iters, "fitnet_pretrain_iters": pretrain_iters}
    settings = [Setting("digits", {"gpu": args.gpu}, 1 if args.quick else args.digits_rounds,
                        ["`autoal-dist run` defaults"])]
    if not args.quick:
        settings.append(Setting(
            "tinyimagenet-shaped", {
                "dataset": tiny,
                "init": args.tiny_init, "budget": args.tiny_budget, "rounds": args.tiny_rounds,
                "gpu": args.gpu, "train": {"epochs": args.tiny_epochs, "min_steps": 0}},
            args.tiny_rounds,
            [f"training cut to {args.tiny_epochs} epoch(s), min_steps 0; `autoal-paper` "
             f"{search_iters} search + {pretrain_iters} pre-fit iterations (CPU), `autoal` "
             "its defaults"]))
    print(machine() + f"command: {command()}", flush=True)
    sections = []
    for s in settings:
        before = load_average()
        camp, res = measure(s, Path(tempfile.mkdtemp(prefix=f"time_cost-{s.title}-")))
        cfg, data = camp.cfg, camp.data
        text = [f"## {s.title}: `{cfg.dataset}`", "",
                f"Pool {len(data.train_y):,} x {data.input_shape}, {data.num_classes} classes, "
                f"model {camp.spec.name}; init {cfg.init}, b = {cfg.budget}, "
                f"{s.rounds} round(s) measured (mean per round); {'; '.join(s.notes)}; "
                f"{'GPU' if cfg.gpu else 'CPU'}, {cfg.train.threads} torch thread(s). Load average "
                f"(1/5/15 min) before: {before}, after: {load_average()}: other work on the "
                "shared cores inflates wall times unevenly, so compare rows measured together.",
                "",
                table(res), "", warm_up_note(WARM_UP_S.get(cfg.dataset, [])), ""]
        if s.title != "digits":
            text += ["### Projection to the paper's scale", "", projection(cfg, data, res), ""]
        sections.append("\n".join(text))
        print("\n" + sections[-1], flush=True)
    out = "\n".join(["# Time cost per round (paper Table 2 form)", "", f"Command: {command()}",
                     "", machine().rstrip(), "", *sections])
    if not args.quick:
        print(f"wrote {write_result('time_cost.md', out)}")


if __name__ == "__main__":
    main()
