"""Bad input corpus: every case is exit code 2, ONE stderr line `autoal-dist: error: ...` naming
the problem, and no change on disk (a fresh --out is not even created; an existing run
directory keeps every byte). Inputs are generated here; nothing needs Ray or training."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoal_dist import labeling
from autoal_dist.cli import main
from autoal_dist.run import Run
from conftest import fails_cleanly, snapshot

# oracle files: a case wrongly accepted stops after choosing the seed set instead of training
RUN = ["run", "--local", "--quiet"]
CAMPAIGN = [*RUN, "--init", "20", "--budget", "10", "--rounds", "2", "--oracle", "files"]


# ---- generated inputs -----------------------------------------------------------------

def write(d: Path, name: str, content: str | bytes) -> str:
    p = d / name
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(p)


def conf(d: Path, text: str) -> str:
    """A config file setting `text` on top of oracle files (see RUN)."""
    return write(d, "c.yaml", "oracle: files\n" + text)


def npz(d: Path, **changes) -> str:
    """A valid MedMNIST-layout npz (2 classes, 8x8 grayscale), with `changes` (None = drop key)."""
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (60, 8, 8), dtype=np.uint8),
              "train_labels": np.arange(60) % 2, "test_images": rng.integers(0, 256, (20, 8, 8),
                                                                            dtype=np.uint8),
              "test_labels": np.arange(20) % 2}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    path = d / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def parquet(d: Path, **columns) -> str:
    """A valid features parquet (2 classes), with columns replaced/added (None = drop)."""
    n = 60
    cols = {"features": [[float(i), float(i % 7)] for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "split": ["train" if i < 45 else "test" for i in range(n)]}
    cols.update(columns)
    path = d / "data.parquet"
    pq.write_table(pa.table({k: v for k, v in cols.items() if v is not None}), path)
    return f"parquet:{path}"


def torch_file(d: Path) -> str:
    """A real PyTorch weights file, of some other network."""
    import torch

    path = d / "other.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, path)
    return str(path)


def tiny_root(d: Path, wnids: bytes) -> str:
    root = d / "tiny"
    (root / "train").mkdir(parents=True)
    (root / "wnids.txt").write_bytes(wnids)
    return str(root)


def stored_pool(d: Path, old: bool = False, **fields) -> str:
    """A stored pool (4 classes, 8x8 grayscale) whose pool.json has `fields` edited after it
    was written; `old`: without its header digest, as a pool an older version wrote."""
    import json

    from autoal_dist.data import load_dataset
    from autoal_dist.data.stored_pool import write_pool

    write_pool(load_dataset("synthetic:n=200,test=40,hw=8,c=1,classes=4"), str(d / "pool"))
    meta = json.loads((d / "pool" / "pool.json").read_text())
    meta.update(fields)
    if old:
        del meta["header_digest"]
    (d / "pool" / "pool.json").write_text(json.dumps(meta))
    return f"pool:{d / 'pool'}"


def features_with(value: float) -> list[list[float]]:
    return [[float(i), value if i == 7 else 1.0] for i in range(60)]


# ---- run with a fresh --out: the directory is never created ----------------------------

Args = Callable[[Path], list[str]]
RUN_CASES: list[tuple[str, Args, str]] = [
    # config values: wrong types, out of range, unknown keys (top level and nested)
    ("type-int", lambda d: ["--config", conf(d, "init: abc\n")], "init: must be an integer"),
    ("type-nested", lambda d: ["--config", conf(d, "train: {epochs: 1.5}\n")],
     "train.epochs"),
    ("type-bool", lambda d: ["--config", conf(d, "gpu: maybe\n")], "gpu"),
    ("type-section", lambda d: ["--config", conf(d, "train: 5\n")], "train: must be a mapping"),
    ("range-budget", lambda d: ["--config", conf(d, "budget: 0\n")], "budget: must be >= 1"),
    ("range-nested", lambda d: ["--config", conf(d, "train: {dropout: 1.5}\n")],
     "train.dropout"),
    ("range-mc", lambda d: ["--config", conf(d, "score: {mc_samples: 1}\n")],
     "score.mc_samples"),
    ("range-tau", lambda d: ["--config", conf(d, "autoal: {tau: -1}\n")], "autoal.tau"),
    ("range-seed", lambda d: ["--seed", "-1"], "seed: must be >= 0"),
    ("range-rounds-vs-pool", lambda d: ["--rounds", "500"], "rounds"),
    ("range-init-vs-classes", lambda d: ["--init", "3"], "init"),
    ("unknown-key", lambda d: ["--config", conf(d, "colour: blue\n")], "colour: unknown key"),
    ("unknown-nested-key", lambda d: ["--config", conf(d, "train: {colour: 1}\n")],
     "train.colour: unknown key"),
    ("unknown-oracle", lambda d: ["--config", write(d, "c.yaml", "oracle: crowd\n")], "oracle"),
    ("unknown-candidate-flag", lambda d: ["--candidates", "entropy,psychic"], "psychic"),
    ("unknown-candidate-file", lambda d: ["--config", conf(d, "candidates: [margin, x]\n")],
     "candidates"),
    ("unknown-strategy", lambda d: ["--strategy", "psychic"], "strategy"),
    ("bad-name", lambda d: ["--name", "a b/c"], "name"),
    ("bad-yaml", lambda d: ["--config", write(d, "c.yaml", "init: [1, 2\n")], "not valid YAML"),
    ("yaml-not-mapping", lambda d: ["--config", write(d, "c.yaml", "- init\n- 3\n")], "mapping"),
    ("bad-json", lambda d: ["--config", write(d, "c.json", "{init: 3")], "not valid JSON"),
    ("config-not-utf8", lambda d: ["--config", write(d, "c.yaml", b"init: \xff\xfe\n")],
     "--config"),
    ("config-missing", lambda d: ["--config", str(d / "nope.yaml")], "nope.yaml"),
    # datasets
    ("npz-missing-file", lambda d: ["--dataset", f"npz:{d / 'none.npz'}"], "none.npz"),
    ("npz-not-npz", lambda d: ["--dataset", "npz:" + write(d, "x.npz", b"not a zip")],
     "x.npz is not an .npz archive"),
    ("npz-missing-key", lambda d: ["--dataset", npz(d, test_labels=None)], "'test_labels'"),
    ("npz-label-count", lambda d: ["--dataset", npz(d, train_labels=np.arange(59) % 2)],
     "59 labels for 60 images"),
    ("npz-float-images", lambda d: ["--dataset", npz(d, train_images=np.zeros((60, 8, 8)))],
     "must be uint8"),
    ("npz-float-labels", lambda d: ["--dataset", npz(d, test_labels=np.zeros(20))],
     "labels must be integers"),
    ("npz-empty-test", lambda d: ["--dataset", npz(d, test_images=np.zeros((0, 8, 8), np.uint8),
                                                   test_labels=np.zeros(0, np.int64))],
     "test split is empty"),
    ("npz-one-class", lambda d: ["--dataset", npz(d, train_labels=np.zeros(60, np.int64))],
     "one class"),
    ("npz-negative-label", lambda d: ["--dataset", npz(d, test_labels=np.full(20, -1))],
     "labels must lie in"),
    ("parquet-nan", lambda d: ["--dataset", parquet(d, features=features_with(float("nan")))],
     "NaN or inf"),
    ("parquet-inf", lambda d: ["--dataset", parquet(d, features=features_with(float("inf")))],
     "NaN or inf"),
    ("parquet-duplicate-ids", lambda d: ["--dataset", parquet(d, id=[i // 2 for i in range(60)])],
     "column 'id' repeats"),
    ("parquet-no-label", lambda d: ["--dataset", parquet(d, label=None)], "column 'label'"),
    ("parquet-float-label", lambda d: ["--dataset", parquet(d, label=[0.5] * 60)],
     "column 'label'"),
    ("parquet-text-features", lambda d: ["--dataset", parquet(d, features=[["a", "b"]] * 60)],
     "column 'features'"),
    ("parquet-empty-test", lambda d: ["--dataset", parquet(d, split=["train"] * 60)],
     "test split is empty"),
    ("parquet-bad-split", lambda d: ["--dataset", parquet(d, split=["train", "dev"] * 30)],
     "column 'split'"),
    ("pool-edited-num-classes", lambda d: ["--dataset", stored_pool(d, num_classes=1000)],
     "pool.json: edited after `pool write` wrote it: its header no longer matches its digest"),
    ("pool-old-too-few-classes", lambda d: ["--dataset", stored_pool(d, True, num_classes=2)],
     "outside [0, 1] (num_classes=2)"),
    # the model against the data, checked before the run directory exists
    ("model-mlp-on-images", lambda d: ["--model", "mlp"], "mlp takes flat feature vectors"),
    ("model-smallcnn-on-features", lambda d: ["--model", "smallcnn", "--rounds", "1",
                                              "--dataset", parquet(d)], "smallcnn takes images"),
    ("model-resnet-on-features", lambda d: ["--model", "resnet18", "--rounds", "1",
                                            "--dataset", parquet(d)], "resnet18 takes images"),
    ("image-1px", lambda d: ["--dataset", "synthetic:hw=1,n=300,test=50"],
     "at least 2x2 pixels, but the dataset's are 1x1"),
    ("image-1x8", lambda d: ["--rounds", "1", "--dataset",
                             npz(d, train_images=np.zeros((60, 1, 8), np.uint8),
                                 test_images=np.zeros((20, 1, 8), np.uint8))],
     "are 1x8; use resnet18"),
    ("image-1px-smallcnn", lambda d: ["--model", "smallcnn", "--dataset",
                                      "synthetic:hw=1,n=300,test=50"], "smallcnn, which needs"),
    # hyperparameters that are not finite numbers
    ("lr-inf", lambda d: ["--config", conf(d, "train: {lr: .inf}\n")],
     "train.lr: must be a finite number"),
    ("weight-decay-inf", lambda d: ["--config", conf(d, "train: {weight_decay: .inf}\n")],
     "train.weight_decay: must be a finite number"),
    ("lr-nan", lambda d: ["--config", conf(d, "train: {lr: .nan}\n")], "train.lr"),
    # a pretrained file is loaded before anything is written
    ("pretrained-garbage", lambda d: ["--config", conf(d, "model: resnet18\npretrained: "
                                                          + write(d, "w.pt", b"\x80garbage"))],
     "is not a PyTorch weights file"),
    ("pretrained-empty", lambda d: ["--config", conf(d, "model: resnet18\npretrained: "
                                                        + write(d, "w.pt", b""))],
     "is not a PyTorch weights file"),
    ("pretrained-wrong-net", lambda d: ["--config", conf(d, "model: resnet18\npretrained: "
                                                            + torch_file(d))],
     "does not load into resnet18"),
    ("pretrained-for-smallcnn", lambda d: ["--config", conf(d, "pretrained: " + torch_file(d))],
     "smallcnn, which loads no pretrained weights"),
    ("pretrained-missing", lambda d: ["--config", conf(d, "pretrained: " + str(d / "no.pt"))],
     "pretrained"),
    # where the run would go
    ("out-empty", lambda d: ["--out", ""], "out: must be a directory path or URI (not empty)"),
    ("out-under-a-file", lambda d: ["--out", write(d, "f", "x") + "/run"], "a file, not a"),
    ("out-is-a-file", lambda d: ["--out", write(d, "f", "x")], "is a file, not a directory"),
    # a dataset too large to allocate, a non-UTF-8 wnids.txt
    ("synthetic-too-large", lambda d: ["--dataset", "synthetic:n=99999999999"],
     "GiB available; use a smaller n or hw"),  # refused before allocating
    ("tinyimagenet-wnids-not-utf8", lambda d: ["--dataset", "tinyimagenet", "--data-root",
                                               tiny_root(d, b"n0144\xff\xfe\n")],
     "wnids.txt is not UTF-8"),
]


@pytest.mark.parametrize("make_args, names", [c[1:] for c in RUN_CASES],
                         ids=[c[0] for c in RUN_CASES])
def test_bad_run_input(tmp_path, capsys, make_args, names):
    out = tmp_path / "run"
    args = make_args(tmp_path)
    safety = [] if "--config" in args else ["--oracle", "files"]
    fails_cleanly(capsys, [*RUN, "--out", str(out), *safety, *args], names)
    assert not out.exists()


@pytest.mark.parametrize("value", ["lots", "-5", "inf"])
def test_bad_scorer_cache_budget(tmp_path, capsys, monkeypatch, value):
    """AUTOAL_DIST_SCORER_CACHE_MB is read before Ray starts and anything is written."""
    monkeypatch.setenv("AUTOAL_DIST_SCORER_CACHE_MB", value)
    out = tmp_path / "run"
    fails_cleanly(capsys, ["run", "--ray", "--quiet", "--out", str(out)],
                  "AUTOAL_DIST_SCORER_CACHE_MB")
    assert not out.exists()


# ---- import / export / resume against an existing run: not one byte changes ---------------

@pytest.fixture(scope="module")
def awaiting_run(tmp_path_factory) -> Path:
    """An oracle-files campaign whose seed set (round 0) is half labeled, from the truth."""
    d = tmp_path_factory.mktemp("labeling") / "run"
    assert main([*CAMPAIGN, "--out", str(d)]) == 0
    ids = Run.at(d).journal().column("id").to_numpy()[:10]
    truth = Run.at(d).pool().column("label").to_numpy()
    labels = d.parent / "half.csv"
    labels.write_text("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in ids))
    assert main(["import", str(d), "--labels", str(labels)]) == 0
    assert labeling.awaiting_round(Run.at(d)) == 0
    return d


@pytest.fixture
def run_copy(awaiting_run, tmp_path) -> Path:
    d = tmp_path / "run"
    shutil.copytree(awaiting_run, d)
    return d


def ids_of(run_dir: Path) -> dict[str, int]:
    """Ids in each role: labeled (truth label known), unlabeled (queried), unqueried, test."""
    journal = Run.at(run_dir).journal().column("id").to_numpy()
    split = Run.at(run_dir).pool().column("split").to_pylist()
    return {"labeled": int(journal[0]), "unlabeled": int(journal[-1]),
            "unqueried": int(np.setdiff1d(np.arange(len(journal) + 1), journal)[0]),
            "test": split.index("test"), "pool": len(split)}


def truth(run_dir: Path, i: int) -> int:
    return int(Run.at(run_dir).pool().column("label")[i].as_py())


# (case, label file content as a function of the ids and truth, names)
Content = Callable[[dict, Callable[[int], int]], "str | bytes"]
LABEL_CASES: list[tuple[str, Content, str]] = [
    ("unknown-id", lambda i, t: f"id,label\n{i['pool'] + 5},1\n", "is not a sample"),
    ("negative-id", lambda i, t: "id,label\n-3,1\n", "id -3 is not a sample"),
    ("test-split-id", lambda i, t: f"id,label\n{i['test']},1\n", "test split"),
    ("not-queried", lambda i, t: f"id,label\n{i['unqueried']},1\n", "was not queried"),
    ("label-too-big", lambda i, t: f"id,label\n{i['unlabeled']},10\n", "label 10"),
    ("label-negative", lambda i, t: f"id,label\n{i['unlabeled']},-1\n", "label -1"),
    ("label-not-int", lambda i, t: f"id,label\n{i['unlabeled']},cat\n", "label 'cat'"),
    ("id-not-int", lambda i, t: "id,label\nabc,1\n", "id 'abc'"),
    ("duplicate-rows", lambda i, t: f"id,label\n{i['unlabeled']},1\n{i['unlabeled']},1\n",
     "repeats line 2"),
    ("conflicting-relabel", lambda i, t: f"id,label\n{i['labeled']},{(t(i['labeled']) + 1) % 10}\n",
     "already has label"),
    ("wrong-header", lambda i, t: f"sample,class\n{i['unlabeled']},1\n", "header"),
    ("no-header", lambda i, t: f"{i['unlabeled']},1\n", "header"),
    ("field-count", lambda i, t: f"id,label\n{i['unlabeled']},1,extra\n", "3 fields"),
    ("not-utf8", lambda i, t: b"id,label\n1,\xff\xfe\n", "not UTF-8"),
    ("empty-file", lambda i, t: "", "is empty"),
    ("header-only", lambda i, t: "id,label\n", "holds no labels"),
    ("huge-field", lambda i, t: "id,label\n1," + "9" * 200_000 + "\n", "not valid CSV"),
    ("unclosed-quote", lambda i, t: f'id,label\n"{i["unlabeled"]},1\n', "1 fields"),
]


@pytest.mark.parametrize("content, names", [c[1:] for c in LABEL_CASES],
                         ids=[c[0] for c in LABEL_CASES])
def test_bad_label_file(run_copy, tmp_path, capsys, content, names):
    path = write(tmp_path, "labels.csv", content(ids_of(run_copy), lambda i: truth(run_copy, i)))
    before = snapshot(run_copy)
    fails_cleanly(capsys, ["import", str(run_copy), "--labels", path], names)
    assert snapshot(run_copy) == before


def test_a_bad_row_anywhere_rejects_the_whole_file(run_copy, tmp_path, capsys):
    i = ids_of(run_copy)
    good = f"{i['unlabeled']},{truth(run_copy, i['unlabeled'])}\n"
    path = write(tmp_path, "labels.csv", f"id,label\n{good}{i['unqueried']},1\n")
    before = snapshot(run_copy)
    fails_cleanly(capsys, ["import", str(run_copy), "--labels", path], "line 3")
    assert snapshot(run_copy) == before


RUN_DIR_CASES: list[tuple[str, Callable[[Path, Path], list[str]], str]] = [
    ("import-missing-file", lambda r, d: ["import", str(r), "--labels", str(d / "no.csv")],
     "no.csv"),
    ("import-not-a-run", lambda r, d: ["import", str(d), "--labels", str(d)], "config.json"),
    ("export-not-a-run", lambda r, d: ["export", str(d), "--to", str(d / "x")], "config.json"),
    ("export-round-not-journaled", lambda r, d: ["export", str(r), "--round", "7", "--to",
                                                 str(d / "x")], "--round: round 7"),
    ("export-to-nonempty", lambda r, d: ["export", str(r), "--to", str(r)], "--to"),
    ("export-ls-root-outside", lambda r, d: ["export", str(r), "--to", str(d / "x"), "--ls-root",
                                             str(d / "elsewhere")], "--ls-root"),
    ("resume-changed-config", lambda r, d: ["run", "--resume", "--out", str(r), "--budget", "5"],
     "--budget"),
    ("resume-with-config", lambda r, d: ["run", "--resume", "--out", str(r), "--config",
                                         write(d, "c.yaml", "init: 20\n")], "--config"),
    ("resume-without-out", lambda r, d: ["run", "--resume"], "--out"),
]


@pytest.mark.parametrize("make_argv, names", [c[1:] for c in RUN_DIR_CASES],
                         ids=[c[0] for c in RUN_DIR_CASES])
def test_bad_command_on_a_run_directory(run_copy, tmp_path, capsys, make_argv, names):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    argv = make_argv(run_copy, elsewhere)
    before = snapshot(run_copy), snapshot(elsewhere)
    fails_cleanly(capsys, argv, names)
    assert (snapshot(run_copy), snapshot(elsewhere)) == before
    assert not (elsewhere / "x").exists()


def test_import_into_a_simulated_run_is_refused(tmp_path, capsys):
    run = tmp_path / "sim"
    fast = write(tmp_path, "fast.yaml", "train: {min_steps: 2}\n")
    assert main([*RUN, "--out", str(run), "--rounds", "0", "--init", "20", "--config", fast]) == 0
    labels = write(tmp_path, "l.csv", "id,label\n1,1\n")
    before = snapshot(run)
    fails_cleanly(capsys, ["import", str(run), "--labels", labels], "oracle 'simulated'")
    assert snapshot(run) == before


def test_resume_or_export_on_changed_data_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*CAMPAIGN, "--dataset", npz(tmp_path), "--out", str(run)]) == 0
    npz(tmp_path, train_labels=(np.arange(60) + 1) % 2)  # same path, other labels
    before = snapshot(run)
    fails_cleanly(capsys, ["run", "--resume", "--out", str(run), "--local"], "changed")
    fails_cleanly(capsys, ["export", str(run), "--to", str(tmp_path / "x")], "changed")
    assert snapshot(run) == before and not (tmp_path / "x").exists()


def test_import_before_any_batch_is_refused(run_copy, tmp_path, capsys):
    """A run killed between config.json and its seed set has nothing to label yet."""
    shutil.rmtree(run_copy / "journal")
    shutil.rmtree(run_copy / labeling.LABELS_DIR)
    before = snapshot(run_copy)
    labels = write(tmp_path, "l.csv", "id,label\n1,1\n")
    fails_cleanly(capsys, ["import", str(run_copy), "--labels", labels], "queried no batch")
    assert snapshot(run_copy) == before


# ---- a damaged run directory: resume, report, import and export refuse it in one line ------

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """An oracle-files campaign that trained round 0 and waits on round 1's labels: it holds
    config.json, pool.parquet, journal rounds 0-1, metrics.parquet, labels/round_000.parquet."""
    d = tmp_path_factory.mktemp("trained") / "run"
    fast = d.parent / "fast.yaml"
    fast.write_text("oracle: files\ntrain: {min_steps: 2, epochs: 1}\nscore: {mc_samples: 2}\n")
    args = [*RUN, "--init", "20", "--budget", "10", "--rounds", "2", "--config", str(fast)]
    assert main([*args, "--out", str(d)]) == 0
    ids = Run.at(d).journal().column("id").to_numpy()
    truth = Run.at(d).pool().column("label").to_numpy()
    labels = d.parent / "round0.csv"
    labels.write_text("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in ids))
    assert main(["import", str(d), "--labels", str(labels)]) == 0
    assert main(["run", "--resume", "--out", str(d), "--quiet"]) == 0
    assert Run.at(d).journal_rounds() == [0, 1] and len(Run.at(d).metrics()) == 1
    ids1 = Run.at(d).journal().column("id").to_numpy()[20:25]
    (d.parent / "round1.csv").write_text("id,label\n" + "".join(f"{i},{truth[i]}\n"
                                                               for i in ids1))
    return d


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def rewrite_metrics(run: Path) -> None:
    rows = Run.at(run).metrics()
    rows[0]["n_labeled"] += 3
    Run.at(run).write_metrics(rows)


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "metrics-truncated": (lambda r: truncate(r / "metrics.parquet"), "metrics.parquet"),
    "metrics-garbage": (lambda r: (r / "metrics.parquet").write_bytes(b"no parquet"),
                        "metrics.parquet: not a readable parquet file"),
    "metrics-disagree": (rewrite_metrics, "metrics.parquet: round 0 trained on 23"),
    "config-truncated": (lambda r: truncate(r / "config.json"), "config.json"),
    "config-not-utf8": (lambda r: (r / "config.json").write_bytes(b"{\"config\": \xff}"),
                        "config.json"),
    "config-not-object": (lambda r: (r / "config.json").write_text("[]"), "config.json"),
    "labels-truncated": (lambda r: truncate(r / "labels" / "round_000.parquet"),
                         "round_000.parquet"),
    "albl-not-json": (lambda r: (r / "albl_state.json").write_text("{\"experts\": [1,"),
                      "albl_state.json: not readable JSON"),
    "albl-wrong-shape": (lambda r: (r / "albl_state.json").write_text("{\"experts\": []}"),
                         "albl_state.json: not ALBL's bandit state"),
    "autoal-truncated": (lambda r: (r / "autoal_weights.parquet").write_bytes(b"PAR1x"),
                         "autoal_weights.parquet"),
    "journal-second-name": (lambda r: shutil.copy(r / "journal" / "round_001.parquet",
                                                  r / "journal" / "round_0001.parquet"),
                            "round_0001.parquet: a second file for round 1"),
    "journal-gap": (lambda r: (r / "journal" / "round_001.parquet").rename(
        r / "journal" / "round_002.parquet"), "round 1 is missing"),
    "journal-repeated-ids": (lambda r: shutil.copy(r / "journal" / "round_000.parquet",
                                                   r / "journal" / "round_001.parquet"),
                             "round_001.parquet: holds rows of round 0"),
    "journal-stray-file": (lambda r: (r / "journal" / "notes.txt").write_text("x"),
                           "notes.txt: unexpected file"),
}
COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "resume": lambda r, d: ["run", "--resume", "--out", str(r), "--quiet"],
    "report": lambda r, d: ["report", str(r)],
    "import": lambda r, d: ["import", str(r), "--labels", str(d / "round1.csv")],
    "export": lambda r, d: ["export", str(r), "--to", str(d / "x")],
}
# report reads no config.json fields (only that it is JSON): a valid JSON non-object is its
# business only for the commands that use the config
SKIP = {("report", "config-not-object")}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_run_directory_is_refused_in_one_line(trained_run, tmp_path, capsys,
                                                       command, damage):
    if (command, damage) in SKIP:
        pytest.skip("not read by this command")
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    shutil.copy(trained_run.parent / "round1.csv", tmp_path / "round1.csv")
    make, names = DAMAGES[damage]
    make(run)
    before = snapshot(run)
    fails_cleanly(capsys, COMMANDS[command](run, tmp_path), names)
    assert snapshot(run) == before
    assert not (tmp_path / "x").exists()


def test_journal_copied_under_a_second_name_via_the_shell(trained_run, tmp_path, capsys):
    """`cp journal/round_001.parquet journal/round_0001.parquet`, then resume: refused."""
    import subprocess

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    subprocess.run(["cp", "journal/round_001.parquet", "journal/round_0001.parquet"], cwd=run,
                   check=True)
    before = snapshot(run)
    fails_cleanly(capsys, ["run", "--resume", "--out", str(run)], "round_0001.parquet")
    assert snapshot(run) == before


# ---- the filesystem refuses: read-only, permission, disk full ------------------------------

@pytest.mark.parametrize("command", ["resume", "report", "import"])
def test_a_read_only_run_directory_is_one_line_naming_it(trained_run, tmp_path, capsys,
                                                         monkeypatch, command):
    """As root every directory is writable, so `os.access` answers as for a read-only one."""
    import os

    from autoal_dist import cli

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    shutil.copy(trained_run.parent / "round1.csv", tmp_path / "round1.csv")
    real = os.access
    monkeypatch.setattr(cli.os, "access", lambda p, mode: real(p, mode) and Path(p) != run)
    before = snapshot(run)
    fails_cleanly(capsys, COMMANDS[command](run, tmp_path), f"{run} is read-only")
    assert snapshot(run) == before


def test_a_write_the_filesystem_refuses_is_one_line_naming_the_file(trained_run, tmp_path,
                                                                    capsys, monkeypatch):
    import errno
    import tempfile

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(k["dir"]) / ".tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    before = snapshot(run)
    fails_cleanly(capsys, ["report", str(run)], f"{run / 'curves.png'}: no permission")
    assert snapshot(run) == before


@pytest.mark.parametrize("command", ["import", "resume"])
def test_a_full_disk_is_one_line_and_leaves_the_last_complete_state(trained_run, tmp_path,
                                                                   capsys, monkeypatch, command):
    import errno

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    shutil.copy(trained_run.parent / "round1.csv", tmp_path / "round1.csv")
    if command == "resume":  # label round 1 completely, so the resume trains and writes
        ids = Run.at(run).journal().column("id").to_numpy()[20:]
        truth = Run.at(run).pool().column("label").to_numpy()
        (tmp_path / "all1.csv").write_text("id,label\n" + "".join(f"{i},{truth[i]}\n"
                                                                  for i in ids))
        assert main(["import", str(run), "--labels", str(tmp_path / "all1.csv")]) == 0

    def full(table, where, **kw):
        open(where, "wb").write(b"PAR1 half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    before = snapshot(run)
    capsys.readouterr()
    assert main(COMMANDS[command](run, tmp_path)) == 2
    err = capsys.readouterr().err
    if command == "resume":  # a run that started says where it runs first; the error ends it
        err = err.splitlines(keepends=True)[-1]
    assert err.count("\n") == 1 and err.startswith("autoal-dist: error:"), err
    assert ".parquet: the disk is full" in err and ".tmp" not in err, err
    assert snapshot(run) == before  # the failed write left no file, the old ones intact


def test_bad_inputs_print_one_line_from_a_real_process(tmp_path):
    """The corpus above runs main() in-process, where pytest captures warnings; a real process
    must print the one line alone (torch's warning about a foreign file included)."""
    import subprocess
    import sys

    garbage = write(tmp_path, "w.pt", b"\x80garbage")
    config = write(tmp_path, "c.yaml", f"model: resnet18\npretrained: {garbage}\n")
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "autoal_dist", *RUN, "--out", str(out),
                        "--config", config], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "not a PyTorch weights file" in p.stderr, p.stderr
    assert not out.exists()


