"""The relaxed top-r membership (paper mode; docs/autoal.md): z = A.w, p = softmax(z), s,
soft count c.

Two choices the paper leaves open, made here on measurements (issue #4 note):
- t and tau are differentiated through. t follows p (it is a quantile of p); with
  t detached, the soft count's gradient pushes the samples near t down, t moves
  down with them, nothing changes, and sum(s) drifts to ~N/2 within a few dozen
  steps. With t in the graph, c's gradient is the true one and holds sum(s) ~ rN.
- Everything after the aggregation runs in float64: the vectors are short, and the
  `reference` temperature (1e-11) is only an exact 0/1 step (zero gradient) when p
  and t carry float64 precision, which is the behaviour that mode reproduces.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit, ndtr
from sklearn.mixture import GaussianMixture

from autoal_dist.config import AutoALConfig

REFERENCE_TAU = 1e-11  # the released code's temperature
BISECTION_STEPS = 200  # more halvings than float64 can resolve; the loop stops when it cannot


@dataclass
class Relaxed:
    p: torch.Tensor  # [n] float64, softmax over the rows
    t: float  # threshold: the (1 - r)-quantile of p
    tau: float  # sigmoid temperature
    s: torch.Tensor  # [n] float64 relaxed membership in the top r
    c: torch.Tensor  # scalar soft count |sum s - rN| / (rN)


def aggregate(memberships: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """z_j = sum_m A[j, m] w_m(x_j), in float64."""
    return (memberships.double() * weights.double()).sum(dim=1)


def mixture_quantile(means: np.ndarray, stds: np.ndarray, mix: np.ndarray, level: float) -> float:
    """x with sum_k mix_k Phi((x - mean_k) / std_k) = level, by bisection (the CDF is monotone)."""
    lo, hi = float(np.min(means - 10 * stds)), float(np.max(means + 10 * stds))
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if float(mix @ ndtr((mid - means) / stds)) < level:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def gmm_threshold(p: np.ndarray, level: float, components: int, seed: int) -> float:
    """The `level`-quantile of a 1-D Gaussian mixture fitted to p.

    Fitted to standardized p with sklearn's default reg_covar, i.e. reg_covar scaled
    by var(p) on the raw values: the released code's unscaled 1e-6 exceeds var(p)
    (p ~ 1/N), which blurs every component into one. k-means++ seeding instead of a
    full k-means keeps the per-iteration fit at a few ms.
    """
    mean, std = float(p.mean()), float(p.std())
    if std == 0.0:
        return mean
    u = ((p - mean) / std)[:, None]
    k = min(components, len(np.unique(u)))
    gmm = GaussianMixture(k, init_params="k-means++", random_state=seed).fit(u)
    t = mixture_quantile(gmm.means_[:, 0], np.sqrt(gmm.covariances_[:, 0, 0]), gmm.weights_, level)
    return mean + std * t


def threshold(p: torch.Tensor, r: float, method: str, components: int, seed: int) -> torch.Tensor:
    """t = (1 - r)-quantile of p, in the graph.

    `empirical`: torch.quantile (linear interpolation, as numpy's default). `gmm`:
    the fitted mixture's quantile as the value, with the empirical quantile's
    gradient (both move with p alike under shifts and scalings of p; the EM fit has
    no gradient of its own).
    """
    t = torch.quantile(p, 1.0 - r)
    if method == "empirical":
        return t
    value = gmm_threshold(p.detach().cpu().numpy(), 1.0 - r, components, seed)
    return t + (value - t).detach()


def temperature(a: AutoALConfig, p: torch.Tensor) -> torch.Tensor:
    """tau: `auto` = tau_std_fraction * std(p) (in the graph), `reference` = 1e-11, or a number.

    With all p equal, s = 1/2 whatever tau is; `auto` then uses 1 so 0/0 cannot occur.
    """
    if a.tau == "auto":
        std = p.std(unbiased=False)
        if float(std.detach()) > 0:
            return a.tau_std_fraction * std
    fixed = {"auto": 1.0, "reference": REFERENCE_TAU}.get(a.tau)
    return torch.tensor(float(a.tau) if fixed is None else fixed, dtype=p.dtype, device=p.device)


def relax(z: torch.Tensor, r: float, a: AutoALConfig, seed: int) -> Relaxed:
    """s_j = sigmoid((p_j - t) / tau) and the soft count c, over the rows of z."""
    p = torch.softmax(z.double(), dim=0)
    t = threshold(p, r, a.threshold, a.gmm_components, seed)
    tau = temperature(a, p)
    s = torch.sigmoid((p - t) / tau)
    target = r * len(p)
    return Relaxed(p, float(t.detach()), float(tau.detach()), s,
                   torch.abs(s.sum() - target) / target)


def count_threshold(p: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
                    tau: torch.Tensor) -> torch.Tensor:
    """Per row r of p [R, n]: t_r with sum_j sigmoid((p_rj - t_r) / tau_r) = target_r over the
    row's valid entries (`mask`), in the graph (implicit gradient).

    The value comes from safeguarded Newton iterations in numpy, all rows at once (the
    sum falls monotonically in t, so a bracket always holds the root; a Newton step
    that leaves it is replaced by bisection). One Newton step from that detached root,
    whose residual is ~0, adds the implicit function's gradient dt/dp_j =
    s_j' / sum_k s_k' without changing the value.
    """
    pn, m = p.detach().cpu().numpy(), mask.cpu().numpy()
    tn, q = tau.detach().cpu().numpy()[:, None], target.cpu().numpy()
    big = np.where(m, pn, np.inf).min(1), np.where(m, pn, -np.inf).max(1)
    lo, hi = big[0] - 50 * tn[:, 0], big[1] + 50 * tn[:, 0]
    t = np.array([np.quantile(row[k], 1.0 - qr / k.sum()) for row, k, qr in zip(pn, m, q)])
    for _ in range(BISECTION_STEPS):
        s = expit((pn - t[:, None]) / tn) * m
        residual = s.sum(1) - q
        if np.all(np.abs(residual) <= 1e-10 * q):
            break
        lo, hi = np.where(residual > 0, t, lo), np.where(residual > 0, hi, t)
        slope = (s * (1 - s)).sum(1) / tn[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            step = t + residual / slope
        t = np.where((lo < step) & (step < hi), step, 0.5 * (lo + hi))
        if np.all(hi - lo <= 1e-15 * np.maximum(np.abs(hi), tn[:, 0])):
            break
    t0 = torch.from_numpy(t).to(p)[:, None]
    tau_c = tau[:, None]
    with torch.no_grad():
        s0 = torch.sigmoid((p - t0) / tau_c) * mask
        slope = (s0 * (1 - s0)).sum(1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    live = (torch.sigmoid((p - t0) / tau_c) * mask).sum(1, keepdim=True)
    return t0 + (live - target[:, None]) * tau_c.detach() / slope


def relax_count(z: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
                tau_fraction: float) -> torch.Tensor:
    """s [R, n]: per row, the relaxed top-`target` membership over its valid entries whose
    soft count equals the target by construction (0 on padding).

    The threshold solves the count instead of being a quantile that a regularizer
    pulls toward it. With no sharp step needed to hold the count, tau can be soft
    (tau_fraction * std(p)), so rows away from the boundary get gradient too. A row
    whose target covers all its entries selects them all (s = 1, no gradient).
    """
    z = z.double().masked_fill(~mask, float("-inf"))
    p = torch.softmax(z, dim=1).masked_fill(~mask, 0.0)
    n = mask.sum(1)
    full = target >= n
    # A full row's s is the constant mask: its (unused) relaxation stays out of the graph.
    # And sqrt's gradient at a zero variance (every p equal) is infinite: where() would pass
    # 0 * inf = NaN into every weight (a pool whose initial set is all the candidates pick).
    p = torch.where(full[:, None], p.detach(), p)
    mean = p.sum(1) / n
    var = (((p - mean[:, None]) ** 2) * mask).sum(1) / n
    std = torch.sqrt(var.clamp_min(1e-300))  # the same values wherever var > 0
    tau = torch.where(var > 0, tau_fraction * std, torch.ones_like(std))
    t = count_threshold(p, mask, torch.where(full, n - 0.5, target).double(), tau)
    s = torch.sigmoid((p - t) / tau[:, None]) * mask
    return torch.where(full[:, None], mask.to(s), s)
