"""`autoal-dist tune`: the sweep file's checks (pure, fast) and a 4-trial ASHA sweep (slow)."""
import copy
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from autoal_dist.cli import main
from autoal_dist.config import ConfigError, read_config_file
from autoal_dist.sweep.space import Asha, check_samples, merge, parse_sweep, trial_config

EXAMPLE = Path(__file__).resolve().parent.parent / "cluster/tune/digits.yaml"

SWEEP = {
    "campaign": {"strategy": "autoal", "init": 20, "budget": 10, "rounds": 3,
                 "train": {"epochs": 1, "min_steps": 10},
                 "autoal": {"search_iters": 5, "fitnet_pretrain_iters": 5}},
    "tune": {"search_space": {
        "candidates": {"subsets_of": ["entropy", "margin", "kmeans"], "min_size": 2},
        "autoal.searchnet_lr": {"loguniform": [1.0e-3, 0.1]},
        "autoal.fitnet_lr": {"choice": [1.0e-3, 1.0e-2]},
        "autoal.search_iters": {"randint": [3, 6]}},
        "num_samples": 4, "max_concurrent_trials": 2, "resources_per_trial": {"cpu": 1},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}, "seed": 0},
}


def sweep_with(path: str, value):
    """SWEEP with one dotted path (`tune.metric`, `campaign.init`) set; None deletes it."""
    values = copy.deepcopy(SWEEP)
    *parents, leaf = path.split(".", 2) if path.startswith("tune.search_space.") \
        else path.split(".")
    node = values
    for p in parents:
        node = node[p]
    if value is None:
        del node[leaf]
    else:
        node[leaf] = value
    return values


def test_example_config_parses():
    sweep = parse_sweep(read_config_file(EXAMPLE))
    space = sweep.space
    assert len(space["candidates"].args) == 6 + 4 + 1  # subsets of 4 names, size >= 2
    assert (space["autoal.shrink"].kind, space["autoal.search_iters"].args) == \
        ("loguniform", (50, 400))
    assert space["autoal.evidence_decay"].args == (0.0, 0.7, 1.0)
    assert sweep.scheduler == Asha(1, 2.0) and sweep.max_concurrent_trials == 2
    assert (sweep.metric, sweep.cpu, sweep.gpu, sweep.base.strategy) == ("auc", 1.0, 0.0, "autoal")


def test_subsets_of_and_defaults():
    sweep = parse_sweep(SWEEP)
    assert sweep.space["candidates"].args == (["entropy", "margin"], ["entropy", "kmeans"],
                                              ["margin", "kmeans"], ["entropy", "margin", "kmeans"])
    bare = parse_sweep({"tune": {"search_space": {"train.epochs": {"randint": [1, 3]}}}})
    assert (bare.num_samples, bare.scheduler, bare.metric, bare.seed, bare.loggers) == \
        (8, None, "auc", 0, ())


def test_trial_values_go_into_their_sections():
    sample = {"candidates": "margin,kmeans", "autoal.searchnet_lr": 0.02, "train.epochs": 2}
    assert merge({"train": {"lr": 0.1}}, sample) == {
        "train": {"lr": 0.1, "epochs": 2}, "autoal": {"searchnet_lr": 0.02},
        "candidates": "margin,kmeans"}
    cfg = trial_config(SWEEP["campaign"], sample)
    assert (cfg.candidates, cfg.autoal.searchnet_lr, cfg.train.epochs, cfg.autoal.search_iters) \
        == (["margin", "kmeans"], 0.02, 2, 5)


def test_yaml_exponents_without_a_dot_are_read_as_numbers():
    values = sweep_with("tune.search_space.autoal.searchnet_lr", {"loguniform": ["1e-4", "1e-1"]})
    assert parse_sweep(values).space["autoal.searchnet_lr"].args == (1e-4, 0.1)


