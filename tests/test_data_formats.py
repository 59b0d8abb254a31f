"""Dataset loaders: each test writes tiny files in the real on-disk format and loads them
through `load_dataset`, as the CLI does; error tests check for a one-line DataError."""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from autoal_dist.data import DATASETS, DataError, load_dataset
from autoal_dist.data import files as data_files


def expect_error(spec: str, data_root: str | Path | None, *fragments: str) -> str:
    """Loading fails with a one-line DataError containing every fragment."""
    with pytest.raises(DataError) as info:
        load_dataset(spec, None if data_root is None else str(data_root))
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def rng_images(n: int, *shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.squeeze()).save(buf, format=fmt)
    return buf.getvalue()


def test_all_formats_registered():
    assert {"digits", "synthetic", "npz", "parquet", "medmnist", "cifar10", "cifar100", "svhn",
            "tinyimagenet"} <= set(DATASETS)


# ---------------------------------------------------------------- embedded


def test_digits():
    ds = load_dataset("digits")
    assert ds.input_shape == (8, 8, 1) and ds.train_x.dtype == np.uint8
    assert len(ds.train_x) + len(ds.test_x) == 1797 and ds.num_classes == 10
    expect_error("digits:x", None, "digits:x")


def test_synthetic_tinyimagenet_shape():
    ds = load_dataset("synthetic:tinyimagenet,n=100,test=10")
    assert ds.train_x.shape == (100, 64, 64, 3) and ds.test_x.shape == (10, 64, 64, 3)
    assert ds.num_classes == 200 and ds.train_y.dtype == np.int64


def test_synthetic_features():
    ds = load_dataset("synthetic:n=50,test=10,c=0,hw=7,classes=3")
    assert ds.train_x.shape == (50, 7) and ds.train_x.dtype == np.float32


@pytest.mark.parametrize("spec, fragment", [
    ("synthetic:bogus=1", "'bogus=1' invalid"),
    ("synthetic:n=abc", "not an integer"),
    ("synthetic:n", "'n' invalid"),
    ("synthetic:c=2", "c=2"),
    ("synthetic:n=0", "n=0"),
    ("synthetic:classes=1", "classes must be >= 2"),
])
def test_synthetic_bad_specs(spec, fragment):
    expect_error(spec, None, fragment)


def test_unknown_dataset():
    expect_error("nosuch", None, "unknown dataset 'nosuch'", "cifar10", "tinyimagenet")


# ---------------------------------------------------------------- npz


def write_npz(path: Path, **overrides: np.ndarray) -> Path:
    arrays = {
        "train_images": rng_images(12, 10, 10), "train_labels": np.arange(12).reshape(-1, 1) % 3,
        "val_images": rng_images(4, 10, 10), "val_labels": np.array([[0], [1], [2], [4]]),
        "test_images": rng_images(6, 10, 10), "test_labels": np.arange(6).reshape(-1, 1) % 3,
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_npz_grayscale(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    ds = load_dataset(f"npz:{path}")
    assert ds.train_x.shape == (12, 10, 10, 1) and ds.test_x.shape == (6, 10, 10, 1)
    assert ds.train_y.dtype == np.int64 and ds.train_y.tolist() == [0, 1, 2] * 4
    assert ds.num_classes == 5  # val's label 4 counts
    assert ds.name == f"npz:{path}"


def test_npz_rgb_flat_labels(tmp_path):
    path = write_npz(tmp_path / "d.npz", train_images=rng_images(12, 8, 8, 3),
                     test_images=rng_images(6, 8, 8, 3), train_labels=np.arange(12) % 2,
                     val_images=None, val_labels=None)
    ds = load_dataset(f"npz:{path}")
    assert ds.input_shape == (8, 8, 3) and ds.num_classes == 3


@pytest.mark.parametrize("overrides, fragments", [
    ({"train_images": None}, ["no key 'train_images'", "has train_labels"]),
    ({"test_labels": None}, ["no key 'test_labels'"]),
    ({"train_images": rng_images(12, 10, 10).astype(np.float32)},
     ["key 'train_images'", "uint8", "float32"]),
    ({"test_labels": np.zeros((5, 1), np.int64)}, ["key 'test_labels'", "5 labels for 6 images"]),
    ({"train_labels": np.zeros((12, 3), np.int64)}, ["key 'train_labels'", "multi-label"]),
    ({"train_labels": np.zeros(12, np.float64)}, ["key 'train_labels'", "integers"]),
    ({"train_images": rng_images(12, 10)}, ["key 'train_images'", "[N,H,W]"]),
])
def test_npz_errors(tmp_path, overrides, fragments):
    path = write_npz(tmp_path / "d.npz", **overrides)
    expect_error(f"npz:{path}", None, str(path), *fragments)


def test_npz_missing_and_not_npz(tmp_path):
    expect_error(f"npz:{tmp_path}/none.npz", None, f"{tmp_path}/none.npz not found", "train_images")
    expect_error("npz", None, "needs a path")
    np.save(tmp_path / "one.npy", np.zeros(3))
    expect_error(f"npz:{tmp_path}/one.npy", None, "not an .npz archive")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04garbage")
    expect_error(f"npz:{tmp_path}/junk.npz", None, f"cannot read {tmp_path}/junk.npz")


# ---------------------------------------------------------------- parquet


def test_parquet_png_bytes_with_split(tmp_path):
    gray = rng_images(10, 9, 7)
    table = pa.table({
        "image": pa.array([encode(im, "PNG") for im in gray], pa.binary()),
        "label": pa.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0], pa.int32()),
        "split": ["train"] * 7 + ["test"] * 3,
    })
    pq.write_table(table, tmp_path / "d.parquet")
    ds = load_dataset(f"parquet:{tmp_path}/d.parquet")
    assert ds.train_x.shape == (7, 9, 7, 1) and ds.test_x.shape == (3, 9, 7, 1)
    np.testing.assert_array_equal(ds.train_x[..., 0], gray[:7])  # PNG is lossless
    assert ds.test_y.tolist() == [1, 2, 0] and ds.num_classes == 3


