"""Campaigns on a stored pool (`--dataset pool:DIR_OR_URI`, issue #16).

The pool is written by the conversion command itself (`autoal-dist pool write`) from the
digits dataset, in small files and row groups so shards cross their boundaries. Every
registered strategy must select bit for bit what it selects on the in-memory dataset, in
process and on 1 and 3 Ray actors that read their own shard from storage; the round
policies (autoal, vote, albl) must journal the same campaign; an actor must never get
the whole pool; an unusable pool is a one-line error that writes nothing.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch

from autoal_dist.cli import main
from autoal_dist.data import DataError, load_dataset
from autoal_dist.data.pool_read import StoredArray
from autoal_dist.data.transforms import Normalizer
from autoal_dist.models import build_model
from autoal_dist.models.backbones import ModelSpec
from autoal_dist.run import Run
from autoal_dist.scoring import LocalScorer
from autoal_dist.scoring.actors import (
    KEEP_FLOOR_BYTES,
    READ_RESERVE_BYTES,
    keep_budget,
    output_bytes,
)
from autoal_dist.scoring.ray_scorer import RayScorer
from autoal_dist.strategies import STRATEGIES
from conftest import quick_cases

GROUP, PER_FILE = 64, 400  # 1348 digits: 4 files, 22 row groups
FAST = "train: {min_steps: 5}\nscore: {mc_samples: 2}\n" \
       "autoal: {search_iters: 5, fitnet_pretrain_iters: 5}\n"


def write_pool_cli(to, dataset: str = "digits") -> str:
    assert main(["pool", "write", "--dataset", dataset, "--to", str(to),
                 "--rows-per-file", str(PER_FILE), "--rows-per-group", str(GROUP)]) == 0
    return str(to)


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory) -> str:
    return write_pool_cli(tmp_path_factory.mktemp("pools") / "digits")


@pytest.fixture(scope="module")
def round_inputs(pool_dir):
    data, stored = load_dataset("digits"), load_dataset(f"pool:{pool_dir}")
    assert stored.is_stored and isinstance(stored.train_x, StoredArray)
    norm = Normalizer.for_dataset(stored)
    torch.manual_seed(0)
    model = build_model("smallcnn", data.input_shape, 10, 0.3)
    labeled = np.arange(0, 600, 20)
    positions = np.setdiff1d(np.arange(len(data.train_x)), labeled)
    spec = ModelSpec("smallcnn", data.input_shape, 10, 0.3)
    return data, stored, norm, model, positions, labeled, spec


def assert_same(got, want):
    assert got.keys() == want.keys()
    for n in want:
        assert np.array_equal(got[n].ids, want[n].ids), n
        assert np.array_equal(got[n].scores, want[n].scores, equal_nan=True), n


def group_of(x: StoredArray, rows: np.ndarray) -> np.ndarray:
    """The row group (index in x) holding each of `rows`."""
    return np.searchsorted(x.row_group_bounds(), rows, "right") - 1


# ---- every strategy, in process and on 1 and 3 actors ----------------------------------

@pytest.mark.slow
def test_every_strategy_selects_the_same_from_the_stored_pool(ray_cluster, round_inputs):
    data, stored, norm, model, pos, lab, spec = round_inputs
    names = sorted(STRATEGIES)
    want = LocalScorer(data.train_x, norm, 128, 3, show_progress=False).select_many(
        model, pos, names, 25, 3, lab)
    got = LocalScorer(stored.train_x, norm, 128, 3, show_progress=False).select_many(
        model, pos, names, 25, 3, lab)
    assert_same(got, want)  # in process
    for k in (1, 3):
        scorer = RayScorer(stored.train_x, norm, spec, shards=k, batch_size=128, mc_samples=3)
        try:
            assert scorer.stored and scorer.options["scheduling_strategy"] == "SPREAD"
            assert_same(scorer.select_many(model, pos, names, 25, 3, lab), want)
        finally:
            scorer.close()


def test_an_actor_reads_only_its_shard_and_the_pool_is_never_put(ray_cluster, round_inputs,
                                                                 monkeypatch):
    data, stored, norm, model, pos, lab, spec = round_inputs
    x = stored.train_x
    put_bytes = []
    put = ray.put

    def recording_put(value, *a, **kw):
        put_bytes.append(getattr(value, "nbytes", 0))
        assert not isinstance(value, StoredArray)
        return put(value, *a, **kw)

    monkeypatch.setattr(ray, "put", recording_put)
    want = LocalScorer(data.train_x, norm, 128, 3, show_progress=False).select_many(
        model, pos, ["entropy"], 25, 3, lab)
    scorer = RayScorer(x, norm, spec, shards=3, batch_size=128, mc_samples=3)
    try:
        assert_same(scorer.select_many(model, pos, ["entropy"], 25, 3, lab), want)
        stats = scorer.stats()
        for task, st in zip(scorer.tasks, stats):
            own = np.unique(group_of(x, task.positions))
            # each of its shard's row groups read once, no other; kept for the next round
            assert st["stored"] and st["groups_read"] == len(own) < len(x.row_group_bounds()) - 1
            assert st["kept_bytes"] == sum(x.row_group_bounds()[g + 1] - x.row_group_bounds()[g]
                                           for g in own) * 64
        assert sum(s["groups_read"] for s in stats) < 1.3 * (len(x.row_group_bounds()) - 1)
        # the next round (same shards) reads nothing from storage: the kept row groups
        assert_same(scorer.select_many(model, pos, ["entropy"], 25, 3, lab), want)
        assert [s["groups_read"] for s in scorer.stats()] == [s["groups_read"] for s in stats]
        # k-center: also the labeled rows of its slice, by id
        scorer.select_many(model, pos, ["kcenter"], 25, 3, lab)
        for task, before, st in zip(scorer.tasks, stats, scorer.stats()):
            extra = np.setdiff1d(group_of(x, task.labeled_positions), group_of(x, task.positions))
            assert st["groups_read"] - before["groups_read"] <= len(np.unique(extra))
    finally:
        scorer.close()
    # weights (a dict) and the labeled set's embeddings only, never the pool
    assert max(put_bytes) < x.nbytes / 4


def test_kept_rows_stay_within_the_cache_budget(ray_cluster, round_inputs):
    data, stored, norm, model, pos, lab, spec = round_inputs
    budget = 3 * GROUP * 64  # three row groups of 8x8x1 bytes
    scorer = RayScorer(stored.train_x, norm, spec, shards=2, batch_size=128, mc_samples=3,
                       cache_bytes=budget)
    try:
        scorer.select_many(model, pos, ["margin"], 25, 3, lab)
        assert all(0 < s["kept_bytes"] <= budget for s in scorer.stats())
    finally:
        scorer.close()


def test_the_keep_tier_leaves_room_for_outputs_batches_and_the_reader():
    row, mb = 64 * 64 * 3, 1 << 20
    # TinyImageNet rows, 300k on two actors: the cap binds
    assert keep_budget(1 << 30, 150_000, row, 150_000 * 864, 256) == 1 << 30
    # 30k on one actor: the shard less its outputs, two batches and the reader's memory
    out = output_bytes(29_000, 200, 16, frozenset({"probs", "embeddings"}), 10)
    assert out == 29_000 * 216 * 4
    assert keep_budget(1 << 30, 29_000, row, out, 256) == \
        29_000 * row - out - 2 * 256 * row - READ_RESERVE_BYTES
    # MC-dropout outputs as large as the shard (28x28 images, 10 samples): nothing kept
    mc = output_bytes(100_000, 10, 64, frozenset({"mc_probs"}), 10)
    assert keep_budget(1 << 30, 100_000, 784, mc, 256) == 0
    # a shard under the floor is kept whole (its row groups span its labeled rows too)
    assert keep_budget(1 << 30, 500, 64, 500 * 120, 128) == KEEP_FLOOR_BYTES
    assert keep_budget(1000, 500, 64, 0, 128) == 1000 and KEEP_FLOOR_BYTES < 64 * mb


def test_the_keep_budget_a_user_sets(monkeypatch):
    from autoal_dist.scoring.ray_scorer import CACHE_ENV, default_cache_bytes

    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert default_cache_bytes() is None  # each actor: keep_budget's bound
    monkeypatch.setenv(CACHE_ENV, "4096")
    assert default_cache_bytes() == 4 << 30
    monkeypatch.setenv(CACHE_ENV, "0")
    assert default_cache_bytes() == 0
    monkeypatch.setenv(CACHE_ENV, "1e308")  # more than any machine: keep everything
    assert default_cache_bytes() == 1 << 62
    for bad in ("lots", "-1", "nan", "inf"):
        monkeypatch.setenv(CACHE_ENV, bad)
        with pytest.raises(ValueError, match=CACHE_ENV):
            default_cache_bytes()


def test_in_memory_datasets_keep_one_put(ray_cluster, round_inputs):
    data, stored, norm, model, pos, lab, spec = round_inputs
    scorer = RayScorer(data.train_x, norm, spec, shards=2, batch_size=128, mc_samples=3)
    try:
        assert not scorer.stored and "scheduling_strategy" not in scorer.options
        assert isinstance(scorer.pool, list) and len(scorer.pool) == 1  # [ref], put once
        assert all(not s["stored"] and s["groups_read"] == 0 for s in scorer.stats())
    finally:
        scorer.close()


# ---- campaigns: policies, --local against --ray --shards 3 -----------------------------

@pytest.fixture
def fast(tmp_path) -> str:
    path = tmp_path / "fast.yaml"
    path.write_text(FAST)
    return str(path)


def journal(run_dir: Path):
    return Run.at(run_dir).journal().to_pandas()


def assert_same_campaign(a: Path, b: Path) -> None:
    ja, jb = journal(a), journal(b)
    assert ja.id.tolist() == jb.id.tolist() and ja["round"].tolist() == jb["round"].tolist()
    assert np.array_equal(ja.score, jb.score, equal_nan=True)
    ma, mb = (pq.read_table(d / "metrics.parquet").to_pylist() for d in (a, b))
    assert [(r["n_labeled"], r["accuracy"]) for r in ma] == \
        [(r["n_labeled"], r["accuracy"]) for r in mb]


@pytest.mark.parametrize("strategy", quick_cases(["autoal", "vote", "albl"], {"vote"}))
def test_policy_campaign_on_the_stored_pool_equals_in_memory(ray_cluster, pool_dir, fast,
                                                             tmp_path, strategy):
    common = ["run", "--strategy", strategy, "--candidates", "entropy,kcenter,margin",
              "--init", "20", "--budget", "10", "--rounds", "2", "--epochs", "1", "--seed", "3",
              "--quiet", "--config", fast]
    assert main([*common, "--dataset", "digits", "--local", "--out", str(tmp_path / "mem")]) == 0
    assert main([*common, "--dataset", f"pool:{pool_dir}", "--ray", "--shards", "3",
                 "--out", str(tmp_path / "pool")]) == 0
    assert_same_campaign(tmp_path / "pool", tmp_path / "mem")
    assert len(journal(tmp_path / "pool")) == 20 + 2 * 10


@pytest.mark.slow
def test_scorer_actors_stay_across_rounds_with_train_workers(ray_cluster, pool_dir, fast,
                                                             tmp_path, monkeypatch, capsys):
    """`--workers 1 --shards 1` (every fit on a Ray Train worker): the scorer actor is the
    same process in every round, so it reads its shard's row groups from storage in round 0
    only (the shard is within its keep budget), and each round says what it read; the
    campaign journals what the in-process one does, and its end stops the actor."""
    import ray._private.state as gcs

    seen: list[list[dict]] = []  # each round: every actor's stats after its forward pass
    prepare = RayScorer.prepare

    def recorded(self, *args, **kw):
        got = prepare(self, *args, **kw)
        seen.append(self.stats())
        return got

    monkeypatch.setattr(RayScorer, "prepare", recorded)
    common = ["run", "--strategy", "entropy", "--init", "20", "--budget", "10", "--rounds", "3",
              "--epochs", "1", "--seed", "3", "--config", fast]
    capsys.readouterr()
    assert main([*common, "--dataset", f"pool:{pool_dir}", "--ray", "--workers", "1",
                 "--shards", "1", "--out", str(tmp_path / "pool")]) == 0
    reads = [line.strip() for line in capsys.readouterr().err.splitlines()
             if "from storage; kept for the next round" in line]
    assert len(reads) == 3 and not reads[0].startswith("read 0 ")
    assert reads[1].startswith("read 0 row groups (0 B) from storage") and reads[2] == reads[1]
    assert len(seen) == 3 and all(len(r) == 1 for r in seen)
    (first,), rest = seen[0], [st for (st,) in seen[1:]]
    # round 0 reads the whole shard: its 22 row groups (a group the read-ahead thread and the
    # pass both miss at once is fetched twice), and keeps them
    assert first["stored"] and first["groups_read"] >= 22 and first["bytes_read"] > 0
    assert first["kept_bytes"] == 1348 * 64
    for st in rest:  # the same process, and nothing read again
        assert st["pid"] == first["pid"]
        assert (st["groups_read"], st["bytes_read"]) == (first["groups_read"],
                                                         first["bytes_read"])
    alive = [a for a in gcs.actors(actor_state_name="ALIVE").values()
             if a["ActorClassName"] == "ScorerActor" and a.get("Pid") == first["pid"]]
    assert not alive  # the campaign's close stopped it
    assert main([*common, "--dataset", "digits", "--local", "--quiet",
                 "--out", str(tmp_path / "mem")]) == 0
    assert_same_campaign(tmp_path / "pool", tmp_path / "mem")


def test_resume_of_a_pool_campaign_checks_the_recorded_fingerprint(pool_dir, fast, tmp_path,
                                                                   capsys):
    """Resumes do not read the pool to fingerprint it (the recorded one), and refuse
    another pool, as for any dataset."""
    out = tmp_path / "run"
    args = ["run", "--dataset", f"pool:{pool_dir}", "--strategy", "margin", "--init", "20",
            "--budget", "10", "--epochs", "1", "--quiet", "--local", "--config", fast,
            "--out", str(out)]
    assert main([*args, "--rounds", "1"]) == 0
    meta = Run.at(out).meta("--out")
    assert meta["dataset_fingerprint"] == load_dataset("digits").fingerprint()
    assert main(["run", "--resume", "--out", str(out), "--rounds", "2", "--quiet"]) == 0
    assert Run.at(out).journal_rounds() == [0, 1, 2]
    other = write_pool_cli(tmp_path / "other", "synthetic:n=400,test=40,hw=8,c=1,classes=10")
    meta["config"]["dataset"] = f"pool:{other}"
    Run.at(out).write_meta(meta)
    capsys.readouterr()
    assert main(["run", "--resume", "--out", str(out), "--rounds", "3", "--quiet"]) == 2
    assert "fingerprint differs" in capsys.readouterr().err
    assert Run.at(out).journal_rounds() == [0, 1, 2]


def test_people_label_a_pool_campaign(pool_dir, fast, tmp_path, capsys):
    """--oracle files: export reads the batch's images by id from the pool."""
    out, batch = tmp_path / "run", tmp_path / "batch"
    assert main(["run", "--dataset", f"pool:{pool_dir}", "--strategy", "entropy", "--init",
                 "12", "--budget", "5", "--rounds", "1", "--epochs", "1", "--quiet", "--local",
                 "--config", fast, "--oracle", "files", "--out", str(out)]) == 0
    assert main(["export", str(out), "--to", str(batch)]) == 0
    digits = load_dataset("digits")
    from PIL import Image

    def check_images(ids, where):
        assert sorted(int(f.stem) for f in (where / "images").iterdir()) == sorted(ids)
        for i in ids:
            img = np.asarray(Image.open(where / "images" / f"{i}.png"))[::16, ::16]  # shown 16x
            np.testing.assert_array_equal(img, digits.train_x[i][..., 0])

    check_images(journal(out).id.tolist(), batch)  # the seed set
    for r in (0, 1):  # people label the batch, the campaign goes on, the next batch exported
        ids = journal(out).query(f"round == {r}").id.tolist()
        labels = tmp_path / f"labels{r}.csv"
        labels.write_text("id,label\n" + "".join(f"{i},{digits.train_y[i]}\n" for i in ids))
        assert main(["import", str(out), "--labels", str(labels)]) == 0
        assert main(["run", "--resume", "--out", str(out), "--quiet"]) == 0
        if r == 0:
            assert Run.at(out).journal_rounds() == [0, 1]
            assert main(["export", str(out), "--to", str(tmp_path / "batch1")]) == 0
            check_images(journal(out).query("round == 1").id.tolist(), tmp_path / "batch1")
    assert len(pq.read_table(out / "metrics.parquet")) == 2


