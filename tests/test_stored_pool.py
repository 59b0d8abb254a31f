"""Stored pools (data/stored_pool.py): the parquet format, its writer and the lazy reader.

No Ray: a StoredArray is checked against the in-memory array it was written from, for
every kind of index, across file and row-group boundaries, raw and PNG, images and
features, on a local directory and on S3 (moto's server).
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoal_dist.data import DataError, load_dataset, validate
from autoal_dist.data.pool_read import StoredArray
from autoal_dist.data.stored_pool import (
    open_pool,
    read_meta,
    seal_pool,
    verify_pool,
    write_pool,
)
from autoal_dist.data.transforms import Normalizer
from conftest import fails_cleanly

GROUP = 64  # rows per row group in these tests; files hold 300 rows (not a multiple)
PER_FILE = 300


def project_fingerprint(data) -> str:
    """The campaign's own dataset fingerprint (what config.json records)."""
    return data.fingerprint()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def images():
    return load_dataset("synthetic:n=700,test=90,hw=6,c=3,classes=4")


@pytest.fixture(scope="module")
def features():
    return load_dataset("synthetic:n=500,test=60,hw=7,c=0,classes=3")


def write(data, tmp_path: Path, name: str = "pool", **kw) -> str:
    kw = {"rows_per_file": PER_FILE, "rows_per_group": GROUP, **kw}
    out = str(tmp_path / name)
    write_pool(data, out, **kw)
    return out


def index_sets(n: int, rng: np.random.Generator) -> list:
    """Index expressions numpy accepts on axis 0, crossing file and row-group boundaries."""
    return [
        rng.integers(0, n, 50),  # unsorted, with repeats
        np.sort(rng.choice(n, 40, replace=False)),
        np.array([PER_FILE - 1, PER_FILE, GROUP - 1, GROUP, n - 1, 0]),
        [-1, -n, 3],
        rng.integers(0, n, (3, 4)),  # a 2-D index array
        np.array([], np.int64), [],
        rng.random(n) < 0.1,  # a boolean mask
        slice(None), slice(PER_FILE - 5, PER_FILE + GROUP + 5), slice(5, n - 3, 7),
        slice(None, None, -3), slice(-10, None), slice(n + 5, n + 9), slice(7, 3),
        0, n - 1, -1, PER_FILE, np.int64(GROUP),
        (slice(10, 20), 2), (5, 1), (np.array([3, 1]), slice(None), 0),
    ]


@pytest.mark.parametrize("encoding", ["raw", "png"])
@pytest.mark.parametrize("which", ["digits", "images"])
def test_stored_array_indexes_like_the_array(which, encoding, tmp_path, request, rng):
    data = request.getfixturevalue(which)
    stored = load_dataset(f"pool:{write(data, tmp_path, encoding=encoding)}")
    x, ref = stored.train_x, data.train_x
    assert isinstance(x, StoredArray) and len(data.train_x) > 2 * PER_FILE
    assert (x.shape, x.dtype, x.ndim, len(x), x.nbytes) == (
        ref.shape, ref.dtype, ref.ndim, len(ref), ref.nbytes)
    for key in index_sets(len(ref), rng):
        got, want = x[key], ref[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=str(key))
    np.testing.assert_array_equal(stored.train_y, data.train_y)
    np.testing.assert_array_equal(stored.test_x, data.test_x)  # read into memory
    np.testing.assert_array_equal(stored.test_y, data.test_y)
    assert stored.num_classes == data.num_classes and stored.name.startswith("pool:")
    with pytest.raises(IndexError):
        x[len(ref)]
    with pytest.raises(IndexError):
        x[[0, -len(ref) - 1]]
    with pytest.raises(TypeError, match="not converted implicitly"):
        np.asarray(x)


