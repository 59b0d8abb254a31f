"""L-BFGS over K independent problems at once: one batched objective call per step.

Why: the eer reward refits dozens of small softmax-regression heads per round (draws x
candidates). torch's L-BFGS over the heads' stacked parameters shares one line search
and one curvature history among them, so a head's result depended on which heads it was
stacked with, and its per-step Python bookkeeping (about 1 ms for a few kilobytes of
arithmetic) was most of the search's time. Here every problem k keeps its own history,
its own step and its own stopping test; only the arithmetic is batched. So a problem's
iterates are the same whether it is solved alone or with any others (the tests check it
bit for bit), and K problems cost about as many Python steps as one.

The line search is backtracking on the Armijo condition from the unit step (the first
step scaled to the gradient, as torch's), which L-BFGS's directions satisfy at once in
almost every step of these convex problems; a problem whose step cannot decrease its
objective in `max_halvings` halvings, or whose gradient or objective change falls under
the tolerances, stops where it is.

Pure torch, no autograd: `fun` returns (values [K], gradients [K, P]).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def minimize(fun: Objective, x0: torch.Tensor, iters: int, history: int = 10,
             tolerance_grad: float = 1e-6, tolerance_change: float = 1e-9,
             max_halvings: int = 20, c1: float = 1e-4) -> torch.Tensor:
    """[K, P]: each row of x0 moved by at most `iters` L-BFGS steps on its own objective.

    fun(x [K, P]) -> (f [K], grad [K, P]) must compute row k from row k alone.
    """
    x = x0.clone()
    k = len(x)
    f, g = fun(x)
    active = g.abs().amax(1) > tolerance_grad
    s_hist: list[torch.Tensor] = []  # oldest first, each [K, P]
    y_hist: list[torch.Tensor] = []
    rho_hist: list[torch.Tensor] = []  # [K]; 0 where a problem skipped the pair
    gamma = torch.ones(k, dtype=x.dtype)
    for it in range(iters):
        if not bool(active.any()):
            break
        d = -_two_loop(g, s_hist, y_hist, rho_hist, gamma)
        gd = (g * d).sum(1)
        uphill = gd >= 0  # a stale curvature pair: restart that problem on the gradient
        if bool(uphill.any()):
            d = torch.where(uphill[:, None], -g, d)
            gd = torch.where(uphill, -(g * g).sum(1), gd)
        t = torch.ones(k, dtype=x.dtype)
        if it == 0:
            t = torch.clamp(1.0 / g.abs().sum(1), max=1.0)
        t = torch.where(active, t, torch.zeros_like(t))
        f_new, g_new, t = _backtrack(fun, x, d, f, gd, t, active, max_halvings, c1)
        moved = t > 0
        s = t[:, None] * d
        y = g_new - g
        sy = (s * y).sum(1)
        ok = moved & (sy > 1e-10)
        rho = torch.where(ok, 1.0 / torch.where(ok, sy, torch.ones_like(sy)),
                          torch.zeros_like(sy))
        s_hist.append(torch.where(ok[:, None], s, torch.zeros_like(s)))
        y_hist.append(torch.where(ok[:, None], y, torch.zeros_like(y)))
        rho_hist.append(rho)
        if len(s_hist) > history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        yy = (y * y).sum(1)
        gamma = torch.where(ok, sy / torch.where(ok, yy, torch.ones_like(yy)), gamma)
        x = torch.where(moved[:, None], x + s, x)
        change = (f - f_new).abs()
        f = torch.where(moved, f_new, f)
        g = torch.where(moved[:, None], g_new, g)
        active = (active & moved & (g.abs().amax(1) > tolerance_grad)
                  & (change >= tolerance_change))
    return x


def _two_loop(g: torch.Tensor, s_hist: list[torch.Tensor], y_hist: list[torch.Tensor],
              rho_hist: list[torch.Tensor], gamma: torch.Tensor) -> torch.Tensor:
    """H g per row: the L-BFGS two-loop recursion, every problem on its own pairs (a pair
    with rho 0 is a no-op)."""
    q = g.clone()
    alphas = []
    for s, y, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
        a = rho * (s * q).sum(1)
        q -= a[:, None] * y
        alphas.append(a)
    r = gamma[:, None] * q
    for s, y, rho, a in zip(s_hist, y_hist, rho_hist, reversed(alphas)):
        beta = rho * (y * r).sum(1)
        r += s * (a - beta)[:, None]
    return r


def _backtrack(fun: Objective, x: torch.Tensor, d: torch.Tensor, f: torch.Tensor,
               gd: torch.Tensor, t: torch.Tensor, active: torch.Tensor, max_halvings: int,
               c1: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(f, grad, step) at each active problem's first step t, t/2, ... with sufficient
    decrease; step 0 (and the old point's values) where none was found or inactive."""
    f_out, g_out, step = f.clone(), torch.zeros_like(x), torch.zeros_like(t)
    pending = active.clone()
    for _ in range(max_halvings + 1):
        if not bool(pending.any()):
            break
        f_try, g_try = fun(x + t[:, None] * d)
        good = pending & (f_try <= f + c1 * t * gd) & torch.isfinite(f_try)
        f_out = torch.where(good, f_try, f_out)
        g_out = torch.where(good[:, None], g_try, g_out)
        step = torch.where(good, t, step)
        pending = pending & ~good
        t = torch.where(pending, t * 0.5, t)
    return f_out, g_out, step