def test_parquet_huggingface_struct_holdout(tmp_path):
    rgb = rng_images(20, 6, 6, 3)
    images = [{"bytes": encode(im, "PNG"), "path": f"{i}.png"} for i, im in enumerate(rgb)]
    images[3]["bytes"] = encode(rgb[3, ..., 0], "PNG")  # one grayscale image among RGB
    pq.write_table(pa.table({"image": images, "label": np.arange(20) % 4}), tmp_path / "hf.parquet")
    ds = load_dataset(f"parquet:{tmp_path}/hf.parquet", seed=1)
    assert ds.train_x.shape == (16, 6, 6, 3) and ds.test_x.shape == (4, 6, 6, 3)
    assert ds.num_classes == 4


def test_parquet_features(tmp_path):
    feats = np.random.default_rng(0).normal(size=(10, 5))
    pq.write_table(pa.table({"features": list(feats), "label": np.arange(10) % 2,
                             "split": ["train"] * 8 + ["test"] * 2}), tmp_path / "f.parquet")
    ds = load_dataset(f"parquet:{tmp_path}/f.parquet")
    assert ds.train_x.shape == (8, 5) and ds.train_x.dtype == np.float32
    np.testing.assert_allclose(ds.test_x, feats[8:].astype(np.float32))


@pytest.mark.parametrize("columns, fragments", [
    ({"features": [[1.0], [2.0]]}, ["no column 'label'"]),
    ({"label": [0, 1]}, ["exactly one of the columns 'image', 'features'"]),
    ({"label": [0.0, 1.0], "features": [[1.0], [2.0]]}, ["column 'label'", "integers"]),
    ({"label": [0, 1], "features": [[1.0], [2.0, 3.0]]},
     ["column 'features'", "one non-zero length"]),
    ({"label": [0, 1], "features": [[1.0], [2.0]], "split": ["train", "valid"]},
     ["column 'split'", "'valid'"]),
    ({"label": [0, 1], "image": ["a.png", "b.png"]}, ["column 'image'", "row 0", "no image bytes"]),
    ({"label": [0, 1], "image": [b"not an image", b"x"]}, ["column 'image' row 0"]),
])
def test_parquet_errors(tmp_path, columns, fragments):
    pq.write_table(pa.table(columns), tmp_path / "bad.parquet")
    expect_error(f"parquet:{tmp_path}/bad.parquet", None, str(tmp_path / "bad.parquet"), *fragments)


def test_parquet_mixed_sizes_and_missing(tmp_path):
    images = [encode(rng_images(1, 4, 4), "PNG"), encode(rng_images(1, 5, 4), "PNG")]
    pq.write_table(pa.table({"image": images, "label": [0, 1]}), tmp_path / "m.parquet")
    expect_error(f"parquet:{tmp_path}/m.parquet", None, "row 1 has shape (5, 4, 1)", "row 0")
    expect_error(f"parquet:{tmp_path}/none.parquet", None, f"{tmp_path}/none.parquet not found")
    (tmp_path / "junk.parquet").write_bytes(b"junk")
    expect_error(f"parquet:{tmp_path}/junk.parquet", None, f"cannot read {tmp_path}/junk.parquet")