@pytest.mark.parametrize("path, value, field, words", [
    ("bogus", {}, "bogus", "unknown section"),
    ("tune", None, "tune", "missing"),
    ("tune.bogus", 1, "tune.bogus", "unknown key"),
    ("tune.search_space", {}, "tune.search_space", "must map settings"),
    ("tune.search_space.candidates", {"subsets_of": ["entropy", "telepathy"]},
     "tune.search_space.candidates.subsets_of", "unknown strategy 'telepathy'"),
    ("tune.search_space.candidates", {"subsets_of": ["entropy", "margin"], "min_size": 3},
     "tune.search_space.candidates.min_size", "[1, 2]"),
    ("tune.search_space.candidates", {"choice": [["entropy"], ["margin", "nope"]]},
     "tune.search_space.candidates", "unknown candidate 'nope'"),
    ("tune.search_space.autoal.searchnet_lr", {"normal": [0, 1]},
     "tune.search_space.autoal.searchnet_lr", "allowed: loguniform, uniform, randint, choice"),
    ("tune.search_space.autoal.searchnet_lr", {"loguniform": [0, 0.1]},
     "tune.search_space.autoal.searchnet_lr", "low > 0"),
    ("tune.search_space.autoal.searchnet_lr", {"uniform": [0.1, 0.01]},
     "tune.search_space.autoal.searchnet_lr", "low < high"),
    ("tune.search_space.autoal.searchnet_lr", {"uniform": [-0.1, 0.1]},
     "tune.search_space.autoal.searchnet_lr", "must be > 0, got -0.1"),
    ("tune.search_space.autoal.search_iters", {"randint": [1.5, 4]},
     "tune.search_space.autoal.search_iters", "two integers"),
    ("tune.search_space.autoal.search_iters", {"choice": []},
     "tune.search_space.autoal.search_iters", "non-empty list"),
    ("tune.search_space.train.epochs", {"uniform": [1, 3]},
     "tune.search_space.train.epochs", "must be an integer"),
    ("tune.search_space.autoal.tau_std", {"choice": [0.1]},
     "tune.search_space.autoal.tau_std", "unknown key"),
    ("tune.search_space.autoal", {"choice": [{"search_iters": 5}]},
     "tune.search_space.autoal", "name one setting"),
    ("tune.search_space.seed", {"choice": [0, 1]}, "tune.search_space.seed", "same for every"),
    ("tune.num_samples", 0, "tune.num_samples", ">= 1"),
    ("tune.max_concurrent_trials", 0, "tune.max_concurrent_trials", ">= 1"),
    ("tune.metric", "loss", "tune.metric", "auc, accuracy"),
    ("tune.scheduler", "hyperband", "tune.scheduler", "asha"),
    ("tune.scheduler", {"name": "asha", "grace_period": 4},
     "tune.scheduler.grace_period", "campaign.rounds = 3"),
    ("tune.scheduler", {"name": "asha", "reduction_factor": 1},
     "tune.scheduler.reduction_factor", "> 1"),
    ("tune.resources_per_trial", {"cpu": 0}, "tune.resources_per_trial.cpu", "> 0"),
    ("tune.resources_per_trial", {"cpu": 1, "gpu": 1}, "tune.resources_per_trial.gpu",
     "campaign.gpu is false"),
    ("tune.loggers", ["wandb"], "tune.loggers", "allowed: tensorboard, mlflow"),
    ("campaign.init", 0, "campaign.init", "must be >= 1"),
    ("campaign.strategy", "entropy", "tune.search_space.candidates", "only the autoal"),
    ("campaign.out", "runs/x", "campaign.out", "tune --out"),
    ("campaign.workers", 1, "campaign.shards", "shards >= 1"),
])
def test_bad_sweeps_name_the_field(path, value, field, words):
    with pytest.raises(ConfigError) as e:
        parse_sweep(sweep_with(path, value))
    assert e.value.field == field, str(e.value)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_logger_that_is_not_installed_is_an_error():
    for name, package in (("tensorboard", "tensorboardX"), ("mlflow", "mlflow")):
        try:
            __import__(package)
        except ImportError:
            with pytest.raises(ConfigError, match=f"pip install {package}"):
                parse_sweep(sweep_with("tune.loggers", [name]))


def test_sampled_trials_are_checked_against_the_data():
    sweep = parse_sweep(sweep_with("tune.search_space.budget", {"choice": [10, 1000]}))
    check_samples(sweep, [{"budget": 10}], num_classes=10, pool_size=1348)
    with pytest.raises(ConfigError, match=r"^tune.search_space: trial 1 samples \{'budget': 1000\}"
                                          r": rounds: init \+ rounds\*budget"):
        check_samples(sweep, [{"budget": 10}, {"budget": 1000}], num_classes=10, pool_size=1348)


