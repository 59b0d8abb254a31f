"""Classifier training through Ray Train: local mode, DDP, crash-and-resume."""
import numpy as np
import pytest
import torch

from autoal_dist.cli import main
from autoal_dist.config import TrainConfig
from autoal_dist.data import load_dataset
from autoal_dist.data.transforms import Normalizer
from autoal_dist.models import ModelSpec
from autoal_dist.models.inference import predict
from autoal_dist.run import Run
from autoal_dist.training.loop import train_classifier
from autoal_dist.training.ray_job import JobRunner, TrainJob, fit_classifier


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return data, Normalizer.fit(data.train_x), np.arange(400)


def job(data, epochs=8, fail_at_step=-1, checkpoint_every=10):
    spec = ModelSpec("smallcnn", data.input_shape, 10, 0.3)
    return TrainJob(spec, TrainConfig(epochs=epochs), 11, False, checkpoint_every,
                    fail_at_step=fail_at_step)


def accuracy(model, data, norm):
    return float((predict(model, data.test_x, norm) == data.test_y).mean())


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_local_mode_equals_the_in_process_loop(ray_cluster, digits, tmp_path):
    data, norm, lab = digits
    j = job(data, epochs=2)
    torch.set_num_threads(j.threads)
    torch.manual_seed(j.seed)
    direct = train_classifier(j.spec.build(), data.train_x[lab], data.train_y[lab], norm,
                              j.settings, j.seed)
    via_train = fit_classifier(data.train_x[lab], data.train_y[lab], norm, j,
                               JobRunner(0, False, str(tmp_path)), "local")
    assert same_weights(direct, via_train)
    assert list(tmp_path.iterdir()) == []  # the round's checkpoints are cleaned up


@pytest.mark.slow
def test_ddp_two_workers_match_local_accuracy_within_one_point(ray_cluster, digits, tmp_path):
    data, norm, lab = digits
    j = job(data)
    local = fit_classifier(data.train_x[lab], data.train_y[lab], norm, j,
                           JobRunner(0, False, str(tmp_path)), "local")
    ddp = fit_classifier(data.train_x[lab], data.train_y[lab], norm, j,
                         JobRunner(2, False, str(tmp_path)), "ddp")
    a_local, a_ddp = accuracy(local, data, norm), accuracy(ddp, data, norm)
    assert a_local > 0.9
    assert abs(a_local - a_ddp) <= 0.01, (a_local, a_ddp)


@pytest.mark.slow
def test_worker_crash_retries_from_the_last_checkpoint(ray_cluster, digits, tmp_path):
    data, norm, lab = digits
    reference = fit_classifier(data.train_x[lab], data.train_y[lab], norm, job(data, epochs=3),
                               JobRunner(0, False, str(tmp_path)), "ref")
    # the first attempt dies at step 25 (after checkpoints at 10 and 20); the retry resumes
    # at step 20 with the saved optimizer, schedule and generators: the same final weights
    crashed = fit_classifier(data.train_x[lab], data.train_y[lab], norm,
                             job(data, epochs=3, fail_at_step=25),
                             JobRunner(1, False, str(tmp_path), max_failures=1), "crash")
    assert same_weights(reference, crashed)


@pytest.mark.slow
def test_run_with_two_workers_end_to_end(ray_cluster, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--workers", "2", "--init", "20", "--budget", "10", "--rounds", "1",
                 "--epochs", "2", "--quiet", "--candidates", "entropy", "--out", str(out)]) == 0
    assert Run.at(out).journal_rounds() == [0, 1]


# ---- the AutoAL bi-level search as a Ray Train job ----------------------------------

def search_inputs():
    """A BatchNorm-free net (MLP on features) and dropout 0, so 1 and 2 workers must agree
    to float rounding; per-worker BatchNorm statistics and dropout streams would not."""
    from autoal_dist.autoal.ray_job import SearchJob
    from autoal_dist.autoal.search import Rows
    from autoal_dist.registry import load_config

    data = load_dataset("synthetic:n=300,test=10,hw=12,c=0,classes=4")
    cfg = load_config({"dataset": "synthetic:n=300,test=10,hw=12,c=0,classes=4",
                        "candidates": ["entropy", "margin", "bald"],
                        "train": {"dropout": 0.0},
                        "autoal": {"fitnet_pretrain_iters": 6, "search_iters": 12,
                                   "batch_size": 64, "use_loss_head": True}})
    rng = np.random.default_rng(0)
    search, fit = Rows.of(data, np.arange(0, 150)), Rows.of(data, np.arange(150, 300))
    memberships = (rng.random((150, 3)) < 0.2).astype(np.float64)
    job = SearchJob(cfg, data.input_shape, data.num_classes, seed=5)
    return job, search, fit, memberships, Normalizer.fit(data.train_x)


def test_search_local_mode_equals_in_process(ray_cluster, tmp_path):
    from autoal_dist.autoal.ray_job import fit_search
    from autoal_dist.autoal.search import build_models, train_search

    job, search, fit, memberships, norm = search_inputs()
    torch.set_num_threads(job.cfg.train.threads)
    torch.manual_seed(job.seed)
    models = build_models(job.cfg, job.input_shape, job.num_classes, "cpu")
    train_search(models, search, memberships, fit, job.cfg.autoal, norm, "cpu", job.seed)
    searchnet, fitnet = fit_search(job, search, fit, memberships, norm,
                                   JobRunner(0, False, str(tmp_path)), "s0")
    assert same_weights(models.searchnet, searchnet) and same_weights(models.fitnet, fitnet)


