"""Datasets read through their own packages' classes: MedMNIST (`medmnist`) and CIFAR-10,
CIFAR-100, SVHN (`torchvision.datasets`), always with `download=False`.

Going through the packages keeps their file conventions and checksums authoritative; this
module only checks the expected files exist first, so a missing file is reported by path and
layout instead of the packages' generic "Dataset not found" errors.
"""
from __future__ import annotations

import numpy as np

from autoal_dist.data.base import DataError, Dataset, register
from autoal_dist.data.files import as_images, as_labels, need_root, no_arg, reading, require

MEDMNIST_DEFAULT_SIZE = 28
MD5_HINT = " (torchvision also checks each file's md5 against the official release)"


@register("medmnist", "medmnist:NAME[@SIZE]")
def load_medmnist(arg: str, data_root: str | None, seed: int) -> Dataset:
    """A 2-D multi-class MedMNIST set, e.g. `medmnist:pathmnist@64`, from DIR/pathmnist_64.npz.

    Train is the pool and test the test split; val stays unused (as for `npz:`). The medmnist
    package creates ~/.medmnist when imported, whatever --data-root says.
    """
    import medmnist

    flag, _, size_text = arg.partition("@")
    flag = flag.lower()
    spec = f"medmnist:{arg}"
    usable = ", ".join(k for k in medmnist.INFO if not _medmnist_problem(k))
    if flag not in medmnist.INFO:
        raise DataError(f"unknown MedMNIST dataset {flag!r} in {spec!r}; choose from {usable}")
    problem = _medmnist_problem(flag)
    if problem:
        raise DataError(f"dataset {spec!r}: {problem}; usable: {usable}")
    cls = getattr(medmnist, medmnist.INFO[flag]["python_class"])
    sizes = {str(s): s for s in cls.available_sizes}
    size = sizes.get(size_text or str(MEDMNIST_DEFAULT_SIZE))
    if size is None:
        raise DataError(
            f"dataset {spec!r}: size {size_text!r} not available; sizes: {', '.join(sizes)}"
        )
    # medmnist's own naming: `{flag}.npz` for 28x28, `{flag}_{size}.npz` otherwise
    filename = f"{flag}.npz" if size == MEDMNIST_DEFAULT_SIZE else f"{flag}_{size}.npz"
    layout = f"expected DIR/{filename}, as medmnist downloads it"
    root = need_root(spec, data_root, layout)
    path = require(spec, root / filename, layout)
    with reading(spec, path):
        train, test = (cls(split=s, root=str(root), download=False, size=size)
                       for s in ("train", "test"))

    def at(key: str) -> str:
        return f"dataset {spec!r}: {path} key {key!r}"

    tx = as_images(train.imgs, at("train_images"))
    vx = as_images(test.imgs, at("test_images"))
    ty = as_labels(train.labels, len(tx), at("train_labels"))
    vy = as_labels(test.labels, len(vx), at("test_labels"))
    return Dataset(spec, tx, ty, vx, vy, len(medmnist.INFO[flag]["label"]))


def _medmnist_problem(flag: str) -> str:
    """Why a MedMNIST set does not fit a single-label image classifier ('' if it does)."""
    import medmnist
    from medmnist.dataset import MedMNIST3D

    info = medmnist.INFO[flag]
    if issubclass(getattr(medmnist, info["python_class"]), MedMNIST3D):
        return f"{flag} is a 3-D volume set; only 2-D images are supported"
    if "multi-label" in info["task"]:
        return f"{flag} is multi-label; only single-label tasks are supported"
    return ""


def _cifar(name: str, class_name: str, arg: str, data_root: str | None) -> Dataset:
    """CIFAR-10/100 through torchvision, from the extracted official python archive.

    That format is pickle, which torchvision unpickles: pickle can run code, so only load
    CIFAR files from a trusted source.
    """
    import torchvision.datasets

    cls = getattr(torchvision.datasets, class_name)
    no_arg(name, arg)
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    layout = (f"expected DIR/{cls.base_folder}/{{{', '.join(files)}}}, as torchvision writes "
              f"them: extract {cls.filename} into DIR")
    root = need_root(name, data_root, layout)
    for f in files:
        require(name, root / cls.base_folder / f, layout)
    with reading(name, root / cls.base_folder, MD5_HINT):
        train, test = (cls(str(root), train=t, download=False) for t in (True, False))
    return Dataset(name, np.ascontiguousarray(train.data), np.asarray(train.targets, np.int64),
                   np.ascontiguousarray(test.data), np.asarray(test.targets, np.int64),
                   len(train.classes))


@register("cifar10", "cifar10")
def load_cifar10(arg: str, data_root: str | None, seed: int) -> Dataset:
    """CIFAR-10: 50k/10k 32x32x3, 10 classes (pickle format: trusted files only)."""
    return _cifar("cifar10", "CIFAR10", arg, data_root)


@register("cifar100", "cifar100")
def load_cifar100(arg: str, data_root: str | None, seed: int) -> Dataset:
    """CIFAR-100 with its 100 fine labels (pickle format: trusted files only)."""
    return _cifar("cifar100", "CIFAR100", arg, data_root)


@register("svhn", "svhn")
def load_svhn(arg: str, data_root: str | None, seed: int) -> Dataset:
    """SVHN cropped digits (train 73k / test 26k, 32x32x3); torchvision maps digit 0's label 10
    to 0. The 'extra' split is not used."""
    from torchvision.datasets import SVHN

    no_arg("svhn", arg)
    files = [SVHN.split_list[s][1] for s in ("train", "test")]
    layout = f"expected DIR/{{{', '.join(files)}}}, the official .mat files"
    root = need_root("svhn", data_root, layout)
    for f in files:
        require("svhn", root / f, layout)
    with reading("svhn", root, MD5_HINT):
        train, test = (SVHN(str(root), split=s, download=False) for s in ("train", "test"))

    def nhwc(nchw: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))

    return Dataset("svhn", nhwc(train.data), train.labels.astype(np.int64),
                   nhwc(test.data), test.labels.astype(np.int64), 10)
