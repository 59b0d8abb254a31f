"""Screen in float32, decide in float64: how a greedy step reads float32 data yet keeps
float64 distances that no sharding, thread count or array library changes.

A greedy step folds min(d2, d(x, c)) into every row. One float32 product over the shard
(the floor: a GEMV) gives every distance to within a rigorous bound, whatever order the
library sums in (`dot_bound`); a row can change only where that bound reaches below its
d2, and only those rows (about N / centers of them) get their float64 distance, from
`row_dots`: the products summed in one fixed pairwise order by elementwise IEEE
operations. A row's distance is then a function of that row and the center alone: the
same bits in any shard, on numpy and torch, CPU and GPU. The float32 product may run on
any number of threads and in any shape; it only decides which rows are recomputed.
"""
from __future__ import annotations

import math
from typing import Any

U32 = 2.0**-24  # float32 unit roundoff
U64 = 2.0**-53  # float64 unit roundoff
# The float64 roundings in |x|^2 + |c|^2 - 2 x.c, computed exactly and as a bound: under
# 30 units of |x|^2 + |c|^2 between them; 64 to spare.
SLACK = 64 * U64
UNDERFLOW = 2.0**-145  # float32 gradual underflow: 2^-150 per term, 32x to spare
SAFE_NORM = 1e18  # norms under this, and products of two under SAFE_PRODUCT, cannot
SAFE_PRODUCT = 1e30  # overflow float32 (max 3.4e38): the bound holds
EXACT_ROWS = 256  # rows per batch of float64 dots: temporaries EXACT_ROWS x D
DENSE = 1.25  # a run where over 1 / DENSE (80%) of the rows may change is recomputed whole
# (no gather); below that, recomputing rows the screen ruled out costs more than gathering


def dot_bound(n: int, unit: float = U32) -> float:
    """kappa with |fl32(x32 . c32) - x . c| <= kappa |x| |c| + `underflow`, for float64 x,
    c of length n rounded to float32 and summed in any order, FMA or not: Higham's
    gamma_n and the two input roundings, (n + 3) u, doubled to spare. `unit` is the
    product's unit roundoff (TF32 or bf16 products are coarser than 2^-24); inf where the
    bound breaks down (every row is then recomputed)."""
    nu = (n + 3) * unit
    return 2.0 * nu / (1.0 - nu) if nu < 0.5 else math.inf


def underflow(n: int, x_norm: float, c_norm: float) -> float:
    """The absolute part of that bound: float32 underflow in n products and sums, and in
    rounding entries of vectors of norm <= x_norm and <= c_norm to float32."""
    return UNDERFLOW * (n + math.sqrt(n) * (x_norm + c_norm))


def screenable(x_norm: float, c_norm: float) -> bool:
    """Whether float32 products of vectors of these norms stay finite (NaN: no)."""
    return x_norm < SAFE_NORM and c_norm < SAFE_NORM and x_norm * c_norm < SAFE_PRODUCT


def row_dots(a: Any, b: Any) -> Any:
    """Per row i, sum_j a[i, j] b[i, j] (b float64, [m, D] or one row [D]) in float64, in
    one fixed order: products, then halves folded onto halves (the first fold as the
    products are formed). Every operation is a correctly rounded elementwise IEEE one (a
    float32 `a` is widened exactly), so the bits depend on the two rows alone: not on the
    shard, the batch, the library or the device. The leading axes broadcast (a [r, 1, D]
    against b [m, D] gives all r x m pairs' dots [r, m], each with the same bits as a row
    pair's)."""
    w = a.shape[-1]
    h = w // 2
    p = a[..., : w - h] * b[..., : w - h]
    if h:
        p[..., :h] += a[..., w - h :] * b[..., w - h :]
    w -= h
    while w > 1:
        h = w // 2
        p[..., :h] += p[..., w - h : w]
        w -= h
    return p[..., 0] * 1.0  # a compact copy (exact): a view would hold on to all of p


def exact_sq_dists(xp: Any, x: Any, x_sqn: Any, c: Any, c_sqn: Any) -> Any:
    """||x_i - c_i||^2 = |x|^2 + |c|^2 - 2 x.c with `row_dots` (sq_dists' formula), >= 0
    (broadcasting like `row_dots`: x [r, 1, D], x_sqn [r, 1], c [m, D], c_sqn [m] give
    all pairs)."""
    d = row_dots(x, c)
    d *= -2.0
    d += x_sqn
    d += c_sqn
    return xp.clip(d, 0.0, None, out=d)


def batches(rows: Any, size: int = EXACT_ROWS) -> list[Any]:
    """`rows` (indices) in pieces of at most `size`: bounded temporaries per exact batch."""
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def runs(ch: slice, size: int = EXACT_ROWS) -> list[slice]:
    """The rows of `ch` in contiguous pieces of at most `size`."""
    return [slice(i, min(i + size, ch.stop)) for i in range(ch.start, ch.stop, size)]
