"""Human-facing outputs of a run: the per-round table, curves.png and summary.md."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from autoal_dist import rundir, store
from autoal_dist.autoal.report import WEIGHTS_FILE, plot_autoal_weights


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


def plot_curves(run_dir: Path, rows: list[dict], title: str) -> Path:
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
    path = Path(run_dir) / rundir.CURVES_FILE
    store.write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def write_summary(run_dir: Path, rows: list[dict], config: dict) -> Path:
    n = np.array([r["n_labeled"] for r in rows])
    a = np.array([r["accuracy"] for r in rows])
    lines = [
        f"# Campaign `{Path(run_dir).name}`", "",
        f"- dataset: `{config['dataset']}`, strategy: `{config['strategy']}`, "
        f"seed: {config['seed']}",
        f"- init {config['init']}, budget {config['budget']} per round, {config['rounds']} rounds",
    ]
    if len(rows):
        lines += [f"- final accuracy: **{a[-1]:.4f}** with {n[-1]} labels; "
                  f"area under the learning curve: {learning_curve_auc(n, a):.4f}"]
    lines += ["", "```", format_table(rows), "```", "", "## Config", "", "```json",
              json.dumps(config, indent=2, sort_keys=True), "```", ""]
    path = Path(run_dir) / rundir.SUMMARY_FILE
    store.write_text(path, "\n".join(lines))
    return path


def write_report(run_dir: Path) -> str:
    """(Re)build curves.png, summary.md (and AutoAL's autoal_weights.png) from the run's
    files; return the table."""
    run_dir = Path(run_dir)
    rows = rundir.read_metrics(run_dir)
    config = rundir.read_meta(run_dir, "report")["config"]
    plot_curves(run_dir, rows, f"{config['dataset']} / {config['strategy']}")
    if (run_dir / WEIGHTS_FILE).exists():  # an AutoAL run: its weights per round
        plot_autoal_weights(run_dir)
    write_summary(run_dir, rows, config)
    return format_table(rows)
