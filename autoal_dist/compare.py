"""`autoal-dist report DIR DIR ...`: several runs side by side.

Runs are grouped by strategy (an AutoAL variant, or runs of one strategy whose settings
differ, get a label of their own); per group: the mean test accuracy over seeds against
labeled samples with a ± std band (compare.png), and a markdown table (compare.md) of the
area under the learning curve and the final accuracy, mean ± std over seeds, and the AUC
differences against a baseline strategy, paired by seed. The run directories are only read.

Imports neither torch nor Ray; matplotlib only when plotting.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from autoal_dist import store
from autoal_dist.config import AutoALConfig, flat
from autoal_dist.policies import POLICIES
from autoal_dist.report import learning_curve_auc
from autoal_dist.run import Run, RunDirError
from autoal_dist.run.layout import METRICS_FILE

PLOT_FILE = "compare.png"
TABLE_FILE = "compare.md"
DEFAULT_OUT = "compare"
DEFAULT_BASELINE = "random"
_AUTOAL_DEFAULTS = AutoALConfig()
# Settings that change how a run ran or where, not what it selected: never a variant.
NOT_VARIANTS = {"seed", "name", "out", "shards", "workers", "gpu", "data_root", "dataset",
                "rounds", "preset", "train.threads", "train.eval_batch_size",
                "score.batch_size"}


class CompareError(RunDirError):
    """Runs that cannot be compared as asked; the message is one line."""


@dataclass(frozen=True)
class Curve:
    where: str  # the directory as the user named it (its URI when staged)
    config: dict[str, Any]
    fingerprint: str
    n_labeled: np.ndarray  # per evaluated round, ascending
    accuracy: np.ndarray
    label: str = ""

    @property
    def strategy(self) -> str:
        return str(self.config.get("strategy"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset"))


@dataclass
class Group:
    label: str
    runs: list[Curve]  # by seed
    auc: np.ndarray  # per run
    final: np.ndarray
    mean: np.ndarray  # accuracy per common round, over seeds
    std: np.ndarray  # sample std (zeros for one run)
    diff: np.ndarray | None = None  # paired AUC - baseline's AUC, over the shared seeds
    shared: list[int] = field(default_factory=list)  # the seeds `diff` is over

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]


@dataclass
class Comparison:
    dataset: str
    n_labeled: np.ndarray  # the common labeled-sample grid
    groups: list[Group]  # by mean AUC, best first
    baseline: str
    notes: list[str]


# ---- loading ----------------------------------------------------------------------------

def load_run(run: Run) -> Curve:
    """One run directory's learning curve, read (never written): config.json and
    metrics.parquet."""
    where = run.location
    if not run.dir.is_dir():
        raise CompareError(f"report: {where} is not a directory")
    if not run.exists(METRICS_FILE):
        inside = sorted(p.name for p in run.dir.iterdir() if (p / METRICS_FILE).is_file())
        hint = f" (it holds runs: give them, e.g. {where}/*)" if inside else ""
        raise CompareError(f"report: {where} holds no {METRICS_FILE}{hint}")
    meta = run.meta("report")
    rows = sorted(run.metrics(), key=lambda r: r["round"])
    if not rows:
        raise CompareError(f"report: {where}'s {METRICS_FILE} holds no evaluated round")
    return Curve(where, meta["config"], meta["dataset_fingerprint"],
               np.array([r["n_labeled"] for r in rows], np.int64),
               np.array([r["accuracy"] for r in rows], np.float64))


# ---- labels: strategy, and the settings that tell its variants apart ----------------------


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _relevant(config: dict[str, Any]) -> dict[str, Any]:
    """The flat settings that may make a run of this strategy a different method."""
    strategy = config.get("strategy")
    out = {}
    for key, value in flat(config).items():
        if key in NOT_VARIANTS or key == "strategy":
            continue
        if key.startswith("autoal.") and strategy != "autoal":
            continue
        if key == "candidates" and strategy not in POLICIES:
            continue
        out[key] = value
    return out


def base_label(config: dict[str, Any]) -> str:
    """The strategy; for AutoAL with its mode or reward off the defaults, e.g.
    `autoal (mode: paper)`, `autoal (reward: loss_rank)` (the reward is the embed mode's)."""
    strategy = str(config.get("strategy"))
    if strategy != "autoal":
        return strategy
    autoal = config.get("autoal") or {}
    mode = autoal.get("mode", _AUTOAL_DEFAULTS.mode)
    parts = [] if mode == _AUTOAL_DEFAULTS.mode else [f"mode: {mode}"]
    reward = autoal.get("reward", _AUTOAL_DEFAULTS.reward)
    if mode == "embed" and reward != _AUTOAL_DEFAULTS.reward:
        parts.append(f"reward: {reward}")
    return strategy + (f" ({', '.join(parts)})" if parts else "")


def _key_name(key: str) -> str:
    return key.removeprefix("autoal.")


def labeled(runs: list[Curve]) -> list[Curve]:
    """Each run with its label: `base_label`, plus the settings that differ between runs of
    the same base label (`entropy (train.epochs: 5)`), so that only seeds of one method are
    pooled. Two runs of one label and seed are refused (the same run twice?)."""
    base = [base_label(r.config) for r in runs]
    out = []
    for i, run in enumerate(runs):
        mine = _relevant(run.config)
        peers = [_relevant(runs[j].config) for j in range(len(runs)) if base[j] == base[i]]
        differ = sorted(k for k in set().union(*peers)
                        if len({repr(p.get(k)) for p in peers}) > 1)
        extra = [f"{_key_name(k)}: {_show(mine.get(k))}" for k in differ]
        label = base[i]
        if extra:
            label = (label[:-1] + ", " if label.endswith(")") else label + " (") \
                + ", ".join(extra) + ")"
        out.append(replace(run, label=label))
    seen: dict[tuple[str, int], Curve] = {}
    for run in out:
        other = seen.setdefault((run.label, run.seed), run)
        if other is not run:
            raise CompareError(f"report: {other.where} and {run.where} are both {run.label} "
                               f"seed {run.seed} with the same settings; give one of them")
    return out


# ---- what may be compared ----------------------------------------------------------------

def _data_key(run: Curve) -> tuple[str, str]:
    """The same data: the same fingerprint and the same kind of dataset (a moved npz: or
    pool: file keeps its fingerprint, not its path)."""
    return run.fingerprint, run.dataset.split(":", 1)[0]


def _grid(n: np.ndarray) -> str:
    shown = ", ".join(map(str, n[:6])) + (", ..." if len(n) > 6 else "")
    return f"[{shown}]"


def check_comparable(runs: list[Curve]) -> tuple[int, list[str]]:
    """The number of evaluated rounds all runs share, and notes on what was cut; a
    CompareError (one line naming the directory) for a run on other data or on another
    labeled-sample grid than the rest."""
    keys = Counter(_data_key(r) for r in runs)
    ref_key = max(keys, key=lambda k: (keys[k], -[_data_key(r) for r in runs].index(k)))
    ref = next(r for r in runs if _data_key(r) == ref_key)
    for run in runs:
        if _data_key(run) != ref_key:
            what = (f"dataset {run.dataset!r}, not {ref.dataset!r} as {ref.where}"
                    if run.dataset != ref.dataset else
                    f"other data under the name {run.dataset!r} than {ref.where} (the "
                    "dataset fingerprints differ)")
            raise CompareError(f"report: {run.where} ran on {what}; runs on different datasets "
                               "cannot be compared")

    def agrees(a: Curve, b: Curve) -> bool:
        k = min(len(a.n_labeled), len(b.n_labeled))
        return bool(np.array_equal(a.n_labeled[:k], b.n_labeled[:k]))

    votes = [sum(agrees(a, b) for b in runs) for a in runs]
    ref = max(runs, key=lambda a: (votes[runs.index(a)], len(a.n_labeled), -runs.index(a)))
    for run in runs:
        if not agrees(run, ref):
            k = next(i for i in range(min(len(run.n_labeled), len(ref.n_labeled)))
                     if run.n_labeled[i] != ref.n_labeled[i])
            raise CompareError(
                f"report: {run.where} had {run.n_labeled[k]} labeled samples after round {k}, "
                f"{ref.where} {ref.n_labeled[k]} (labeled per round: {_grid(run.n_labeled)} vs "
                f"{_grid(ref.n_labeled)}); runs with a different init or budget cannot be "
                "compared")
    common = min(len(r.n_labeled) for r in runs)
    notes = []
    longest = max(runs, key=lambda r: len(r.n_labeled))
    if len(longest.n_labeled) > common:
        short = [r.where for r in runs if len(r.n_labeled) == common]
        names = ", ".join(short[:3]) + (f" and {len(short) - 3} more" if len(short) > 3 else "")
        notes.append(f"Compared over the {common} evaluated rounds every run has (up to "
                     f"{ref.n_labeled[common - 1]} labeled samples): {names} stop"
                     f"{'s' if len(short) == 1 else ''} there; the later rounds of the longer "
                     f"runs (up to {len(longest.n_labeled)} evaluated rounds, "
                     f"{longest.n_labeled[-1]} labeled) are left out.")
    return common, notes


# ---- the comparison ----------------------------------------------------------------------

def _std(values: np.ndarray) -> np.ndarray:
    """Sample std over seeds (axis 0); zeros for one seed."""
    values = np.asarray(values, np.float64)
    return values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1:])