@pytest.mark.slow
def test_search_two_workers_match_one_worker(ray_cluster, tmp_path):
    """Hypergradients reduced explicitly across workers: same SearchNet/FitNet parameters."""
    from autoal_dist.autoal.ray_job import fit_search

    job, search, fit, memberships, norm = search_inputs()
    one = fit_search(job, search, fit, memberships, norm, JobRunner(1, False, str(tmp_path)), "w1")
    two = fit_search(job, search, fit, memberships, norm, JobRunner(2, False, str(tmp_path)), "w2")
    for a, b in zip(one, two):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6, msg=name)
    # and the search did move the nets (a vacuous equality would prove nothing)
    torch.manual_seed(job.seed)
    from autoal_dist.autoal.search import build_models

    init = build_models(job.cfg, job.input_shape, job.num_classes, "cpu")
    assert not same_weights(init.searchnet, one[0])


# ---- the default AutoAL search (strategy-level weights) as a Ray Train job -------------

@pytest.mark.slow
def test_weights_fit_on_two_workers_equals_in_process(ray_cluster, tmp_path):
    from autoal_dist.autoal.memberships import membership_matrix
    from autoal_dist.autoal.ray_job import fit_weights_job
    from autoal_dist.autoal.weights import Evidence, fit_weights
    from autoal_dist.config import AutoALConfig

    rng = np.random.default_rng(0)
    ids = np.arange(60)
    picks = [rng.permutation(ids)[:10] for _ in range(4)]
    evidence = [Evidence(1, membership_matrix(ids, picks),
                         rng.uniform(-0.5, 0.5, 60), 10)]
    active = np.ones(4, bool)
    local = fit_weights(evidence, active, AutoALConfig())
    job = fit_weights_job(evidence, active, AutoALConfig(), JobRunner(2, False, str(tmp_path)),
                          "weights")
    np.testing.assert_array_equal(job.weights, local.weights)
    assert (job.iterations, job.soft_count) == (local.iterations, local.soft_count)


@pytest.mark.slow
def test_gain_splits_on_two_workers_equal_in_process(ray_cluster, tmp_path):
    """The gain reward's splits dealt to two Train workers and gathered: the same array."""
    from autoal_dist.autoal.crossfit import HeadSettings
    from autoal_dist.autoal.gain import GainProblem, simulate
    from autoal_dist.autoal.ray_job import simulate_job

    rng = np.random.default_rng(0)
    n, c = 80, 4
    y = rng.integers(0, c, n)
    emb = (np.eye(c)[y] * 3 + rng.normal(size=(n, c))).astype(np.float32)
    probs = rng.dirichlet(np.ones(c), n).astype(np.float32)
    problem = GainProblem(probs, emb, None, y, rng.random(n) < 0.5, rng.random(n) < 0.4,
                          ("margin", "kmeans"), 0.25, HeadSettings(20, 1e-3, 0.3, 4), 1, 5)
    torch.set_num_threads(1)  # as on a worker
    local = simulate(problem, range(5))
    job = simulate_job(problem, list(range(5)), JobRunner(2, False, str(tmp_path)), "gain")
    np.testing.assert_array_equal(job, local)


@pytest.mark.slow
def test_eer_draws_on_two_workers_equal_in_process(ray_cluster, tmp_path):
    """The default reward's label draws dealt to two Train workers and gathered: the same
    array as one process."""
    from autoal_dist.autoal.crossfit import HeadSettings
    from autoal_dist.autoal.eer import EerProblem, draw_gains
    from autoal_dist.autoal.ray_job import simulate_job

    rng = np.random.default_rng(0)
    c, d = 4, 6
    y_l = rng.integers(0, c, 30)

    def emb(y: np.ndarray) -> np.ndarray:
        return (np.eye(c, d)[y] * 3 + rng.normal(size=(len(y), d))).astype(np.float32)

    y_u = rng.integers(0, c, 40)
    problem = EerProblem(emb(y_l), y_l, np.arange(40) * 3, emb(y_u),
                         rng.dirichlet(np.ones(c), 40).astype(np.float32),
                         np.stack([rng.choice(40, 8, replace=False) for _ in range(3)]),
                         emb(rng.integers(0, c, 100)), ("margin", "kmeans", "badge"),
                         HeadSettings(20, 1e-3, 0.3, 4), 5)
    torch.set_num_threads(1)  # as on a worker
    local = draw_gains(problem, range(5))
    job = simulate_job(problem, list(range(5)), JobRunner(2, False, str(tmp_path)), "eer")
    np.testing.assert_array_equal(job, local)


@pytest.mark.slow
def test_autoal_run_with_two_workers_end_to_end(ray_cluster, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "autoal-w2"
    assert main(["run", "--strategy", "autoal", "--workers", "2", "--init", "20", "--budget",
                 "10", "--rounds", "1", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    search = pq.read_table(out / "autoal_search.parquet").to_pandas()
    assert set(search["round"]) == {1} and set(search["mode"]) == {"embed"}