def test_features_round_trip(features, tmp_path, rng):
    stored = load_dataset(f"pool:{write(features, tmp_path)}")
    x = stored.train_x
    assert x.shape == features.train_x.shape and x.dtype == np.float32
    for key in index_sets(len(features.train_x), rng)[:12]:
        np.testing.assert_array_equal(x[key], features.train_x[key])
    assert stored.fingerprint() == project_fingerprint(features)
    a, b = Normalizer.for_dataset(stored), Normalizer.fit(features.train_x)
    assert a.mean.tobytes() == b.mean.tobytes() and a.std.tobytes() == b.std.tobytes()
    with pytest.raises(DataError, match="for images"):
        write_pool(features, str(tmp_path / "png"), encoding="png")


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_fingerprint_and_normalizer_match_the_in_memory_dataset(digits, encoding, tmp_path):
    stored = load_dataset(f"pool:{write(digits, tmp_path, encoding=encoding)}")
    fp = project_fingerprint(digits)
    assert digits.fingerprint() == fp  # Dataset.fingerprint computes what the campaign does
    assert stored.fingerprint() == fp  # recorded at write time: no pass over the pool
    assert stored.train_x.groups_read == 0
    assert project_fingerprint(stored) == fp  # and recomputing it from storage agrees
    want = Normalizer.fit(digits.train_x)
    for got in (Normalizer.for_dataset(stored), Normalizer.fit(stored.train_x)):
        assert got.mean.dtype == np.float32 and got.std.dtype == np.float32
        assert got.mean.tobytes() == want.mean.tobytes()
        assert got.std.tobytes() == want.std.tobytes()
    assert verify_pool(str(tmp_path / "pool")).fingerprint == fp


def test_a_range_reads_only_its_row_groups(digits, tmp_path):
    x = load_dataset(f"pool:{write(digits, tmp_path)}").train_x
    lo, hi = PER_FILE - 10, PER_FILE + 70  # file 0's last group, file 1's first two
    np.testing.assert_array_equal(x[lo:hi], digits.train_x[lo:hi])
    assert x.groups_read == 3
    files = [pq.ParquetFile(Path(x.location, p)).metadata for p in x._paths[:2]]
    stored = [files[0].row_group(files[0].num_row_groups - 1), files[1].row_group(0),
              files[1].row_group(1)]
    read = x.bytes_read  # what left storage: the 3 groups' sample chunks, as stored
    assert read == sum(g.column(c).total_compressed_size for g in stored
                       for c in range(g.num_columns) if g.column(c).path_in_schema == "sample")
    assert read > 0
    for b in range(lo, hi, 16):  # a batch-by-batch sweep hits the cache
        x[b:b + 16]
    assert x.groups_read == 3 and x.bytes_read == read
    bounds = x.row_group_bounds()
    assert bounds[0] == 0 and bounds[-1] == len(x) and PER_FILE in bounds and GROUP in bounds

    shard = x.view(100, 400)  # lazy; what an actor gets
    assert isinstance(shard, StoredArray) and shard.shape == (300, 8, 8, 1)
    assert shard.groups_read == 0
    clone = pickle.loads(pickle.dumps(shard))
    assert len(pickle.dumps(shard)) < 4096
    np.testing.assert_array_equal(clone[:], digits.train_x[100:400])
    np.testing.assert_array_equal(clone[[-1, 0, 150]], digits.train_x[[399, 100, 250]])
    np.testing.assert_array_equal(clone.view(10, 20)[:], digits.train_x[110:120])
    assert clone.row_group_bounds().tolist() == [0, 28, 92, 156, 200, 264, 300]


