"""Datasets from a user's own file (`npz:PATH`, `parquet:PATH`), and the helpers every
file-based loader shares: path checks, read-error translation, array checks, image decoding.

Every failure becomes a one-line `DataError` naming the path (or key, or column) and the
layout that was expected, so a user can fix the data without reading a traceback.
"""
from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from autoal_dist.data.base import DataError, Dataset, holdout_split, register

# Decoding more images than this shows a progress bar on stderr.
PROGRESS_MIN_IMAGES = 5000
DECODE_CHUNK = 256  # images per thread task: few futures, yet a fine-grained progress bar
GRAYSCALE_MODES = {"1", "L", "LA"}


# ---------------------------------------------------------------- shared helpers


def one_line(err: BaseException) -> str:
    """An exception as `Type: message` on one line (library messages often span several)."""
    return " ".join(f"{type(err).__name__}: {err}".split())


def no_arg(name: str, arg: str) -> None:
    if arg:
        raise DataError(f"dataset {name!r} takes no argument, got '{name}:{arg}'")


def need_root(name: str, data_root: str | None, layout: str) -> Path:
    """The --data-root directory of dataset `name`; `layout` says what DIR must hold."""
    if not data_root:
        raise DataError(f"dataset {name!r} needs --data-root DIR ({layout})")
    root = Path(data_root).expanduser().absolute()  # messages name an unambiguous path
    if not root.is_dir():
        raise DataError(f"dataset {name!r}: --data-root {root} is not a directory ({layout})")
    return root


def require(name: str, path: Path, layout: str, *, is_dir: bool = False) -> Path:
    """`path` if it exists as a file (or directory), else a DataError naming it and `layout`."""
    if not (path.is_dir() if is_dir else path.is_file()):
        raise DataError(f"dataset {name!r}: {path} not found ({layout})")
    return path


def user_file(name: str, arg: str, layout: str) -> Path:
    """The existing file a `name:PATH` spec names."""
    if not arg:
        raise DataError(f"dataset {name!r} needs a path: '{name}:PATH' ({layout})")
    return require(name, Path(arg).expanduser().absolute(), layout)


@contextmanager
def reading(name: str, what: object, hint: str = "") -> Iterator[None]:
    """Turn a third-party reader's failure into a one-line DataError naming `what`.

    Readers raise anything from OSError to pickle or MAT-file errors on a bad file, hence
    the broad catch; keep the guarded block to the library call itself.
    """
    try:
        yield
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - see docstring
        raise DataError(f"dataset {name!r}: cannot read {what}: {one_line(err)}{hint}") from None