def pick_baseline(labels: list[str], asked: str | None) -> str:
    """`asked` (a label, or a strategy with one label); by default random if it ran, else the
    first label alphabetically."""
    if asked is None:
        return DEFAULT_BASELINE if DEFAULT_BASELINE in labels else sorted(labels)[0]
    if asked in labels:
        return asked
    matches = [label for label in labels if label.split(" (")[0] == asked]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CompareError(f"report: --baseline {asked!r} names several variants: "
                           f"{', '.join(repr(m) for m in sorted(matches))}; give one of them")
    raise CompareError(f"report: --baseline {asked!r}: no run of that strategy; the runs are "
                       f"{', '.join(repr(label) for label in sorted(labels))}")


def compare(runs: list[Curve], baseline: str | None = None) -> Comparison:
    """Label, check and group `runs`; AUC and final accuracy per run over the common rounds;
    paired AUC differences against the baseline."""
    if not runs:
        raise CompareError("report: no run directories to compare")
    runs = labeled(runs)
    common, notes = check_comparable(runs)
    n = runs[0].n_labeled[:common]
    by_label: dict[str, list[Curve]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    groups = []
    for label, members in by_label.items():
        members = sorted(members, key=lambda r: r.seed)
        acc = np.stack([r.accuracy[:common] for r in members])
        groups.append(Group(label, members, np.array([learning_curve_auc(n, a) for a in acc]),
                            acc[:, -1], acc.mean(0), _std(acc)))
    base_label = pick_baseline(list(by_label), baseline)
    base = next(g for g in groups if g.label == base_label)
    base_auc = dict(zip(base.seeds, base.auc))
    for g in groups:
        if g is base:
            continue
        g.shared = [s for s in g.seeds if s in base_auc]
        mine = dict(zip(g.seeds, g.auc))
        g.diff = np.array([mine[s] - base_auc[s] for s in g.shared])
    groups.sort(key=lambda g: (-g.auc.mean(), g.label))
    return Comparison(runs[0].dataset, n, groups, base_label, notes)


# ---- the markdown --------------------------------------------------------------------------

def _mean_std(values: np.ndarray, signed: bool = False) -> str:
    mean = f"{values.mean():+.4f}" if signed else f"{values.mean():.4f}"
    return mean if len(values) < 2 else f"{mean} ± {_std(values):.4f}"


def table(comp: Comparison) -> str:
    """The markdown table: one row per strategy (best mean AUC first)."""
    lines = [f"| strategy | runs | seeds | AUC | final accuracy | AUC − {comp.baseline} "
             "(paired by seed) | seeds won |", "|---|---:|---|---|---|---|---:|"]
    for g in comp.groups:
        if g.diff is None:
            paired, won = "(baseline)", ""
        elif not len(g.diff):
            paired, won = "no shared seed", ""
        else:
            paired = _mean_std(g.diff, signed=True)
            won = f"{int((g.diff > 0).sum())}/{len(g.diff)}"
        lines.append(f"| {g.label} | {len(g.runs)} | {', '.join(map(str, g.seeds))} | "
                     f"{_mean_std(g.auc)} | {_mean_std(g.final)} | {paired} | {won} |")
    return "\n".join(lines)


def explanation(comp: Comparison) -> list[str]:
    n = comp.n_labeled
    return [
        f"- AUC: area under test accuracy vs labeled samples from {n[0]} to {n[-1]} labeled "
        f"({len(n)} evaluated rounds), divided by that range (in [0, 1]); final accuracy: at "
        f"{n[-1]} labeled. Mean ± sample std over the seeds (no ± for one seed).",
        f"- AUC − {comp.baseline}: the AUC difference against the baseline seed by seed (the "
        "same seed starts from the same initial labels), mean ± std over the seeds both have; "
        "seeds won: how many of those differences are above 0.",
        *(f"- {note}" for note in comp.notes),
    ]


def markdown(comp: Comparison) -> str:
    runs = sum(len(g.runs) for g in comp.groups)
    header = " | ".join(str(v) for v in comp.n_labeled)
    lines = [f"# {comp.dataset}: {len(comp.groups)} strategies, {runs} runs", "",
             table(comp), "", *explanation(comp), "",
             "## Mean test accuracy per round (columns: labeled samples)", "",
             f"| strategy | {header} |", "|---|" + "---:|" * len(comp.n_labeled)]
    for g in comp.groups:
        lines.append(f"| {g.label} | " + " | ".join(f"{v:.4f}" for v in g.mean) + " |")
    lines += ["", "## Runs", "", "| strategy | seed | run directory | AUC | final accuracy |",
              "|---|---:|---|---:|---:|"]
    for g in comp.groups:
        for run, auc, final in zip(g.runs, g.auc, g.final):
            lines.append(f"| {g.label} | {run.seed} | `{run.where}` | {auc:.4f} | {final:.4f} |")
    return "\n".join(lines) + "\n"


# ---- the plot ------------------------------------------------------------------------------

def plot(comp: Comparison, path: Path) -> Path:
    """Mean test accuracy vs labeled samples per strategy, a ± std band over seeds (none for
    one seed); the baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    cmap = plt.get_cmap("tab10" if len(comp.groups) <= 10 else "tab20")
    n = comp.n_labeled
    order = sorted(g.label for g in comp.groups)  # colors by name: stable across comparisons
    for g in comp.groups:  # the legend in the table's order: best mean AUC first
        color = cmap(order.index(g.label) % cmap.N)
        seeds = f"{len(g.runs)} seed{'s' if len(g.runs) > 1 else ''}"
        ax.plot(n, g.mean, "--" if g.label == comp.baseline else "-", marker="o", ms=4,
                color=color, lw=1.8, label=f"{g.label} ({seeds}, AUC {g.auc.mean():.3f})")
        if len(g.runs) > 1:
            ax.fill_between(n, g.mean - g.std, g.mean + g.std, color=color, lw=0,
                            alpha=0.15 if len(comp.groups) <= 4 else 0.08)
    if len(n) <= 12:  # few rounds: a tick at each evaluated round's labeled count
        ax.set_xticks(n)
    ax.set_xlabel("labeled samples")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_title(f"{comp.dataset}: learning curves, baseline {comp.baseline} (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    store.write_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return Path(path)


def write(comp: Comparison, out: Path) -> list[Path]:
    """compare.md and compare.png in `out` (created if needed)."""
    out = Path(out)
    md = out / TABLE_FILE
    store.write_text(md, markdown(comp))
    return [md, plot(comp, out / PLOT_FILE)]