def test_rows_read_by_id_are_remembered_within_the_budget(digits, tmp_path, rng):
    """The driver's training split keeps rows read by id (the labeled set, read every
    round): the next round reads only its new rows' row groups; sweeps are not kept."""
    from autoal_dist.scoring.rows import RowsAt

    x = load_dataset(f"pool:{write(digits, tmp_path)}").train_x
    assert x.row_cache_bytes > 0
    x.cache_bytes = 0  # no LRU of row groups: every group not remembered is read again
    labeled = np.sort(rng.choice(len(x), 40, replace=False))
    np.testing.assert_array_equal(x[labeled], digits.train_x[labeled])
    first = x.groups_read
    assert x.remembered_bytes == 40 * 64
    np.testing.assert_array_equal(x[labeled[::-1]], digits.train_x[labeled[::-1]])
    assert x.groups_read == first  # nothing read again
    new = np.setdiff1d(np.arange(0, len(x), 97), labeled)
    grown = np.union1d(labeled, new)
    np.testing.assert_array_equal(x[grown], digits.train_x[grown])
    new_groups = np.unique(np.searchsorted(x.row_group_bounds(), new, "right") - 1)
    assert x.groups_read - first == len(new_groups)  # only the new rows' groups
    # a sweep reads through, remembering nothing; pickling (to an actor) drops the rows
    before = x.remembered_bytes
    rows = RowsAt(x, np.arange(len(x)))
    for lo in range(0, len(x), 128):
        np.testing.assert_array_equal(rows[lo:lo + 128], digits.train_x[lo:lo + 128])
    rows.close()
    assert x.remembered_bytes == before
    assert pickle.loads(pickle.dumps(x)).remembered_bytes == 0
    # the budget bounds it: the least recently read rows go first
    y = load_dataset(f"pool:{write(digits, tmp_path, 'small')}").train_x
    y.row_cache_bytes = 10 * 64
    np.testing.assert_array_equal(y[labeled], digits.train_x[labeled])
    assert y.remembered_bytes == 10 * 64 and list(y._rows) == labeled[-10:].tolist()
    y[labeled[-3:]]  # read again: now the most recent
    np.testing.assert_array_equal(y[[5, 6]], digits.train_x[[5, 6]])
    assert list(y._rows)[-5:] == [*labeled[-3:].tolist(), 5, 6]


