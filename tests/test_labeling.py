"""Labeling with people: run --oracle files stops at each batch; export, label, import, resume.

With the dataset's true labels typed in by "people", the campaign must be exactly the
simulated-oracle campaign of the same seed: same journal, same accuracies.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from autoal_dist import labeling
from autoal_dist.campaign import Campaign, prepare_data
from autoal_dist.cli import main
from autoal_dist.labeling.export import scale_for
from autoal_dist.registry import load_config
from autoal_dist.run import Run


def fast_config(tmp_path: Path) -> str:
    path = tmp_path / "fast.yaml"
    path.write_text("train: {min_steps: 5}\nscore: {mc_samples: 2}\n")
    return str(path)


def campaign_args(tmp_path: Path) -> list[str]:
    return ["--local", "--quiet", "--init", "20", "--budget", "10", "--rounds", "2", "--epochs",
            "1", "--strategy", "margin", "--seed", "3", "--config", fast_config(tmp_path)]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def label_rows(path: Path, truth: np.ndarray, rows: list[dict]) -> None:
    """What an annotator does: fill in the label column of batch.csv (with the truth here)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "label"])
        w.writerows([r["id"], r["image"], truth[int(r["id"])]] for r in rows)


def check_export(out: Path, run: Path, round_: int, images: np.ndarray, root: Path) -> list[dict]:
    rows = read_csv(out / "batch.csv")
    ids = pq.read_table(Run.at(run).round_path(round_)).column("id").to_pylist()
    assert [int(r["id"]) for r in rows] == ids  # selection order
    assert all(r["label"] == "" and r["image"] == f"images/{r['id']}.png" for r in rows)
    for r in rows[:3]:
        png = np.asarray(Image.open(out / r["image"]))
        k = scale_for(images.shape[1:])  # 8x8 digits shown at 128x128: 16x16 blocks
        assert png.shape == (images.shape[1] * k, images.shape[2] * k) and k == 16
        assert np.array_equal(png[::k, ::k], images[int(r["id"]), ..., 0])  # grayscale, exact
        assert np.array_equal(png, np.kron(png[::k, ::k], np.ones((k, k), png.dtype)))
    tasks = json.loads((out / "label_studio_tasks.json").read_text())
    rel = out.relative_to(root).as_posix()
    assert tasks[0] == {"data": {"image": f"/data/local-files/?d={rel}/images/{ids[0]}.png",
                                 "id": ids[0], "round": round_}}
    assert len(tasks) == len(ids)
    config = (out / "label_studio_config.xml").read_text()
    assert '<Choice value="0"/>' in config and '<Choice value="9"/>' in config
    return rows


