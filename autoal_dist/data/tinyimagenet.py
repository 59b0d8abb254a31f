"""TinyImageNet-200 from its official folder layout: 100k train / 10k val JPEGs, 64x64x3.

The official test split has no labels, so val serves as the test split.
"""
from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np

from autoal_dist.data.base import DataError, Dataset, register, register_lazy
from autoal_dist.data.files import ImageFiles, need_root, no_arg, reading, require

NAME = "tinyimagenet"
FOLDER = "tiny-imagenet-200"
LAYOUT = (
    f"expected DIR or DIR/{FOLDER} holding wnids.txt, train/<wnid>/images/*.JPEG, "
    "val/images/*.JPEG and val/val_annotations.txt, the official layout"
)


@register(NAME, NAME)
def load_tinyimagenet(arg: str, data_root: str | None, seed: int) -> Dataset:
    """Class i is the i-th wnid of wnids.txt in sorted order, for train and val alike."""
    data = tinyimagenet_files(arg, data_root, seed)
    data.train_x = cast(ImageFiles, data.train_x).read()
    data.test_x = cast(ImageFiles, data.test_x).read()
    return data


@register_lazy(NAME)
def tinyimagenet_files(arg: str, data_root: str | None, seed: int) -> Dataset:
    """The same dataset with its images undecoded (`ImageFiles`: `pool write` decodes them
    a row group at a time)."""
    no_arg(NAME, arg)
    root = _find_root(need_root(NAME, data_root, LAYOUT))
    wnids = sorted(set(_text(root / "wnids.txt").split()))
    train_paths, train_y = _train(require(NAME, root / "train", LAYOUT, is_dir=True), wnids)
    val_paths, val_y = _val(root / "val", {w: i for i, w in enumerate(wnids)})
    # Dataset's arrays are typed np.ndarray; ImageFiles stands in for one (shape, dtype,
    # len, indexing), which the casts record for mypy.
    return Dataset(
        NAME,
        cast(np.ndarray, ImageFiles(NAME, train_paths, "RGB", f"{root}/train")),
        train_y,
        cast(np.ndarray, ImageFiles(NAME, val_paths, "RGB", f"{root}/val")),
        val_y,
        len(wnids),
    )


def _find_root(data_root: Path) -> Path:
    """--data-root itself or its tiny-imagenet-200/ child, whichever holds wnids.txt."""
    for root in (data_root, data_root / FOLDER):
        if (root / "wnids.txt").is_file():
            return root
    raise DataError(
        f"dataset {NAME!r}: no wnids.txt in {data_root} or {data_root / FOLDER} ({LAYOUT})"
    )


def _train(train_dir: Path, wnids: list[str]) -> tuple[list[str], np.ndarray]:
    """Image paths and labels via ImageFolder, whose sorted folder names must be the wnids."""
    from torchvision.datasets import ImageFolder

    with reading(NAME, train_dir):
        folder = ImageFolder(str(train_dir))
    if folder.classes != wnids:
        only_dirs = sorted(set(folder.classes) - set(wnids))[:5]
        only_ids = sorted(set(wnids) - set(folder.classes))[:5]
        raise DataError(
            f"dataset {NAME!r}: class folders in {train_dir} do not match wnids.txt "
            f"(only in train/: {only_dirs}; only in wnids.txt: {only_ids}; {LAYOUT})"
        )
    paths = [path for path, _ in folder.samples]
    return paths, np.asarray(folder.targets, dtype=np.int64)


def _text(path: Path) -> str:
    """A UTF-8 text file of the layout, or a one-line DataError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"dataset {NAME!r}: {path} is not UTF-8 text (byte {e.start}); "
                        f"{LAYOUT}") from None
    except OSError as e:
        raise DataError(f"dataset {NAME!r}: cannot read {path}: {e.strerror}") from None


def _val(val_dir: Path, class_index: dict[str, int]) -> tuple[list[str], np.ndarray]:
    """Image paths and labels from val_annotations.txt (file, wnid, 4 bbox ints per line)."""
    annotations = require(NAME, val_dir / "val_annotations.txt", LAYOUT)
    images = require(NAME, val_dir / "images", LAYOUT, is_dir=True)
    paths, labels = [], []
    for number, line in enumerate(_text(annotations).splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"dataset {NAME!r}: {annotations} line {number}"
        if len(fields) < 2:
            raise DataError(f"{where}: expected 'FILE<TAB>WNID<TAB>x0<TAB>y0<TAB>x1<TAB>y1', "
                            f"got {line[:80]!r}")
        if fields[1] not in class_index:
            raise DataError(f"{where}: wnid {fields[1]!r} is not in wnids.txt")
        paths.append(str(images / fields[0]))
        labels.append(class_index[fields[1]])
    return paths, np.asarray(labels, dtype=np.int64)