# ---------------------------------------------------------------- medmnist


def test_medmnist_sizes(tmp_path):
    write_npz(tmp_path / "pathmnist.npz", train_images=rng_images(12, 28, 28, 3),
              val_images=rng_images(4, 28, 28, 3), test_images=rng_images(6, 28, 28, 3))
    write_npz(tmp_path / "pathmnist_64.npz", train_images=rng_images(12, 64, 64, 3),
              val_images=rng_images(4, 64, 64, 3), test_images=rng_images(6, 64, 64, 3))
    ds = load_dataset("medmnist:pathmnist", str(tmp_path))
    assert ds.train_x.shape == (12, 28, 28, 3) and ds.test_x.shape == (6, 28, 28, 3)
    assert ds.num_classes == 9 and ds.train_y.tolist() == [0, 1, 2] * 4  # from medmnist.INFO
    ds64 = load_dataset("medmnist:PathMNIST@64", str(tmp_path))
    assert ds64.train_x.shape == (12, 64, 64, 3)


def test_medmnist_grayscale(tmp_path):
    write_npz(tmp_path / "pneumoniamnist.npz",
              train_labels=np.arange(12).reshape(-1, 1) % 2, test_labels=np.arange(6) % 2)
    ds = load_dataset("medmnist:pneumoniamnist", str(tmp_path))
    assert ds.input_shape == (10, 10, 1) and ds.num_classes == 2


def test_medmnist_errors(tmp_path):
    expect_error("medmnist:pathmnist", None, "needs --data-root DIR", "DIR/pathmnist.npz")
    expect_error("medmnist:pathmnist@64", tmp_path, f"{tmp_path}/pathmnist_64.npz not found")
    expect_error("medmnist:pathmnist", tmp_path / "nodir", f"{tmp_path}/nodir is not a directory")
    expect_error("medmnist:pathmnist@32", tmp_path, "size '32' not available", "28, 64, 128, 224")
    expect_error("medmnist:nosuch", tmp_path, "unknown MedMNIST dataset 'nosuch'", "pathmnist")
    expect_error("medmnist:chestmnist", tmp_path, "multi-label")
    expect_error("medmnist:organmnist3d", tmp_path, "3-D")
    write_npz(tmp_path / "bloodmnist.npz", train_images=None)
    expect_error("medmnist:bloodmnist", tmp_path, f"cannot read {tmp_path}/bloodmnist.npz",
                 "train_images")


# ---------------------------------------------------------------- torchvision: CIFAR, SVHN


@pytest.fixture
def skip_md5(monkeypatch):
    """Our tiny files cannot match the official md5s: accept any existing file instead.

    CIFAR checks md5 in `_check_integrity` and again for the meta file in `_load_meta`, both
    through the module's `check_integrity`, so that is the function patched.
    """
    import torchvision.datasets.cifar
    import torchvision.datasets.svhn

    def exists(fpath: str, md5: str | None = None) -> bool:
        return os.path.isfile(fpath)

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", exists)
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", exists)


def cifar_batch(n: int, label_key: str, labels: list[int]) -> dict[str, object]:
    """CHW-flattened rows as in the official batches: channel c of image i is filled with 10*i+c.

    The official files are Python 2 pickles; their keys come back as str under the latin1
    decoding torchvision uses (as bytes only under encoding='bytes'), hence str keys here.
    """
    data = np.zeros((n, 3, 32, 32), np.uint8)
    for i in range(n):
        for c in range(3):
            data[i, c] = 10 * i + c
    return {"data": data.reshape(n, 3072), label_key: labels}


def write_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def write_cifar10(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    for b in range(1, 6):
        write_pickle(folder / f"data_batch_{b}", cifar_batch(2, "labels", [b % 10, (b + 1) % 10]))
    write_pickle(folder / "test_batch", cifar_batch(3, "labels", [0, 1, 9]))
    write_pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})


def test_cifar10(tmp_path, skip_md5):
    write_cifar10(tmp_path)
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.train_x.shape == (10, 32, 32, 3) and ds.test_x.shape == (3, 32, 32, 3)
    assert ds.train_x.dtype == np.uint8 and ds.train_x.flags.c_contiguous
    assert ds.test_x[1, 5, 7].tolist() == [10, 11, 12]  # CHW rows became HWC pixels
    assert ds.train_y.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6] and ds.num_classes == 10


