"""Human-facing outputs of a run: the per-round table, curves.png and summary.md."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from autoal_dist.autoal.report import WEIGHTS_FILE, plot_autoal_weights
from autoal_dist.run import Run
from autoal_dist.run.layout import CURVES_FILE, SUMMARY_FILE


def learning_curve_auc(n_labeled: np.ndarray, accuracy: np.ndarray) -> float:
    """Area under accuracy-vs-labeled, normalized by the labeled range (so it is in [0, 1])."""
    n, a = np.asarray(n_labeled, float), np.asarray(accuracy, float)
    if len(n) < 2 or n[-1] == n[0]:
        return float(a[-1]) if len(a) else float("nan")
    return float(np.trapezoid(a, n) / (n[-1] - n[0]))


def format_table(rows: list[dict]) -> str:
    head = f"{'round':>5}  {'labeled':>7}  {'accuracy':>8}  {'train_s':>7}  {'score_s':>7}  " \
           f"{'search_s':>8}  {'select_s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['round']:>5}  {r['n_labeled']:>7}  {r['accuracy']:>8.4f}  "
                     f"{r['train_s']:>7.1f}  {r['score_s']:>7.2f}  {r['search_s']:>8.2f}  "
                     f"{r['select_s']:>8.2f}")
    return "\n".join(lines)


def plot_curves(run: Run, rows: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["n_labeled"] for r in rows], [r["accuracy"] for r in rows], "o-",
            label=rows[0]["strategy"] if rows else "")
    ax.set_xlabel("labeled samples")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    run.write_with(CURVES_FILE, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def write_summary(run: Run, rows: list[dict], config: dict, stopped: str | None = None) -> None:
    """summary.md; a campaign that has not evaluated every round says so, and why when the
    caller knows (`stopped`: e.g. a Tune trial ASHA stopped)."""
    n = np.array([r["n_labeled"] for r in rows])
    a = np.array([r["accuracy"] for r in rows])
    lines = [
        f"# Campaign `{Path(run.dir).name}`", "",
        f"- dataset: `{config['dataset']}`, strategy: `{config['strategy']}`, "
        f"seed: {config['seed']}",
        f"- init {config['init']}, budget {config['budget']} per round, {config['rounds']} rounds",
    ]
    if len(rows) < config["rounds"] + 1:
        done = f"rounds 0..{len(rows) - 1}" if rows else "no round"
        lines += [f"- **not complete**: {done} of 0..{config['rounds']} evaluated: "
                  + (stopped or "interrupted, awaiting labels, or still running; "
                     "`autoal-dist run --resume` continues it")]
    if len(rows):
        last = "final" if len(rows) == config["rounds"] + 1 else "last"
        lines += [f"- {last} accuracy: **{a[-1]:.4f}** with {n[-1]} labels; "
                  f"area under the learning curve: {learning_curve_auc(n, a):.4f}"]
    lines += ["", "```", format_table(rows), "```", "", "## Config", "", "```json",
              json.dumps(config, indent=2, sort_keys=True), "```", ""]
    run.write_text(SUMMARY_FILE, "\n".join(lines))


def write_report(run: Run, stopped: str | None = None) -> str:
    """(Re)build curves.png, summary.md (and AutoAL's autoal_weights.png) from the run's
    files; return the table. `stopped`: why an incomplete campaign stopped (summary.md)."""
    rows = run.metrics()
    config = run.meta("report")["config"]
    plot_curves(run, rows, f"{config['dataset']} / {config['strategy']}")
    if run.exists(WEIGHTS_FILE):  # an AutoAL run: its weights per round
        plot_autoal_weights(run)
    write_summary(run, rows, config, stopped)
    return format_table(rows)