# ---- unusable pools: one line, exit 2, nothing written ---------------------------------

def one_line_exit_2(argv, capsys, *words) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autoal-dist: error: ") and "\n" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("damage, words", [
    ("missing", ["does not exist"]),
    ("no_meta", ["incomplete pool"]),
    ("part_gone", ["part-00002.parquet", "missing"]),
    ("part_swapped", ["part-00001.parquet"]),
])
def test_an_unusable_pool_is_one_line_exit_2_and_writes_nothing(pool_dir, tmp_path, capsys,
                                                                damage, words):
    pool = tmp_path / "pool"
    shutil.copytree(pool_dir, pool)
    if damage == "missing":
        shutil.rmtree(pool)
    elif damage == "no_meta":
        (pool / "pool.json").unlink()
    elif damage == "part_gone":
        (pool / "train" / "part-00002.parquet").unlink()
    else:  # a file of another layout under a listed name
        shutil.copy(pool / "train" / "part-00003.parquet", pool / "train" / "part-00001.parquet")
    out = tmp_path / "run"
    one_line_exit_2(["run", "--dataset", f"pool:{pool}", "--strategy", "entropy", "--local",
                     "--quiet", "--out", str(out)], capsys, *words)
    assert not out.exists()


def test_pool_write_errors_are_one_line(pool_dir, tmp_path, capsys):
    one_line_exit_2(["pool", "write", "--dataset", "digits", "--to", pool_dir], capsys,
                    "not empty")
    one_line_exit_2(["pool", "write", "--to", str(tmp_path / "p")], capsys, "--dataset")
    one_line_exit_2(["pool", "write", "--dataset", "nosuch", "--to", str(tmp_path / "p")],
                    capsys, "unknown dataset")
    assert not (tmp_path / "p").exists()


