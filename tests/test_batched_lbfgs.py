"""The batched L-BFGS (autoal/batched_lbfgs.py): every problem solved on its own, whatever
it is stacked with, to the optimum the per-problem solver reaches."""
from __future__ import annotations

import numpy as np
import torch

from autoal_dist.autoal.batched_lbfgs import minimize
from autoal_dist.autoal.crossfit import HeadSettings, fit_head, fit_stacked

HEADS = HeadSettings(iters=200, weight_decay=1e-3, dropout=0.0, mc_samples=2)


def quadratics(k: int, p: int, seed: int = 0):
    """K strictly convex quadratics 0.5 x'A x - b'x of different conditioning."""
    r = np.random.default_rng(seed)
    q = np.stack([np.linalg.qr(r.normal(size=(p, p)))[0] for _ in range(k)])
    eig = np.stack([np.geomspace(1, 10.0 ** (1 + i % 3), p) for i in range(k)])
    a = torch.from_numpy(np.einsum("kij,kj,klj->kil", q, eig, q))
    b = torch.from_numpy(r.normal(size=(k, p)))

    def fun(x: torch.Tensor):
        ax = torch.einsum("kij,kj->ki", a, x)
        return 0.5 * (x * ax).sum(1) - (b * x).sum(1), ax - b

    return fun, torch.linalg.solve(a, b)


def softmax_problems(k: int, seed: int = 0):
    r = np.random.default_rng(seed)
    x = torch.from_numpy(r.normal(size=(k, 40, 6)).astype(np.float32))
    t = torch.from_numpy(r.integers(0, 3, size=(k, 40)))
    return x, t


def test_each_problem_reaches_its_own_optimum():
    fun, best = quadratics(6, 8)
    got = minimize(fun, torch.zeros_like(best), iters=200, tolerance_grad=1e-10,
                   tolerance_change=0.0)
    torch.testing.assert_close(got, best, rtol=1e-4, atol=1e-4)


def test_a_problem_is_solved_alike_alone_or_stacked_bit_for_bit():
    x, t = softmax_problems(7)
    h = HeadSettings(iters=30, weight_decay=1e-3, dropout=0.0, mc_samples=2)
    start = fit_stacked(x[:1], t[:1], 3, HEADS)
    stacked = fit_stacked(x, t, 3, h, start)
    for order in ([6, 0, 3], [2], [1, 4, 5]):
        alone = fit_stacked(x[order], t[order], 3, h, start)
        assert torch.equal(alone.weight, stacked.weight[order])
        assert torch.equal(alone.bias, stacked.bias[order])


def torch_lbfgs_head(x: torch.Tensor, t: torch.Tensor, c: int, h: HeadSettings) -> torch.nn.Linear:
    """The reference: the same objective by torch's own L-BFGS (strong-Wolfe line search)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], c)
    opt = torch.optim.LBFGS(list(head.parameters()), max_iter=h.iters, tolerance_grad=1e-9,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(head(x), t)
                + 0.5 * h.weight_decay * (head.weight ** 2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return head


def test_heads_reach_the_optimum_of_torchs_lbfgs():
    """The objective torch's L-BFGS minimizes, to the same optimum (it is convex); and
    `fit_head` is one head of `fit_stacked`."""
    x, t = softmax_problems(3, seed=1)
    heads = fit_stacked(x, t, 3, HEADS)
    for k in range(3):
        ref = torch_lbfgs_head(x[k], t[k], 3, HEADS)
        with torch.no_grad():  # probabilities: the bias is free up to a constant
            want = torch.softmax(ref(x[k]), 1)
            got = torch.softmax(x[k] @ heads.weight[k].T + heads.bias[k], 1)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-3)
        torch.testing.assert_close(heads.weight[k], ref.weight.detach(), rtol=0, atol=2e-3)
        one = fit_head(x[k], t[k], 3, HEADS)
        assert torch.equal(one.weight.detach(), heads.weight[k])
        assert torch.equal(one.bias.detach(), heads.bias[k])


def test_a_solved_problem_stays_and_zero_iterations_move_nothing():
    fun, best = quadratics(3, 5)
    x0 = best.clone()
    x0[1] = 0.0  # only problem 1 has anything to do
    got = minimize(fun, x0, iters=100, tolerance_grad=1e-8)
    assert torch.equal(got[0], best[0]) and torch.equal(got[2], best[2])
    torch.testing.assert_close(got[1], best[1])
    assert torch.equal(minimize(fun, x0, iters=0), x0)


def test_stacked_blocks_start_aligned_and_products_do_not_depend_on_position():
    """Each head's block starts on a 64-byte boundary, so its products are those of the
    head alone: 3 x 6 float32 weights (72 bytes apart when packed) at every position."""
    from autoal_dist.autoal.crossfit import ALIGN_BYTES, Heads, aligned

    w = torch.from_numpy(np.random.default_rng(0).normal(size=(7, 3, 6)).astype(np.float32))
    a = aligned(w)
    assert torch.equal(a, w)
    assert all(a[i].data_ptr() % ALIGN_BYTES == 0 for i in range(7))
    heads = Heads(w, torch.zeros(7, 3))
    e = torch.from_numpy(np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32))
    y = torch.from_numpy(np.random.default_rng(2).integers(0, 3, 50))
    all_ = heads.true_class_prob(e, y)
    for i in range(7):
        alone = Heads(w[i:i + 1].clone(), torch.zeros(1, 3)).true_class_prob(e, y)
        assert alone[0] == all_[i]