def test_written_layout(digits, tmp_path):
    meta = write_pool(digits, str(tmp_path / "p"), rows_per_file=PER_FILE, rows_per_group=GROUP)
    files = sorted(p.relative_to(tmp_path / "p").as_posix()
                   for p in (tmp_path / "p").rglob("*") if p.is_file())
    n, m = len(digits.train_x), len(digits.test_x)
    assert files == [".lock", "pool.json"] + [  # .lock: the writer's (hidden, like a run's)
        f"test/part-{i:05d}.parquet" for i in range(2)] + [
        f"train/part-{i:05d}.parquet" for i in range(-(-n // PER_FILE))]
    assert meta.rows("train") == n and meta.rows("test") == m
    assert meta.splits["train"][0].row_groups == (64, 64, 64, 64, 44)
    assert read_meta(str(tmp_path / "p")) == meta
    pf = pq.ParquetFile(tmp_path / "p" / "train" / "part-00001.parquet")
    assert pf.schema_arrow.field("sample").type == pa.binary(64)
    np.testing.assert_array_equal(pf.read(columns=["id"]).column("id").to_numpy(),
                                  np.arange(PER_FILE, 2 * PER_FILE))
    # a stored pool can be copied, e.g. re-encoded, without reading it into memory
    copy = write_pool(open_pool(str(tmp_path / "p")), str(tmp_path / "c"), encoding="png")
    assert copy.fingerprint == meta.fingerprint and copy.encoding == "png"
    np.testing.assert_array_equal(load_dataset(f"pool:{tmp_path / 'c'}").train_x[:],
                                  digits.train_x)


def test_validate_reads_no_samples(digits, tmp_path):
    stored = open_pool(write(digits, tmp_path))
    validate(stored)
    assert stored.train_x.groups_read == 0 and stored.is_stored and not digits.is_stored


# ---- errors: one line, naming the file ------------------------------------------------------


def one_line_error(fn, *parts: str) -> str:
    with pytest.raises(DataError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, msg
    return msg


def rewrite(path: Path, **columns) -> None:
    """Rewrite a part file with some columns replaced, keeping its schema and row groups."""
    pf = pq.ParquetFile(path)
    sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    table = pf.read()
    for name, values in columns.items():
        field = table.schema.field(name)
        table = table.set_column(table.schema.get_field_index(name), field,
                                 pa.array(values, field.type))
    with pq.ParquetWriter(path, pf.schema_arrow) as w:
        lo = 0
        for size in sizes:
            w.write_table(table.slice(lo, size), row_group_size=size)
            lo += size


@pytest.fixture
def pool(digits, tmp_path) -> Path:
    return Path(write(digits, tmp_path))


def edit_meta(pool: Path, *, old: bool = False, **changes) -> None:
    """Edit pool.json's fields (None = drop); `old`: drop its header digest too, as a pool
    written before pool.json recorded one."""
    meta = json.loads((pool / "pool.json").read_text())
    for key, value in {**changes, **({"header_digest": None} if old else {})}.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    (pool / "pool.json").write_text(json.dumps(meta))


def test_missing_or_bad_pool_json(pool, tmp_path):
    meta = pool / "pool.json"
    text = meta.read_text()
    meta.write_text("{not json")
    one_line_error(lambda: load_dataset(f"pool:{pool}"), str(meta), "not valid JSON")
    meta.write_text(json.dumps({**json.loads(text), "version": 99}))
    one_line_error(lambda: load_dataset(f"pool:{pool}"), str(meta), "version 99")
    meta.write_text(text)
    edit_meta(pool, num_classes=None)  # caught by the header digest ...
    one_line_error(lambda: load_dataset(f"pool:{pool}"), str(meta), "edited after")
    meta.write_text(text)
    edit_meta(pool, old=True, num_classes=None)  # ... and in an older pool, which has none
    one_line_error(lambda: load_dataset(f"pool:{pool}"), str(meta), "malformed")
    meta.unlink()  # what a writer killed before its last step leaves
    one_line_error(lambda: load_dataset(f"pool:{pool}"), str(meta), "incomplete pool")
    one_line_error(lambda: load_dataset(f"pool:{tmp_path / 'nowhere'}"),
                   str(tmp_path / "nowhere"), "does not exist")
    one_line_error(lambda: load_dataset("pool:"), "pool:DIR")


def test_missing_or_unreadable_part_file(pool):
    part = pool / "train" / "part-00002.parquet"
    saved = part.read_bytes()
    part.write_bytes(b"not parquet at all")
    one_line_error(lambda: load_dataset(f"pool:{pool}"), str(part), "cannot read")
    part.unlink()
    one_line_error(lambda: load_dataset(f"pool:{pool}"), str(part), "missing")
    part.write_bytes(saved)
    x = load_dataset(f"pool:{pool}").train_x
    part.unlink()  # gone after the pool was opened: the read names it
    one_line_error(lambda: x[2 * PER_FILE + 5], str(part), "cannot read")


def test_part_file_of_another_shape(pool, tmp_path, images):
    other = Path(write(images, tmp_path, "other"))
    part = pool / "train" / "part-00001.parquet"
    shutil.copy(other / "train" / "part-00001.parquet", part)
    one_line_error(lambda: load_dataset(f"pool:{pool}"), str(part), "schema", "binary")


def test_png_part_file_of_another_image_size(digits, tmp_path):
    pool = Path(write(digits, tmp_path, encoding="png"))
    bigger = load_dataset("synthetic:n=700,test=90,hw=9,c=1,classes=4")
    other = Path(write(bigger, tmp_path, "other", encoding="png"))
    part = pool / "test" / "part-00000.parquet"
    shutil.copy(other / "test" / "part-00000.parquet", part)
    one_line_error(lambda: load_dataset(f"pool:{pool}"), str(part), "sample layout", "[9, 9, 1]")


def test_part_file_replaced_by_one_of_other_row_groups(pool, digits):
    x = load_dataset(f"pool:{pool}").train_x
    part = pool / "train" / "part-00000.parquet"
    pq.write_table(pq.read_table(part), part, row_group_size=100)
    one_line_error(lambda: x[3], str(part), "pool.json records 300 rows in 5")


def test_duplicate_ids_across_files(pool):
    part = pool / "train" / "part-00001.parquet"
    rewrite(part, id=np.arange(0, PER_FILE))  # file 1 repeats file 0's ids
    one_line_error(lambda: load_dataset(f"pool:{pool}"), str(part), "row 0 has id 0",
                   "expected 300", str(pool / "train" / "part-00000.parquet"), "duplicate")


def test_ids_not_0_to_n(pool):
    part = pool / "train" / "part-00003.parquet"
    ids = np.arange(3 * PER_FILE, 4 * PER_FILE)
    ids[17] = 10**6
    rewrite(part, id=ids)
    one_line_error(lambda: load_dataset(f"pool:{pool}"), str(part), "row 17 has id 1000000",
                   f"expected {3 * PER_FILE + 17}")


def test_labels_out_of_range(pool):
    part = pool / "test" / "part-00001.parquet"
    labels = pq.read_table(part).column("label").to_numpy().copy()
    labels[4] = 10
    rewrite(part, label=labels)
    one_line_error(lambda: load_dataset(f"pool:{pool}"), str(part), "row 4 has label 10",
                   "[0, 9]")
    labels[4] = -1
    rewrite(part, label=labels)
    one_line_error(lambda: load_dataset(f"pool:{pool}"), str(part), "label -1")


def test_writer_refuses_a_non_empty_target(digits, tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "something").write_text("x")
    one_line_error(lambda: write_pool(digits, str(target)), str(target), "not empty")
    one_line_error(lambda: write_pool(digits, str(tmp_path / "u"), encoding="jpeg"), "jpeg")


# ---- S3 ---------------------------------------------------------------------------------------


def test_s3_round_trip(s3_bucket, images, rng):
    uri = f"{s3_bucket}/pools/images"
    meta = write_pool(images, uri, rows_per_file=PER_FILE, rows_per_group=GROUP, encoding="png")
    assert meta.fingerprint == project_fingerprint(images)
    stored = load_dataset(f"pool:{uri}")
    x = stored.train_x
    assert x.location == uri
    for key in index_sets(len(images.train_x), rng)[:10]:
        np.testing.assert_array_equal(x[key], images.train_x[key])
    shard = pickle.loads(pickle.dumps(x.view(250, 650)))  # as an actor would get it
    np.testing.assert_array_equal(shard[:], images.train_x[250:650])
    np.testing.assert_array_equal(stored.test_x, images.test_x)
    assert verify_pool(uri) == meta
    assert seal_pool(uri).header_digest == meta.header_digest == read_meta(uri).header_digest
    one_line_error(lambda: write_pool(images, uri), uri, "not empty")
    one_line_error(lambda: load_dataset(f"pool:{s3_bucket}/nothing"), f"{s3_bucket}/nothing")


def test_a_failed_write_leaves_no_pool(pool, tmp_path):
    source = open_pool(str(pool))  # copying a pool whose 4th file vanishes mid-copy
    (pool / "train" / "part-00003.parquet").unlink()
    target = tmp_path / "copy"
    one_line_error(lambda: write_pool(source, str(target), rows_per_file=PER_FILE),
                   str(pool / "train" / "part-00003.parquet"))
    assert (target / "train" / "part-00000.parquet").is_file()  # parts went first ...
    assert not (target / "pool.json").exists()  # ... pool.json never came
    one_line_error(lambda: load_dataset(f"pool:{target}"), "incomplete pool")


@pytest.mark.parametrize("uri", ["s3://", "gopher://host/pool"])
def test_bad_uris(uri, digits):
    one_line_error(lambda: load_dataset(f"pool:{uri}"), uri)
    one_line_error(lambda: write_pool(digits, uri), uri)


def test_pool_commands(tmp_path, capsys):
    import argparse

    from autoal_dist.data.pool_cli import add_pool_parser, cmd_pool

    p = argparse.ArgumentParser()
    add_pool_parser(p.add_subparsers(dest="command", required=True))
    out = tmp_path / "pool"

    def run(*argv: str) -> str:
        assert cmd_pool(p.parse_args(list(argv))) == 0
        return capsys.readouterr().out

    text = run("pool", "write", "synthetic:n=300,test=40,hw=4,c=1,classes=3", "--to", str(out),
               "--encoding", "png", "--rows-per-file", "100", "--rows-per-group", "32")
    assert "300 train + 40 test samples 4x4x1 uint8 (png), 3 classes, 3 + 1 files" in text
    assert f"--dataset pool:{out}" in text
    assert "fingerprint" in run("pool", "info", str(out))
    assert run("pool", "verify", str(out)).startswith("ok: ")
    one_line_error(lambda: cmd_pool(p.parse_args(["pool", "write", "digits", "--to", str(out)])),
                   "not empty")


# ---- a part replaced by one with the same ids and row groups (#27) --------------------------

def _swap_samples(path: Path) -> None:
    """The part with its first two rows' samples exchanged: same ids, labels, row groups."""
    samples = pq.read_table(path).column("sample").to_pylist()
    samples[0], samples[1] = samples[1], samples[0]
    rewrite(path, sample=samples)


@pytest.mark.parametrize("change", ["labels", "samples"])
def test_a_replaced_part_is_refused_by_run_and_resume(digits, tmp_path, capsys, change):
    """A part file replaced by one with the same ids and row groups but other labels (or
    samples): its digests in pool.json no longer match, so a fresh run and a resume refuse it
    in one line (exit 2), with the run directory unchanged."""
    from autoal_dist.cli import main

    pool = Path(write(digits, tmp_path))
    run = tmp_path / "run"
    args = ["--dataset", f"pool:{pool}", "--local", "--quiet", "--init", "20", "--budget", "10",
            "--epochs", "1", "--strategy", "margin"]
    assert main(["run", *args, "--rounds", "1", "--out", str(run)]) == 0
    part = pool / "train" / "part-00000.parquet"
    if change == "labels":
        labels = pq.read_table(part).column("label").to_numpy().copy()
        rewrite(part, label=(labels + 1) % 10)
    else:
        _swap_samples(part)
    def state() -> dict:  # what the campaign knows: journal, metrics, labels
        return {p: p.read_bytes() for p in run.rglob("*")
                if p.is_file() and p.name not in ("config.json", ".lock")}

    before = state()
    capsys.readouterr()
    assert main(["run", "--resume", "--out", str(run), "--rounds", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # the error: the last line, one line
    assert err.startswith("autoal-dist: error: ") and str(part) in err
    assert "not the ones pool.json recorded" in err
    assert state() == before
    assert main(["run", *args, "--rounds", "1", "--out", str(tmp_path / "fresh")]) == 2
    assert "not the ones pool.json recorded" in capsys.readouterr().err


def test_a_pool_without_digests_is_checked_against_the_runs_pool_parquet(digits, tmp_path,
                                                                           capsys):
    """A pool written before the digests existed: its replaced labels are caught against the
    labels the run recorded in its pool.parquet."""
    from autoal_dist.cli import main

    pool = Path(write(digits, tmp_path))
    meta = json.loads((pool / "pool.json").read_text())
    for files in meta["splits"].values():
        for f in files:
            f.pop("labels"), f.pop("samples")
    edit_meta(pool, old=True, splits=meta["splits"])
    run = tmp_path / "run"
    assert main(["run", "--dataset", f"pool:{pool}", "--local", "--quiet", "--init", "20",
                 "--budget", "10", "--epochs", "1", "--rounds", "1", "--out", str(run)]) == 0
    part = pool / "train" / "part-00000.parquet"
    labels = pq.read_table(part).column("label").to_numpy().copy()
    rewrite(part, label=(labels + 1) % 10)
    capsys.readouterr()
    assert main(["run", "--resume", "--out", str(run), "--rounds", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "train label of sample 0 is" in err and "pool.parquet" in err


def test_normalizing_a_stored_pools_read_only_rows_warns_nothing():
    """Every actor normalizes read-only row groups: torch's non-writable-array warning would
    land on every actor's stderr (it fires once per process, so a fresh one is asked)."""
    code = ("import warnings, numpy as np\nwarnings.simplefilter('error')\n"
            "from autoal_dist.data.transforms import Normalizer\n"
            "x = np.zeros((2, 4, 4, 1), np.uint8); x.flags.writeable = False\n"
            "Normalizer.fit(np.ones((2, 4, 4, 1), np.uint8))(x)\nprint('ok')")
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-1000:]


def test_a_pool_json_with_another_class_count_is_refused_on_resume(digits, tmp_path, capsys):
    """num_classes edited in pool.json (10 -> 1000): its header digest no longer matches, so the
    resume refuses the pool when it opens it; in an older pool without one, the edit passes
    the pool's own checks (its labels are in range) but not the campaign's: config.json
    recorded 10."""
    from autoal_dist.cli import main

    pool = Path(write(digits, tmp_path))
    run = tmp_path / "run"
    assert main(["run", "--dataset", f"pool:{pool}", "--local", "--quiet", "--init", "20",
                 "--budget", "10", "--epochs", "1", "--rounds", "1", "--out", str(run)]) == 0
    edit_meta(pool, num_classes=1000)
    capsys.readouterr()
    assert main(["run", "--resume", "--out", str(run), "--rounds", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(pool / "pool.json") in err and "edited after `pool write` wrote it" in err
    edit_meta(pool, old=True)
    assert main(["run", "--resume", "--out", str(run), "--rounds", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the data has 1000 classes, the campaign 10" in err


def test_a_pool_json_missing_a_file_entry_says_so(pool):
    meta = json.loads((pool / "pool.json").read_text())
    dropped = meta["splits"]["train"].pop(1)["path"]
    text = (pool / "pool.json").read_text()
    edit_meta(pool, splits=meta["splits"])
    one_line_error(lambda: load_dataset(f"pool:{pool}"), "pool.json", "edited after")
    (pool / "pool.json").write_text(text)
    edit_meta(pool, old=True, splits=meta["splits"])  # a pool without a header digest
    msg = one_line_error(lambda: load_dataset(f"pool:{pool}"), "part-00002.parquet",
                         "the entry of a file before train/part-00002.parquet is missing")
    assert dropped == "train/part-00001.parquet" and "ids 300..599" in msg


# ---- pool.json's own header digest (#27) ------------------------------------------------------

EDITS = {  # field -> an edited value; none of them is caught by any other check at open
    "num_classes": 1000, "name": "cifar10", "fingerprint": "0" * 32,
    "normalizer_mean": [0.5], "normalizer_std": [0.25], "extra": 1, "header_digest": None,
}


@pytest.mark.parametrize("key", list(EDITS))
def test_an_edited_pool_json_is_refused_when_read(pool, key):
    """Any field edited after `pool write` (or added, or the digest itself nulled: not taken
    for an older pool) is one line naming pool.json, listing the fields the digest covers."""
    meta = json.loads((pool / "pool.json").read_text())
    meta[key] = EDITS[key]
    (pool / "pool.json").write_text(json.dumps(meta))
    for fn in (lambda: read_meta(str(pool)), lambda: open_pool(str(pool))):
        one_line_error(fn, str(pool / "pool.json"), "edited after `pool write` wrote it",
                             "its header no longer matches its digest", "num_classes, "
                             "sample_shape, splits", "undo the edit, or write the pool again",
                             f"`autoal-dist pool seal {pool}`")


def test_the_header_digest_ignores_layout_and_sample_shape_edits_are_caught(pool):
    """The digest is over canonical JSON: re-indenting pool.json or reordering its keys is no
    edit. An edited sample shape or dtype is caught by the digest, and in an older pool by
    the part files' recorded layout, as before."""
    meta = json.loads((pool / "pool.json").read_text())
    text = (pool / "pool.json").read_text()
    (pool / "pool.json").write_text(json.dumps(dict(reversed(meta.items())), indent=7))
    assert read_meta(str(pool)).header_digest == meta["header_digest"]
    for key, value, older in (("sample_shape", [4, 16, 1], "sample layout"),
                              ("dtype", "float32", "unsupported sample layout")):
        (pool / "pool.json").write_text(text)
        edit_meta(pool, **{key: value})
        one_line_error(lambda: load_dataset(f"pool:{pool}"), "edited after")
        edit_meta(pool, old=True)
        one_line_error(lambda: load_dataset(f"pool:{pool}"), older)


def test_pool_verify_of_an_edited_a_fresh_and_an_older_pool(digits, tmp_path, capsys):
    """`pool verify`: a fresh pool is ok; an edited num_classes is exit 2 with the one line
    (and `run` refuses the pool the same way, before anything is written); an older pool
    without a header digest still verifies and opens, with a note saying it has none; in one,
    a num_classes below max(label)+1 is still refused by the label check."""
    from autoal_dist.cli import main

    pool = Path(write(digits, tmp_path))
    text = (pool / "pool.json").read_text()
    assert main(["pool", "verify", str(pool)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ") and out.count("\n") == 1 and "header digest" not in out

    edit_meta(pool, num_classes=1000)
    for argv in (["pool", "verify", str(pool)], ["pool", "info", str(pool)],
                 ["run", "--dataset", f"pool:{pool}", "--local", "--quiet",
                  "--out", str(tmp_path / "run")]):
        fails_cleanly(capsys, argv, f"{pool / 'pool.json'}: edited after `pool write` wrote "
                      "it: its header no longer matches its digest (header_digest covers ")
    assert not (tmp_path / "run").exists()

    (pool / "pool.json").write_text(text)
    edit_meta(pool, old=True)  # as an older version wrote it
    assert main(["pool", "verify", str(pool)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok: ") and out[1].startswith(
        "note: pool.json has no header digest (written by an older version)")
    assert out[1].endswith(f"`autoal-dist pool seal {pool}` records one")
    data = open_pool(str(pool))
    assert data.num_classes == 10 and len(data.train_y) == len(digits.train_y)
    edit_meta(pool, old=True, num_classes=5)
    fails_cleanly(capsys, ["pool", "verify", str(pool)], "row 1 has label 6, outside [0, 4] "
                  "(num_classes=5)")


def test_pool_seal_records_the_digest_of_an_intended_edit_after_checking_the_pool(
        digits, tmp_path, capsys):
    """`pool seal`: an intended edit (or an older pool) gets a header digest once the whole
    pool checks out against pool.json as it now reads; a pool that does not is left as it is."""
    from autoal_dist.cli import main

    pool = Path(write(digits, tmp_path))
    text = (pool / "pool.json").read_text()
    edit_meta(pool, num_classes=12, extra="dropped")
    one_line_error(lambda: open_pool(str(pool)), "edited after")
    assert main(["pool", "seal", str(pool)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"sealed: {pool}:") and "12 classes" in out and out.count("\n") == 1
    assert "extra" not in json.loads((pool / "pool.json").read_text())
    assert open_pool(str(pool)).num_classes == 12
    assert main(["pool", "verify", str(pool)]) == 0 and "note" not in capsys.readouterr().out

    edit_meta(pool, old=True, num_classes=10)  # an older pool: sealed as it reads
    assert read_meta(str(pool)).header_digest == ""
    assert seal_pool(str(pool)).header_digest == read_meta(str(pool)).header_digest
    assert (pool / "pool.json").read_text() == text  # what `pool write` wrote, byte for byte

    part = pool / "train" / "part-00000.parquet"  # a pool that no longer checks out
    _swap_samples(part)
    edit_meta(pool, num_classes=11)
    edited = (pool / "pool.json").read_text()
    fails_cleanly(capsys, ["pool", "seal", str(pool)],
                  f"{part}: the samples of row group 0 are not the ones pool.json recorded")
    assert (pool / "pool.json").read_text() == edited  # not sealed
    fails_cleanly(capsys, ["pool", "seal", str(tmp_path / "nowhere")], "does not exist")
