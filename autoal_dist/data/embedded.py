"""Datasets that need no files: scikit-learn's digits and synthetic pools."""
from __future__ import annotations

import numpy as np

from autoal_dist.data.base import DataError, Dataset, holdout_split, register


@register("digits", "digits")
def load_digits(arg: str, data_root: str | None, seed: int) -> Dataset:
    """1797 real 8x8 handwritten digits (0..16 grey levels) shipped with scikit-learn."""
    if arg:
        raise DataError(f"dataset 'digits' takes no argument, got 'digits:{arg}'")
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # [N,8,8,1]
    y = d.target.astype(np.int64)
    tx, ty, vx, vy = holdout_split(x, y, 0.25)
    return Dataset("digits", tx, ty, vx, vy, 10)


SYNTHETIC_DEFAULTS = {"n": 2000, "test": 500, "hw": 32, "c": 3, "classes": 10, "seed": 0}
TINYIMAGENET_SHAPE = {"n": 100_000, "test": 10_000, "hw": 64, "c": 3, "classes": 200}


def parse_synthetic_spec(arg: str) -> dict[str, int]:
    """`n=1000,hw=64,c=3,classes=200,test=200,seed=1`; `tinyimagenet` names the real shape."""
    spec = dict(SYNTHETIC_DEFAULTS)
    for part in filter(None, arg.split(",")):
        if part == "tinyimagenet":
            spec.update(TINYIMAGENET_SHAPE)
            continue
        key, eq, val = part.partition("=")
        if key not in SYNTHETIC_DEFAULTS or not eq:
            raise DataError(
                f"synthetic spec {part!r} invalid; use key=int with keys "
                f"{', '.join(SYNTHETIC_DEFAULTS)} (or 'tinyimagenet')"
            )
        try:
            spec[key] = int(val)
        except ValueError:
            raise DataError(f"synthetic spec {key}={val!r}: not an integer") from None
    for key in ("n", "test", "hw", "classes"):
        if spec[key] < 1:
            raise DataError(f"synthetic spec {key}={spec[key]}: must be >= 1")
    if spec["c"] not in (0, 1, 3):
        raise DataError(f"synthetic spec c={spec['c']}: must be 1 or 3 (images) or 0 (features)")
    if spec["classes"] < 2:
        raise DataError("synthetic spec classes must be >= 2")
    need = synthetic_bytes(spec)
    have = available_memory()
    if have is not None and need > have:
        raise DataError(f"synthetic spec n={spec['n']},test={spec['test']},hw={spec['hw']}: "
                        f"needs {need / 2**30:.1f} GiB but this machine has "
                        f"{have / 2**30:.1f} GiB available; use a smaller n or hw")
    return spec


def synthetic_bytes(spec: dict[str, int]) -> int:
    """The generated arrays' size: samples (uint8 images or float32 features) + labels."""
    n = spec["n"] + spec["test"]
    per = spec["hw"] * 4 if spec["c"] == 0 else spec["hw"] ** 2 * spec["c"]
    return n * (per + 8)


def available_memory() -> int | None:
    """MemAvailable (Linux), or None where it cannot be read: then nothing is refused."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def make_synthetic(spec: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Learnable class-conditional images: a per-class low-frequency template + noise.

    Generated in chunks so a TinyImageNet-sized pool never needs float copies of
    the whole array.
    """
    rng = np.random.default_rng(spec["seed"])
    n, hw, c, k = spec["n"] + spec["test"], spec["hw"], spec["c"], spec["classes"]
    y = rng.integers(0, k, size=n).astype(np.int64)
    if c == 0:  # flat features: Gaussian blobs
        centers = rng.normal(0, 1.0, size=(k, hw)).astype(np.float32)
        x = centers[y] + rng.normal(0, 1.0, size=(n, hw)).astype(np.float32)
        return x, y
    coarse = rng.uniform(0, 255, size=(k, 4, 4, c)).astype(np.float32)
    reps = -(-hw // 4)
    templates = np.repeat(np.repeat(coarse, reps, axis=1), reps, axis=2)[:, :hw, :hw]
    x = np.empty((n, hw, hw, c), dtype=np.uint8)
    for lo in range(0, n, 8192):
        hi = min(n, lo + 8192)
        noise = rng.normal(0, 60.0, size=(hi - lo, hw, hw, c)).astype(np.float32)
        x[lo:hi] = np.clip(templates[y[lo:hi]] + noise, 0, 255).astype(np.uint8)
    return x, y


@register("synthetic", "synthetic[:n=N,test=N,hw=N,c=1|3|0,classes=K,seed=S|tinyimagenet]")
def load_synthetic(arg: str, data_root: str | None, seed: int) -> Dataset:
    spec = parse_synthetic_spec(arg)
    x, y = make_synthetic(spec)
    n = spec["n"]
    return Dataset(f"synthetic:{arg}" if arg else "synthetic", x[:n], y[:n], x[n:], y[n:],
                   spec["classes"])