def as_images(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 [N,H,W] (grayscale) or [N,H,W,1|3] as NHWC."""
    if x.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, got dtype {x.dtype}")
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return x
    raise DataError(f"{where}: expected images [N,H,W] or [N,H,W,3], got shape {x.shape}")


def as_labels(y: np.ndarray, n: int | None, where: str) -> np.ndarray:
    """Integer labels [N] or [N,1] as int64 [N]; `n`, when given, is the number of samples."""
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{where}: expected labels [N] or [N,1], got shape {y.shape} "
            "(multi-label data is not supported)"
        )
    if n is not None and len(y) != n:
        raise DataError(f"{where}: {len(y)} labels for {n} images")
    return y.astype(np.int64)


class ImageFiles:
    """Image files (paths) or encoded images (bytes) as a uint8 NHWC array-like, decoded
    when indexed: what `pool write` converts a row group at a time, so a folder of images
    is never decoded whole first. All images are converted to PIL `mode` ('L' or 'RGB')
    and must share the first one's size. PIL releases the GIL while decoding pixels (not
    while parsing headers), so one thread per core helps on many-core nodes; on 2 cores
    small 64x64 JPEGs decode at about the serial rate."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, name: str, sources: Sequence[str | bytes], mode: str, where: str):
        if not sources:
            raise DataError(f"dataset {name!r}: {where} holds no images")
        self.name, self.sources, self.mode, self.where = name, sources, mode, where
        self.shape = (len(sources), *self._decode(0).shape)

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def _label(self, i: int) -> str:
        src = self.sources[i]
        return src if isinstance(src, str) else f"{self.where} row {i}"

    def _decode(self, i: int) -> np.ndarray:
        src = self.sources[i]
        with reading(self.name, self._label(i)):
            with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
                arr = np.asarray(im if im.mode == self.mode else im.convert(self.mode))
        return arr[..., None] if arr.ndim == 2 else arr

    def _decode_rows(self, rows: Sequence[int], progress: bool = False) -> np.ndarray:
        """The images `rows`, decoded on one thread per core in chunks of DECODE_CHUNK."""
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)

        def fill(lo: int) -> int:
            hi = min(len(rows), lo + DECODE_CHUNK)
            for k in range(lo, hi):
                img = self._decode(rows[k])
                if img.shape != self.shape[1:]:
                    raise DataError(f"dataset {self.name!r}: {self._label(rows[k])} has shape "
                                    f"{img.shape}, expected {self.shape[1:]} like "
                                    f"{self._label(0)}")
                out[k] = img
            return hi - lo

        from tqdm import tqdm

        with tqdm(total=len(rows), desc=f"decoding {self.name}", unit="img", file=sys.stderr,
                  disable=not progress or len(rows) <= PROGRESS_MIN_IMAGES) as bar:
            pool = ThreadPoolExecutor(os.cpu_count())  # more threads only contend for the GIL
            try:
                for done in pool.map(fill, range(0, len(rows), DECODE_CHUNK)):
                    bar.update(done)
            finally:  # on an error, drop the queued chunks instead of decoding them all
                pool.shutdown(cancel_futures=True)
        return out

    def __getitem__(self, key: slice | Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(key, slice):
            return self._decode_rows(range(*key.indices(len(self))))
        idx = np.asarray(key)
        if idx.dtype.kind not in "iu" or idx.ndim != 1:
            raise IndexError("ImageFiles takes a slice or a 1-D array of ints")
        return self._decode_rows([int(i) % len(self) for i in idx])

    def read(self) -> np.ndarray:
        """Every image, decoded (with a progress bar on stderr for many)."""
        return self._decode_rows(range(len(self)), progress=True)


def decode_images(
    name: str, sources: Sequence[str | bytes], mode: str, where: str
) -> np.ndarray:
    """Decode image files (paths) or encoded bytes into one uint8 NHWC array (`ImageFiles`)."""
    return ImageFiles(name, sources, mode, where).read()


# ---------------------------------------------------------------- npz


NPZ_LAYOUT = (
    "expected a MedMNIST-layout .npz with keys train_images, train_labels, test_images, "
    "test_labels (val_* optional, unused): images uint8 [N,H,W] or [N,H,W,3], "
    "labels int [N] or [N,1]"
)
NPZ_REQUIRED = ("train_images", "train_labels", "test_images", "test_labels")
ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive of .npy files


@register("npz", "npz:PATH")
def load_npz(arg: str, data_root: str | None, seed: int) -> Dataset:
    """MedMNIST-layout .npz: train is the pool, test the test split; val stays unused.

    num_classes is max label + 1 over all splits, so a class seen only in val or test still
    gets an output unit.
    """
    path = user_file("npz", arg, NPZ_LAYOUT)
    with reading("npz", path), open(path, "rb") as f:
        magic = f.read(len(ZIP_MAGIC))
    if magic != ZIP_MAGIC:  # else numpy falls back to (refusing to) unpickle it: a baffling error
        raise DataError(f"dataset 'npz': {path} is not an .npz archive (not a zip file; "
                        f"{NPZ_LAYOUT})")
    with reading("npz", path):
        archive = np.load(path, allow_pickle=False)
    with archive:
        missing = [key for key in NPZ_REQUIRED if key not in archive.files]
        if missing:
            raise DataError(
                f"dataset 'npz': {path} has no key {missing[0]!r} "
                f"(has {', '.join(archive.files) or 'none'}; {NPZ_LAYOUT})"
            )

        def get(key: str) -> np.ndarray:
            with reading("npz", f"{path} key {key!r}"):
                return archive[key]

        def at(key: str) -> str:
            return f"dataset 'npz': {path} key {key!r}"

        tx = as_images(get("train_images"), at("train_images"))
        vx = as_images(get("test_images"), at("test_images"))
        ty = as_labels(get("train_labels"), len(tx), at("train_labels"))
        vy = as_labels(get("test_labels"), len(vx), at("test_labels"))
        val_y = (as_labels(get("val_labels"), None, at("val_labels"))
                 if "val_labels" in archive.files else ty)
    num_classes = max(int(y.max(initial=0)) for y in (ty, vy, val_y)) + 1
    return Dataset(f"npz:{arg}", tx, ty, vx, vy, num_classes)


# ---------------------------------------------------------------- parquet


PARQUET_LAYOUT = (
    "expected a parquet file with an int column 'label', optional 'split' ('train'/'test') and "
    "'id' (unique per row), and either 'image' (PNG/JPEG bytes or a {bytes, path} struct) or "
    "'features' (list<float>)"
)
PARQUET_TEST_FRACTION = 0.2  # held out when the file has no 'split' column


@register("parquet", "parquet:PATH")
def load_parquet(arg: str, data_root: str | None, seed: int) -> Dataset:
    """A single parquet file: encoded images (as HuggingFace datasets writes them) or flat
    features, with a 'split' column or a seeded 80/20 holdout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = user_file("parquet", arg, PARQUET_LAYOUT)
    with reading("parquet", path):
        columns = set(pq.read_schema(path).names)
    where = f"dataset 'parquet': {path}"
    if "label" not in columns:
        raise DataError(f"{where} has no column 'label' ({PARQUET_LAYOUT})")
    kinds = columns & {"image", "features"}
    if len(kinds) != 1:
        raise DataError(
            f"{where} needs exactly one of the columns 'image', 'features' ({PARQUET_LAYOUT})"
        )
    (kind,) = kinds
    with reading("parquet", path):
        table = pq.read_table(path, columns=sorted(columns & {"id", "label", "split", kind}))
    if table.num_rows == 0:
        raise DataError(f"{where} has no rows")
    if "id" in columns:
        _check_unique_ids(table.column("id"), where)

    labels = table.column("label")
    if not pa.types.is_integer(labels.type) or labels.null_count:
        raise DataError(
            f"{where} column 'label' must be integers without nulls, got {labels.type}"
        )
    y = labels.to_numpy().astype(np.int64)
    if kind == "image":
        blobs = _image_bytes(table.column("image"), where)
        column = f"{path} column 'image'"
        x = decode_images("parquet", blobs, _common_mode(blobs, column), column)
    else:
        x = _features(table.column("features"), where)

    if "split" not in columns:
        tx, ty, vx, vy = holdout_split(x, y, PARQUET_TEST_FRACTION)
    else:
        split = np.asarray(table.column("split").to_pylist(), dtype=object)
        unknown = set(split) - {"train", "test"}
        if unknown:
            raise DataError(
                f"{where} column 'split' holds {sorted(map(repr, unknown))}; "
                "allowed: 'train', 'test'"
            )
        train = split == "train"
        tx, ty, vx, vy = x[train], y[train], x[~train], y[~train]
    return Dataset(f"parquet:{arg}", tx, ty, vx, vy, int(y.max()) + 1)


def _check_unique_ids(column, where: str) -> None:
    """The optional 'id' column names each sample once: a repeated id means rows were
    duplicated (e.g. a file appended twice), which would bias training and evaluation."""
    import pyarrow.compute as pc

    if column.null_count:
        raise DataError(f"{where} column 'id' has {column.null_count} empty values; "
                        "every row needs an id")
    counts = pc.value_counts(column).flatten()
    repeated = pc.filter(counts[0], pc.greater(counts[1], 1))
    if len(repeated):
        raise DataError(f"{where} column 'id' repeats {len(repeated)} ids, e.g. "
                        f"{repeated[0].as_py()!r}; each row needs its own id")


def _image_bytes(column, where: str) -> list[bytes]:
    """Encoded images from a binary column or a HuggingFace {bytes, path} struct column."""
    blobs = []
    for i, value in enumerate(column.to_pylist()):
        blob = value.get("bytes") if isinstance(value, dict) else value
        if not isinstance(blob, bytes):
            raise DataError(
                f"{where} column 'image' ({column.type}) row {i} holds no image bytes; "
                "expected PNG/JPEG bytes or a {bytes, path} struct with bytes"
            )
        blobs.append(blob)
    return blobs


def _common_mode(blobs: list[bytes], where: str) -> str:
    """'L' when every image is grayscale (reading headers only), else 'RGB'."""
    for i, blob in enumerate(blobs):
        with reading("parquet", f"{where} row {i}"), Image.open(io.BytesIO(blob)) as im:
            if im.mode not in GRAYSCALE_MODES:
                return "RGB"
    return "L"


def _features(column, where: str) -> np.ndarray:
    """A list<float> column of one length as float32 [N, F]."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks()
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)
            or pa.types.is_fixed_size_list(arr.type)) or arr.null_count:
        raise DataError(
            f"{where} column 'features' must be list<float> without nulls, got {arr.type}"
        )
    lengths = np.unique(pc.list_value_length(arr).to_numpy())
    if len(lengths) != 1 or lengths[0] == 0:
        raise DataError(
            f"{where} column 'features': rows must share one non-zero length, "
            f"got lengths {lengths[:5].tolist()}"
        )
    values = arr.flatten().to_numpy(zero_copy_only=False)
    if not np.issubdtype(values.dtype, np.number):
        raise DataError(f"{where} column 'features' must hold numbers, got {arr.type}")
    return values.astype(np.float32).reshape(len(arr), int(lengths[0]))