def test_cifar100(tmp_path, skip_md5):
    folder = tmp_path / "cifar-100-python"
    write_pickle(folder / "train", cifar_batch(4, "fine_labels", [0, 50, 99, 3]))
    write_pickle(folder / "test", cifar_batch(2, "fine_labels", [7, 99]))
    write_pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    ds = load_dataset("cifar100", str(tmp_path))
    assert ds.train_x.shape == (4, 32, 32, 3) and ds.num_classes == 100
    assert ds.train_y.tolist() == [0, 50, 99, 3] and ds.test_y.tolist() == [7, 99]


def test_cifar_errors(tmp_path, skip_md5):
    expect_error("cifar10", None, "needs --data-root DIR", "cifar-10-batches-py/", "data_batch_5")
    expect_error("cifar10", tmp_path, f"{tmp_path}/cifar-10-batches-py/data_batch_1 not found",
                 "test_batch", "batches.meta", "cifar-10-python.tar.gz")
    expect_error("cifar10:x", tmp_path, "takes no argument")
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    expect_error("cifar10", tmp_path, f"{tmp_path}/cifar-10-batches-py/test_batch not found")
    expect_error("cifar100", tmp_path, f"{tmp_path}/cifar-100-python/train not found")


def test_cifar_unofficial_files_fail_md5(tmp_path):
    write_cifar10(tmp_path)
    expect_error("cifar10", tmp_path, "cannot read", "cifar-10-batches-py", "md5")


def write_svhn(path: Path, labels: list[int]) -> np.ndarray:
    from scipy.io import savemat

    x = rng_images(32, 32, 3, len(labels)).reshape(32, 32, 3, len(labels))
    savemat(path, {"X": x, "y": np.asarray(labels, np.uint8).reshape(-1, 1)})
    return x


def test_svhn(tmp_path, skip_md5):
    x = write_svhn(tmp_path / "train_32x32.mat", [10, 1, 9, 10])
    write_svhn(tmp_path / "test_32x32.mat", [3, 10])
    ds = load_dataset("svhn", str(tmp_path))
    assert ds.train_x.shape == (4, 32, 32, 3) and ds.test_x.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(ds.train_x[2], x[..., 2])  # X[h, w, c, i] -> [i, h, w, c]
    assert ds.train_y.tolist() == [0, 1, 9, 0] and ds.test_y.tolist() == [3, 0]
    assert ds.num_classes == 10 and ds.train_x.flags.c_contiguous


def test_svhn_errors(tmp_path, skip_md5):
    expect_error("svhn", None, "needs --data-root DIR", "train_32x32.mat")
    write_svhn(tmp_path / "train_32x32.mat", [1, 2])
    expect_error("svhn", tmp_path, f"{tmp_path}/test_32x32.mat not found")
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    expect_error("svhn", tmp_path, f"cannot read {tmp_path}")


# ---------------------------------------------------------------- tinyimagenet


def save_jpeg(path: Path, value: int, gray: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (64, 64) if gray else (64, 64, 3)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path, format="JPEG", quality=95)


