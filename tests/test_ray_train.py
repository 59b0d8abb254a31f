"""Classifier training through Ray Train: local mode, DDP, crash-and-resume."""
import numpy as np
import pytest
import torch

from autoal_dist import store
from autoal_dist.cli import main
from autoal_dist.data import load_dataset
from autoal_dist.data.transforms import Normalizer
from autoal_dist.distributed.train import TrainJob, fit_classifier
from autoal_dist.inference import predict
from autoal_dist.models import ModelSpec
from autoal_dist.training import TrainSettings, train_classifier


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return data, Normalizer.fit(data.train_x), np.arange(400)


def job(data, epochs=8, fail_at_step=-1, checkpoint_every=10):
    spec = ModelSpec("smallcnn", data.input_shape, 10, 0.3)
    return TrainJob(spec, TrainSettings(epochs=epochs), 11, False, checkpoint_every,
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
    via_train = fit_classifier(data.train_x[lab], data.train_y[lab], norm, j, workers=0,
                               use_gpu=False, storage=tmp_path, name="local")
    assert same_weights(direct, via_train)
    assert list(tmp_path.iterdir()) == []  # the round's checkpoints are cleaned up


@pytest.mark.slow
def test_ddp_two_workers_match_local_accuracy_within_one_point(ray_cluster, digits, tmp_path):
    data, norm, lab = digits
    j = job(data)
    local = fit_classifier(data.train_x[lab], data.train_y[lab], norm, j, workers=0,
                           use_gpu=False, storage=tmp_path, name="local")
    ddp = fit_classifier(data.train_x[lab], data.train_y[lab], norm, j, workers=2,
                         use_gpu=False, storage=tmp_path, name="ddp")
    a_local, a_ddp = accuracy(local, data, norm), accuracy(ddp, data, norm)
    assert a_local > 0.9
    assert abs(a_local - a_ddp) <= 0.01, (a_local, a_ddp)


@pytest.mark.slow
def test_worker_crash_retries_from_the_last_checkpoint(ray_cluster, digits, tmp_path):
    data, norm, lab = digits
    reference = fit_classifier(data.train_x[lab], data.train_y[lab], norm, job(data, epochs=3),
                               workers=0, use_gpu=False, storage=tmp_path, name="ref")
    # the first attempt dies at step 25 (after checkpoints at 10 and 20); the retry resumes
    # at step 20 with the saved optimizer, schedule and generators: the same final weights
    crashed = fit_classifier(data.train_x[lab], data.train_y[lab], norm,
                             job(data, epochs=3, fail_at_step=25), workers=1, use_gpu=False,
                             storage=tmp_path, name="crash", max_failures=1)
    assert same_weights(reference, crashed)


@pytest.mark.slow
def test_run_with_two_workers_end_to_end(ray_cluster, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--workers", "2", "--init", "20", "--budget", "10", "--rounds", "1",
                 "--epochs", "2", "--quiet", "--candidates", "entropy", "--out", str(out)]) == 0
    assert store.journal_rounds(out) == [0, 1]
