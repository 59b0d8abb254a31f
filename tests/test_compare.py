"""`autoal-dist report DIR DIR ...`: runs compared by strategy over seeds (compare.py), on
run directories written by hand (config.json, metrics.parquet, a journal): no training.
Also autoal_weights.png's figure on small hand-made search tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autoal_dist import compare, store
from autoal_dist.cli import main
from autoal_dist.config import Config
from autoal_dist.report import format_table
from autoal_dist.run import Run, layout
from conftest import fails_cleanly, snapshot

INIT = BUDGET = 20
POOL, TEST = 300, 50


def make_run(path, strategy, seed, accuracy, dataset="digits", fingerprint="x", init=INIT,
             budget=BUDGET, **autoal):
    """A run directory as a campaign leaves it: config.json, pool.parquet, one journal file
    and one metrics row per accuracy (round r: init + r * budget labeled)."""
    cfg = Config(dataset=dataset, strategy=strategy, seed=seed, init=init, budget=budget,
                 rounds=len(accuracy) - 1).to_dict()
    cfg["autoal"].update(autoal)
    Run.at(path).write_meta({"config": cfg, "dataset_fingerprint": fingerprint,
                             "num_classes": 10})
    store.write_table(path / layout.POOL_FILE,
                      layout.pool_table(np.zeros(POOL, np.int64), np.zeros(TEST, np.int64)))
    rows, start = [], 0
    for r, acc in enumerate(accuracy):
        size = init if r == 0 else budget
        Run.at(path).write_round(r, np.arange(start, start + size), strategy)
        start += size
        rows.append(layout.metrics_row(r, start, acc, strategy, {"train_s": 1.0}))
    Run.at(path).write_metrics(rows)
    return path


def auc(acc, init=INIT, budget=BUDGET):
    """Trapezoids over the labeled counts, divided by the range: by hand."""
    n = [init + r * budget for r in range(len(acc))]
    area = sum((acc[i] + acc[i + 1]) / 2 * (n[i + 1] - n[i]) for i in range(len(acc) - 1))
    return area / (n[-1] - n[0])


CURVES = {  # strategy -> seed -> accuracy per round
    "entropy": {0: [0.5, 0.7, 0.8], 1: [0.6, 0.7, 0.9], 2: [0.5, 0.6, 0.7]},
    "random": {0: [0.5, 0.6, 0.7], 1: [0.6, 0.6, 0.8], 2: [0.5, 0.7, 0.8]},
    "margin": {0: [0.5, 0.8, 0.9], 1: [0.6, 0.8, 0.9]},
}


@pytest.fixture
def runs(tmp_path):
    out = []
    for strategy, seeds in CURVES.items():
        for seed, acc in seeds.items():
            out.append(make_run(tmp_path / "runs" / f"{strategy}-seed{seed}", strategy, seed,
                                acc))
    return out


def loaded(paths, baseline=None):
    return compare.compare([compare.load_run(Run.at(p)) for p in paths], baseline)


def group(comp, label):
    return next(g for g in comp.groups if g.label == label)


def test_runs_are_grouped_by_strategy_over_seeds(runs):
    comp = loaded(runs)
    assert sorted(g.label for g in comp.groups) == ["entropy", "margin", "random"]
    assert group(comp, "entropy").seeds == [0, 1, 2]
    assert group(comp, "margin").seeds == [0, 1]
    assert comp.n_labeled.tolist() == [20, 40, 60]
    np.testing.assert_allclose(group(comp, "entropy").mean, [16 / 30, 2 / 3, 0.8])
    assert [g.label for g in comp.groups] == ["margin", "entropy", "random"]  # best AUC first


def test_auc_and_final_accuracy_against_a_hand_computation(runs):
    comp = loaded(runs)
    entropy = [auc(a) for a in CURVES["entropy"].values()]
    assert entropy[0] == pytest.approx(0.675)  # 20 * (0.6 + 0.75) / 40
    np.testing.assert_allclose(group(comp, "entropy").auc, entropy)
    np.testing.assert_allclose(group(comp, "entropy").final, [0.8, 0.9, 0.7])
    row = next(line for line in compare.table(comp).splitlines() if line.startswith("| entropy"))
    assert f"{np.mean(entropy):.4f} ± {np.std(entropy, ddof=1):.4f}" in row
    assert "0.8000 ± 0.1000" in row  # final accuracy: 0.8, 0.9, 0.7


def test_paired_differences_and_seeds_won(runs, tmp_path):
    extra = make_run(tmp_path / "runs" / "margin-seed7", "margin", 7, [0.5, 0.5, 0.5])
    comp = loaded([*runs, extra])
    d = [auc(CURVES["entropy"][s]) - auc(CURVES["random"][s]) for s in (0, 1, 2)]
    np.testing.assert_allclose(group(comp, "entropy").diff, d)
    assert sum(v > 0 for v in d) == 2  # seeds 0 and 1; seed 2 lost
    row = next(line for line in compare.table(comp).splitlines() if line.startswith("| entropy"))
    assert row.endswith("| 2/3 |")
    assert f"{np.mean(d):+.4f} ± {np.std(d, ddof=1):.4f}" in row
    margin = group(comp, "margin")  # seed 7 has no random run: paired over seeds 0 and 1
    assert margin.seeds == [0, 1, 7] and margin.shared == [0, 1]
    assert next(line for line in compare.table(comp).splitlines()
                if line.startswith("| margin")).endswith("| 2/2 |")
    assert group(comp, "random").diff is None  # the baseline


def test_the_baseline_is_random_else_the_first_by_name_or_the_one_asked(runs):
    assert loaded(runs).baseline == "random"
    assert loaded([r for r in runs if "random" not in r.name]).baseline == "entropy"
    comp = loaded(runs, baseline="margin")
    assert comp.baseline == "margin" and group(comp, "margin").diff is None
    assert "AUC − margin" in compare.table(comp)
    with pytest.raises(compare.CompareError, match="no run of that strategy"):
        loaded(runs, baseline="badge")


def test_autoal_variants_are_told_apart(tmp_path):
    paths = [make_run(tmp_path / "a", "autoal", 0, [0.5, 0.6]),
             make_run(tmp_path / "b", "autoal", 0, [0.5, 0.7], mode="paper"),
             make_run(tmp_path / "c", "autoal", 0, [0.5, 0.8], reward="loss_rank"),
             make_run(tmp_path / "d", "random", 0, [0.5, 0.6])]
    labels = {g.label for g in loaded(paths).groups}
    assert labels == {"autoal", "autoal (mode: paper)", "autoal (reward: loss_rank)", "random"}
    # --baseline autoal is the plain one (an exact label before a strategy's variants)
    assert loaded(paths, baseline="autoal").baseline == "autoal"


def test_other_settings_within_a_strategy_become_part_of_its_label(tmp_path):
    a = make_run(tmp_path / "a", "entropy", 0, [0.5, 0.6])
    b = make_run(tmp_path / "b", "entropy", 0, [0.5, 0.7])
    meta = Run.at(b).meta("t")
    meta["config"]["train"]["epochs"] = 5
    Run.at(b).write_meta(meta)
    assert sorted(g.label for g in loaded([a, b]).groups) == [
        "entropy (train.epochs: 40)", "entropy (train.epochs: 5)"]


def test_the_same_strategy_and_seed_twice_is_refused(tmp_path):
    a = make_run(tmp_path / "a", "entropy", 0, [0.5, 0.6])
    b = make_run(tmp_path / "b", "entropy", 0, [0.5, 0.7])
    with pytest.raises(compare.CompareError, match="are both entropy seed 0"):
        loaded([a, b])


def test_a_run_with_fewer_rounds_is_compared_over_the_common_rounds(tmp_path):
    long = make_run(tmp_path / "long", "entropy", 0, [0.5, 0.7, 0.8, 0.9])
    short = make_run(tmp_path / "short", "random", 0, [0.5, 0.6])
    comp = loaded([long, short])
    assert comp.n_labeled.tolist() == [20, 40]
    assert group(comp, "entropy").auc[0] == pytest.approx(auc([0.5, 0.7]))
    md = compare.markdown(comp)
    assert "Compared over the 2 evaluated rounds every run has" in md
    assert (f"{short} stops there; the later rounds of the longer runs (up to 4 evaluated "
            "rounds, 80 labeled) are left out") in md


def test_cli_writes_the_table_and_plot_and_leaves_the_runs_alone(runs, tmp_path, capsys):
    before = {p: snapshot(p) for p in runs}
    out = tmp_path / "out" / "cmp"
    assert main(["report", *map(str, runs), "--to", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| strategy | runs | seeds | AUC |" in printed
    assert f"{out / 'compare.md'}, {out / 'compare.png'}" in printed
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "compare.md").read_text()
    assert md.startswith("# digits: 3 strategies, 8 runs")
    assert "| margin | 2 | 0, 1 |" in md
    assert {p: snapshot(p) for p in runs} == before  # read only


def test_cli_default_output_is_compare_in_the_current_directory(runs, tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", *map(str, runs), "--baseline", "entropy"]) == 0
    assert (tmp_path / "compare" / "compare.png").is_file()
    assert "AUC − entropy" in (tmp_path / "compare" / "compare.md").read_text()


def test_cli_refuses_a_directory_that_is_no_run(runs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    fails_cleanly(capsys, ["report", str(runs[0]), str(empty)],
                  f"report: {empty} holds no metrics.parquet")
    fails_cleanly(capsys, ["report", str(runs[0]), str(tmp_path / "nowhere")],
                  f"report: {tmp_path / 'nowhere'} is not a directory")
    fails_cleanly(capsys, ["report", str(tmp_path / "runs"), str(runs[0])],
                  "(it holds runs: give them, e.g.")
    assert not (tmp_path / "compare").exists()


def test_cli_refuses_runs_on_different_datasets_or_grids(runs, tmp_path, capsys):
    other = make_run(tmp_path / "other", "entropy", 9, [0.5, 0.6, 0.7], dataset="synthetic",
                     fingerprint="y")
    err = fails_cleanly(capsys, ["report", *map(str, runs), str(other)],
                        f"report: {other} ran on dataset 'synthetic'")
    assert "different datasets cannot be compared" in err
    same_name = make_run(tmp_path / "same", "entropy", 9, [0.5, 0.6, 0.7], fingerprint="y")
    fails_cleanly(capsys, ["report", *map(str, runs), str(same_name)],
                  "the dataset fingerprints differ")
    budget = make_run(tmp_path / "budget", "entropy", 9, [0.5, 0.6, 0.7], budget=10)
    fails_cleanly(capsys, ["report", *map(str, runs), str(budget)],
                  f"report: {budget} had 30 labeled samples after round 1")
    fails_cleanly(capsys, ["report", *map(str, runs), "--baseline", "badge"],
                  "--baseline 'badge': no run of that strategy")


def test_cli_refuses_an_output_inside_a_run(runs, capsys):
    before = snapshot(runs[0])
    fails_cleanly(capsys, ["report", *map(str, runs), "--to", str(runs[0] / "cmp")],
                  "lies in the run directory")
    assert snapshot(runs[0]) == before


def test_one_directory_is_the_run_report_as_before(runs, tmp_path, capsys):
    assert main(["report", str(runs[0])]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == format_table(Run.at(runs[0]).metrics())
    assert (runs[0] / layout.CURVES_FILE).is_file() and (runs[0] / layout.SUMMARY_FILE).is_file()
    assert not (tmp_path / "compare").exists() and not (runs[0] / "compare.md").exists()


# ---- autoal_weights.png ----------------------------------------------------------------------

def search_rows(mode="embed", reward=np.nan, rounds=(1, 2)):
    rows = []
    for r in rounds:
        for name, w, active in (("margin", 0.3, True), ("badge", 0.25, True),
                                ("kmeans", 0.25, True), ("typiclust", 0.2, True),
                                ("loss_head", 0.0, False)):
            rows.append({"round": r, "mode": mode, "strategy": name, "weight": w + 0.01 * r,
                         "active": active, "soft_count": 9.5, "target_count": 10.0,
                         "reward": reward, "reward_se": 0.01})
    return pd.DataFrame(rows)


def weights_rows(search):
    return search[["round", "strategy", "weight"]].assign(share=0.0)


def test_autoal_weights_figure_drops_inactive_columns_and_has_integer_rounds():
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from autoal_dist.autoal.report import weights_figure

    search = search_rows()
    fig = weights_figure(search, weights_rows(search))
    top, bottom = fig.axes[:2]
    names = [t.get_text() for t in top.get_legend().get_texts()]
    assert names == ["margin", "badge", "kmeans", "typiclust"]  # loss_head: inactive
    assert "not shown: loss_head" in top.get_title()
    assert top.get_ylim()[0] > 0.1  # scaled to the candidates, not pinned at 0
    assert "loss ranks" in top.get_ylabel() and "soft count" in bottom.get_title()
    fig.canvas.draw()
    for ax in fig.axes:
        assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
        assert all(float(t).is_integer() for t in ax.get_xticks())
    xs = {tuple(line.get_xdata()) for line in top.get_lines()[:4]}
    assert len(xs) == 4  # identical weights are offset, not drawn over each other
    plt.close(fig)


def test_autoal_weights_figure_names_the_weight_by_mode_and_hides_empty_panels():
    import matplotlib.pyplot as plt

    from autoal_dist.autoal.report import weights_figure

    search = search_rows(mode="paper").assign(active=True)
    fig = weights_figure(search, weights_rows(search))
    assert fig.axes[0].get_ylabel().startswith("SearchNet weight")
    plt.close(fig)
    search = search_rows(reward=0.02)
    fig = weights_figure(search, weights_rows(search))
    assert "softmax of estimated gain" in fig.axes[0].get_ylabel()
    assert "estimated gain" in fig.axes[1].get_title()
    plt.close(fig)
    search = search_rows().assign(soft_count=np.nan)  # nothing to show below: one panel
    fig = weights_figure(search, weights_rows(search))
    assert len(fig.axes) == 1
    plt.close(fig)