def write_tinyimagenet(base: Path, wnids=("n03", "n01", "n02")) -> Path:
    """Unsorted wnids.txt; train image of class w is filled with 40*sorted index + 20."""
    root = base / "tiny-imagenet-200"
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for idx, wnid in enumerate(sorted(wnids)):
        for j in range(2):
            save_jpeg(root / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", 40 * idx + 20)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    lines = []
    for i, wnid in enumerate(["n02", "n03", "n01"]):
        save_jpeg(root / "val" / "images" / f"val_{i}.JPEG", 100, gray=(i == 0))
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def test_tinyimagenet(tmp_path):
    root = write_tinyimagenet(tmp_path)
    for data_root in (tmp_path, root):  # the parent or tiny-imagenet-200/ itself
        ds = load_dataset("tinyimagenet", str(data_root))
        assert ds.train_x.shape == (6, 64, 64, 3) and ds.test_x.shape == (3, 64, 64, 3)
        assert ds.train_x.dtype == np.uint8 and ds.num_classes == 3
        assert ds.train_y.tolist() == [0, 0, 1, 1, 2, 2]  # sorted wnids: n01, n02, n03
        assert ds.test_y.tolist() == [1, 2, 0]
        means = [ds.train_x[ds.train_y == k].mean() for k in range(3)]
        np.testing.assert_allclose(means, [20, 60, 100], atol=2)  # labels match folders
        assert abs(ds.test_x[0].mean() - 100) < 2  # grayscale JPEG became RGB


def test_tinyimagenet_progress_bar(tmp_path, monkeypatch, capsys):
    write_tinyimagenet(tmp_path)
    monkeypatch.setattr(data_files, "PROGRESS_MIN_IMAGES", 2)
    load_dataset("tinyimagenet", str(tmp_path))
    assert "decoding tinyimagenet" in capsys.readouterr().err


def test_tinyimagenet_pool_write_decodes_a_row_group_at_a_time(tmp_path, capsys, monkeypatch):
    """`pool write` reads the folder lazily (ImageFiles): each image is decoded once, when
    its row group is written; the fingerprint and normaliser statistics come from the pool
    written and equal the in-memory dataset's, bit for bit."""
    from autoal_dist.cli import main
    from autoal_dist.data.pool_read import open_pool, read_meta
    from autoal_dist.data.transforms import Normalizer

    write_tinyimagenet(tmp_path)
    eager = load_dataset("tinyimagenet", str(tmp_path))
    lazy = load_dataset("tinyimagenet", str(tmp_path), lazy=True)
    assert isinstance(lazy.train_x, data_files.ImageFiles) and lazy.train_x.shape == (6, 64, 64, 3)
    np.testing.assert_array_equal(lazy.train_x[2:5], eager.train_x[2:5])
    np.testing.assert_array_equal(lazy.test_x[[2, 0]], eager.test_x[[2, 0]])

    decoded = []
    real = data_files.ImageFiles._decode
    monkeypatch.setattr(data_files.ImageFiles, "_decode",
                        lambda self, i: decoded.append(i) or real(self, i))
    out = tmp_path / "pool"
    assert main(["pool", "write", "--dataset", "tinyimagenet", "--data-root", str(tmp_path),
                 "--to", str(out), "--rows-per-group", "2", "--rows-per-file", "4"]) == 0
    # the first image of each split when the folder is opened, then each image once
    assert len(decoded) == 2 + 6 + 3
    err = capsys.readouterr().err
    assert "pool write: train 4/6 rows" in err and "pool write: test 3/3 rows" in err
    meta = read_meta(str(out))
    assert meta.fingerprint == eager.fingerprint()
    stats = meta.normalizer_stats()
    norm = Normalizer.fit(eager.train_x)
    assert np.array_equal(stats[0], norm.mean) and np.array_equal(stats[1], norm.std)
    stored = open_pool(str(out))
    np.testing.assert_array_equal(stored.train_x[:], eager.train_x)
    np.testing.assert_array_equal(stored.test_x, eager.test_x)


def test_tinyimagenet_pool_write_of_a_corrupt_image(tmp_path, capsys):
    from autoal_dist.cli import main

    root = write_tinyimagenet(tmp_path)
    bad = root / "train" / "n02" / "images" / "n02_1.JPEG"
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "pool"
    assert main(["pool", "write", "--dataset", "tinyimagenet", "--data-root", str(tmp_path),
                 "--to", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err, err
    assert not (out / "pool.json").exists()  # no pool that looks whole


def test_tinyimagenet_errors(tmp_path):
    expect_error("tinyimagenet", None, "needs --data-root DIR", "wnids.txt")
    expect_error("tinyimagenet", tmp_path, f"no wnids.txt in {tmp_path} or "
                 f"{tmp_path}/tiny-imagenet-200", "val/val_annotations.txt")
    root = write_tinyimagenet(tmp_path)
    (root / "val" / "val_annotations.txt").unlink()
    expect_error("tinyimagenet", tmp_path, f"{root}/val/val_annotations.txt not found")
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    expect_error("tinyimagenet", tmp_path, f"{root}/val/val_annotations.txt line 1",
                 "wnid 'n99' is not in wnids.txt")
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG n01\n")
    expect_error("tinyimagenet", tmp_path, "line 1: expected 'FILE<TAB>WNID")
    (root / "wnids.txt").write_text("n01\nn02\nn03\nn04\n")
    expect_error("tinyimagenet", tmp_path, f"class folders in {root}/train do not match",
                 "only in wnids.txt: ['n04']")


def test_tinyimagenet_bad_images(tmp_path):
    root = write_tinyimagenet(tmp_path)
    bad = root / "train" / "n02" / "images" / "n02_1.JPEG"
    bad.write_bytes(b"not a jpeg")
    expect_error("tinyimagenet", tmp_path, f"cannot read {bad}")
    save_jpeg(root / "val" / "images" / "val_0.JPEG", 100)
    Image.new("RGB", (32, 32)).save(bad, format="JPEG")
    expect_error("tinyimagenet", tmp_path, f"{bad} has shape (32, 32, 3), expected (64, 64, 3)")