@pytest.mark.parametrize("edit, args, message", [
    (("tune.num_samples", 0), [], "tune.num_samples: must be an integer >= 1, got 0"),
    (("tune.metric", "auc"), ["--num-samples", "0"], "--num-samples: must be an integer >= 1"),
    (("campaign.init", 5), [], "campaign.init: must be >= the number of classes (10)"),
])
def test_cli_bad_sweep_is_one_line_and_exit_2(tmp_path, capsys, edit, args, message):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(sweep_with(*edit)))
    assert main(["tune", "--config", str(config), "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"autoal-dist: error: {message}") and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_non_empty_out(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(SWEEP))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["tune", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--out:" in err and "not an empty directory" in err and "\n" not in err


@pytest.mark.slow
def test_four_trial_asha_sweep_on_digits(ray_cluster, tmp_path, capsys):
    config, out = tmp_path / "sweep.yaml", tmp_path / "sweep"
    config.write_text(yaml.safe_dump(SWEEP))
    assert main(["tune", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:4] == ["rank", "trial", "auc", "accuracy"]

    table = pq.read_table(out / "tune_results.parquet")
    rows = table.to_pylist()
    assert len(rows) == 4
    assert set(table.column_names) >= {
        "trial_id", "candidates", "autoal.searchnet_lr", "autoal.fitnet_lr",
        "autoal.search_iters", "auc", "accuracy", "last_round", "stopped_early", "status"}
    assert [r["auc"] for r in rows if r["status"] == "complete"] == sorted(
        (r["auc"] for r in rows if r["status"] == "complete"), reverse=True)
    for r in rows:
        assert r["status"] in ("complete", "stopped") and not math.isnan(r["auc"])
        assert r["stopped_early"] == (r["last_round"] < 3)
        assert set(r["candidates"].split(",")) <= {"entropy", "margin", "kmeans"}
        assert r["trial_id"] in printed
        trial_dir = out / "trials" / r["trial_id"]
        assert len(pq.read_table(trial_dir / "metrics.parquet")) == r["last_round"] + 1
        summary = (trial_dir / "summary.md").read_text()  # each trial's report, like a run's
        assert ("ASHA stopped this trial" in summary) == r["stopped_early"]
        assert (trial_dir / "curves.png").is_file()

    best = rows[0]
    rerun = tmp_path / "rerun"
    assert main(["run", "--config", str(out / "best_config.yaml"), "--out", str(rerun),
                 "--local", "--quiet"]) == 0
    if best["status"] == "complete":  # same config and seed: the trial's curve exactly
        assert pq.read_table(rerun / "metrics.parquet").column("accuracy").to_pylist()[-1] == \
            best["accuracy"]


@pytest.mark.slow
def test_sweep_on_s3(ray_cluster, s3_bucket, tmp_path, capsys):
    """--out s3://...: the sweep's files, every trial's run directory and Tune's experiment
    land in the bucket (trials stage their runs: they may sit on any node)."""
    from autoal_dist import remote

    sweep = sweep_with("tune.scheduler", None)
    sweep["campaign"]["rounds"] = 1
    sweep["tune"]["num_samples"] = 2
    config, out = tmp_path / "sweep.yaml", f"{s3_bucket}/sweeps/s1"
    config.write_text(yaml.safe_dump(sweep))
    assert main(["tune", "--config", str(config), "--out", out, "--quiet"]) == 0
    assert f"outputs: {out}/" in capsys.readouterr().out
    files = remote.RemoteDir.open(out).files()
    for name in ("sweep.yaml", "tune_results.parquet", "best_config.yaml"):
        assert name in files
    assert any(f.startswith("ray_tune/") for f in files)  # Tune's experiment state
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    remote.RemoteDir.open(out).download(pulled, skip=("ray_tune",))
    rows = pq.read_table(pulled / "tune_results.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["complete", "complete"]
    for r in rows:
        assert len(pq.read_table(pulled / "trials" / r["trial_id"] / "metrics.parquet")) == 2
    assert main(["tune", "--config", str(config), "--out", out]) == 2  # not empty any more


def test_a_trial_takes_the_run_lock_as_run_does(tmp_path, monkeypatch):
    """A trial opens its run directory through `open_run`, with the lock and the checks of
    `autoal-dist run`: a second writer on a trial's directory is refused, naming the holder."""
    from types import SimpleNamespace

    from ray import tune

    from autoal_dist.run import RunLocked, run_lock
    from autoal_dist.sweep import runner

    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t1"))
    trials = tmp_path / "trials"
    campaign = {"dataset": "digits", "rounds": 1, "init": 10, "budget": 10}
    with run_lock(str(trials / "t1"), "another writer"):
        with pytest.raises(RunLocked, match="another writer"):
            runner._trial({}, campaign=campaign, data=None, meta={}, trials_dir=str(trials),
                          mode="local")
    assert not (trials / "t1" / "config.json").exists()


def test_a_trial_holds_its_scorer_actors_beside_its_train_workers(monkeypatch):
    """tune.mode ray: a trial's scorer actors live in its placement group for the whole trial,
    beside its Ray Train job's workers, so one trial is checked with both at once."""
    from autoal_dist import ray_cluster
    from autoal_dist.sweep.runner import _start_ray, _trial_resources

    cluster = {"CPU": 4.0}
    monkeypatch.setattr(ray_cluster, "_resources", lambda: cluster)
    monkeypatch.setattr(ray_cluster, "ensure_ray", lambda *a: ray_cluster.RaySession(None, False))
    monkeypatch.setattr(ray_cluster, "announce", lambda *a, **kw: "ray: a 4-CPU cluster")
    sweep = parse_sweep({**SWEEP, "campaign": {**SWEEP["campaign"], "workers": 2, "shards": 1}})
    assert sweep.mode == "ray"
    _start_ray(sweep)  # 1 (the trial) + 1 scorer actor + 2 Train workers = 4 CPUs
    cluster["CPU"] = 3.0
    with pytest.raises(ray_cluster.ResourceError) as e:
        _start_ray(sweep)
    assert str(e.value).startswith(
        "one trial (tune.resources_per_trial cpu 1, gpu 0, + 1 scorer actors, + its Ray Train "
        "job's 2 workers) needs 4 CPUs and 0 GPUs at once, but the Ray cluster has 3 CPUs")
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    bundles = _trial_resources(sweep.base, sweep.cpu, sweep.gpu, sweep.mode).bundles
    assert bundles == [{"CPU": 1.0}, {"CPU": 1.0}]  # the trial, its one scorer actor