def test_a_part_file_lost_mid_run_is_a_data_error_from_the_actors(ray_cluster, round_inputs,
                                                                  pool_dir, tmp_path):
    data, _, norm, model, pos, lab, spec = round_inputs
    pool = tmp_path / "pool"
    shutil.copytree(pool_dir, pool)
    stored = load_dataset(f"pool:{pool}")
    (pool / "train" / "part-00001.parquet").unlink()  # after the run opened the pool
    scorer = RayScorer(stored.train_x, norm, spec, shards=2, batch_size=128, mc_samples=3)
    try:
        with pytest.raises(DataError) as err:
            scorer.select_many(model, pos, ["entropy"], 25, 3, lab)
    finally:
        scorer.close()
    assert "part-00001.parquet" in str(err.value) and "\n" not in str(err.value)


# ---- the pool on S3 (moto's server) ---------------------------------------------------

@pytest.mark.slow
def test_the_same_round_from_a_pool_on_s3(ray_cluster, s3_bucket, round_inputs, fast, tmp_path):
    data, _, norm, model, pos, lab, spec = round_inputs
    uri = write_pool_cli(f"{s3_bucket}/pools/digits")
    stored = load_dataset(f"pool:{uri}")
    assert stored.is_stored and stored.fingerprint() == data.fingerprint()
    names = sorted(STRATEGIES)
    want = LocalScorer(data.train_x, norm, 128, 3, show_progress=False).select_many(
        model, pos, names, 25, 3, lab)
    scorer = RayScorer(stored.train_x, norm, spec, shards=3, batch_size=128, mc_samples=3)
    try:
        assert_same(scorer.select_many(model, pos, names, 25, 3, lab), want)
        assert all(0 < s["groups_read"] < 22 for s in scorer.stats())
    finally:
        scorer.close()
    # a campaign on the S3 pool, into an S3 run directory, equals the in-memory one
    common = ["run", "--strategy", "kcenter", "--init", "20", "--budget", "10", "--rounds", "2",
              "--epochs", "1", "--seed", "2", "--quiet", "--config", fast]
    assert main([*common, "--dataset", "digits", "--local", "--out", str(tmp_path / "mem")]) == 0
    assert main([*common, "--dataset", f"pool:{uri}", "--ray", "--shards", "3",
                 "--out", f"{s3_bucket}/runs/r"]) == 0
    from autoal_dist import remote

    got = tmp_path / "got"
    got.mkdir()
    remote.RemoteDir.open(f"{s3_bucket}/runs/r").download(got, skip=())
    assert_same_campaign(got, tmp_path / "mem")


# ---- SIGKILL and resume --------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_then_resume_on_the_pool_gives_the_uninterrupted_campaign(pool_dir, fast,
                                                                          tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from autoal_dist import faults

    args = ["run", "--dataset", f"pool:{pool_dir}", "--strategy", "kcenter", "--init", "20",
            "--budget", "10", "--rounds", "2", "--epochs", "1", "--quiet", "--local",
            "--config", fast]

    def cli(*argv, crash=None):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
        env.pop(faults.ENV, None)
        if crash:
            env[faults.ENV] = crash
        return subprocess.run([sys.executable, "-m", "autoal_dist", *argv], env=env,
                              capture_output=True, text=True, timeout=300)

    ref, out = tmp_path / "ref", tmp_path / "run"
    assert main([*args, "--out", str(ref)]) == 0
    r = cli(*args, "--out", str(out), crash="selected:0")
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    r = cli("run", "--resume", "--out", str(out), "--quiet", crash="train_step:1:2")
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert main(["run", "--resume", "--out", str(out), "--quiet"]) == 0
    assert_same_campaign(out, ref)