# ---- unclear messages made clear (#27) ------------------------------------------------------

def test_pool_and_resume_messages_say_what_is_wrong(tmp_path, capsys):
    pool = tmp_path / "pool"
    for value in ("0", "-5"):
        fails_cleanly(capsys, ["pool", "write", "--dataset", "digits", "--to", str(pool),
                               "--rows-per-group", value],
                      f"--rows-per-group {value}: must be a number of rows >= 1")
    assert not pool.exists()
    run = tmp_path / "run"
    assert main([*CAMPAIGN, "--out", str(run)]) == 0
    fails_cleanly(capsys, ["pool", "info", str(run)], "is a campaign run directory, not a "
                  "stored pool")
    never = tmp_path / "never-started"
    fails_cleanly(capsys, ["run", "--resume", "--out", str(never)],
                  "does not exist: no campaign was started there")
    assert not never.exists()
    fails_cleanly(capsys, ["run", "--resume", "--out", str(run), "--budget", "7"],
                  "--local/--ray may change")


def _user_error_classes(cls: type) -> list[type]:
    return [c for s in cls.__subclasses__() for c in (s, *_user_error_classes(s))]


def test_every_user_error_crosses_a_process_boundary_intact():
    """A user error raised in a worker (a process pool, a Ray task) is pickled back: one
    whose constructor takes more than the message must still rebuild with its fields, not
    turn into a TypeError about missing arguments."""
    import pickle

    import autoal_dist.cli  # noqa: F401  (imports every module that defines one)
    from autoal_dist.config import ConfigError
    from autoal_dist.dirlock import RunLocked
    from autoal_dist.errors import UserError

    made = {ConfigError: ConfigError("autoal.prior", "must be a candidate, got 'x'"),
            RunLocked: RunLocked("run is locked by pid 1", {"pid": 1})}
    classes = _user_error_classes(UserError)
    assert ConfigError in classes and RunLocked in classes
    for cls in classes:
        e = made.get(cls) or cls("one line")
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is cls and str(back) == str(e) and vars(back) == vars(e)