def test_people_with_true_labels_reproduce_the_simulated_campaign(tmp_path, capsys):
    args = campaign_args(tmp_path)
    sim, run = tmp_path / "sim", tmp_path / "run"
    assert main(["run", *args, "--out", str(sim)]) == 0
    assert main(["run", *args, "--oracle", "files", "--out", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "round 0 awaits labels: 0 of 20" in printed
    out = labeling.default_export_dir(Run.at(run), 0)
    assert f"autoal-dist export {run} --round 0 --to {out}" in printed
    assert f"autoal-dist run --resume --out {run}" in printed
    assert not (run / "metrics.parquet").exists()  # nothing trained without labels

    truth = Run.at(run).pool().column("label").to_numpy()
    images = prepare_data(load_config(json.loads((run / "config.json").read_text())["config"]))
    for r in range(3):
        out = tmp_path / "exports" / f"round_{r:03d}"
        assert main(["export", str(run), "--to", str(out), "--ls-root", str(tmp_path)]) == 0
        rows = check_export(out, run, r, images.train_x, tmp_path)
        if r == 1:  # a batch labeled in two sittings: the first half alone does not unblock it
            label_rows(out / "half.csv", truth, rows[:5])
            assert main(["import", str(run), "--labels", str(out / "half.csv")]) == 0
            assert main(["run", "--resume", "--out", str(run), "--local", "--quiet"]) == 0
            assert "round 1 awaits labels: 5 of 10" in capsys.readouterr().out
            assert len(pq.read_table(run / "metrics.parquet")) == 1
            again = tmp_path / "again"  # a re-export shows the labels recorded so far
            assert main(["export", str(run), "--to", str(again)]) == 0
            assert [r["label"] for r in read_csv(again / "batch.csv")] == \
                [str(truth[int(r["id"])]) for r in rows[:5]] + [""] * 5
        label_rows(out / "batch.csv", truth, rows)
        assert main(["import", str(run), "--labels", str(out / "batch.csv")]) == 0
        assert main(["import", str(run), "--labels", str(out / "batch.csv")]) == 0  # no-op
        assert main(["run", "--resume", "--out", str(run), "--local", "--quiet"]) == 0

    assert labeling.awaiting_round(Run.at(run)) is None
    assert Run.at(run).journal_rounds() == Run.at(sim).journal_rounds() == [0, 1, 2]
    got, want = Run.at(run).journal().to_pandas(), Run.at(sim).journal().to_pandas()
    assert got.id.tolist() == want.id.tolist()
    assert np.array_equal(got.score, want.score, equal_nan=True)
    m_got, m_want = (pq.read_table(d / "metrics.parquet").to_pylist() for d in (run, sim))
    assert [(m["round"], m["n_labeled"], m["accuracy"]) for m in m_got] == \
        [(m["round"], m["n_labeled"], m["accuracy"]) for m in m_want]
    people = labeling.read_labels(Run.at(run))
    assert sorted(people.column("id").to_pylist()) == Run.at(run).labeled_ids().tolist()
    assert np.array_equal(people.column("label").to_numpy(), truth[people.column("id").to_numpy()])
    assert (run / "summary.md").is_file()


def test_training_sees_only_the_labels_people_gave(tmp_path):
    run = tmp_path / "run"
    assert main(["run", *campaign_args(tmp_path), "--oracle", "files", "--out", str(run)]) == 0
    cfg = load_config(json.loads((run / "config.json").read_text())["config"])
    campaign = Campaign(cfg, Run.at(run), prepare_data(cfg), show_progress=False)
    assert not campaign.reveal_labels(0) and campaign.awaiting == 0

    ids = Run.at(run).journal().column("id").to_numpy()
    wrong = (Run.at(run).pool().column("label").to_numpy()[ids] + 1) % 10  # people disagree
    path = tmp_path / "labels.csv"
    path.write_text("id,label\n" + "".join(f"{i},{y}\n" for i, y in zip(ids, wrong)))
    assert main(["import", str(run), "--labels", str(path)]) == 0
    assert campaign.reveal_labels(0)
    y = campaign.data.train_y
    assert np.array_equal(y[ids], wrong)
    assert (np.delete(y, ids) == labeling.UNLABELED).all()  # unlabeled samples carry no label


def test_flat_features_export_a_csv_of_features(tmp_path, capsys):
    run = tmp_path / "run"
    spec = "synthetic:n=120,test=30,hw=5,c=0,classes=3"
    assert main(["run", "--local", "--quiet", "--dataset", spec, "--init", "6", "--budget", "3",
                 "--rounds", "1", "--oracle", "files", "--out", str(run)]) == 0
    out = tmp_path / "export"
    assert main(["export", str(run), "--round", "0", "--to", str(out)]) == 0
    assert "no images" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["batch.csv"]
    rows = read_csv(out / "batch.csv")
    assert list(rows[0]) == ["id", "label", "f0", "f1", "f2", "f3", "f4"] and len(rows) == 6
    # a filled-in features batch.csv imports as it is (extra columns are ignored)
    truth = Run.at(run).pool().column("label").to_numpy()
    with open(out / "batch.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(rows[0]))
        w.writerows([[r["id"], truth[int(r["id"])], *list(r.values())[2:]] for r in rows])
    assert main(["import", str(run), "--labels", str(out / "batch.csv")]) == 0
    assert labeling.awaiting_round(Run.at(run)) is None
