"""Config loading: precedence, strict keys and types, one-line errors naming the field."""
import json

import pytest

from autoal_dist.config import ConfigError, check_against_data, read_config_file
from autoal_dist.registry import load_config


def test_precedence_defaults_preset_file_cli():
    cfg = load_config({"preset": "paper-cifar", "budget": 500}, {"rounds": 3})
    assert (cfg.init, cfg.budget, cfg.rounds, cfg.model) == (2000, 500, 3, "resnet18")
    assert cfg.train.optimizer == "sgd"


@pytest.mark.parametrize("values, field", [
    ({"dataset": "imagenet21k"}, "dataset"),
    ({"strategy": "oracle"}, "strategy"),
    ({"candidates": "entropy,telepathy"}, "candidates"),
    ({"candidates": "entropy,entropy"}, "candidates"),
    ({"rounds": -1}, "rounds"),
    ({"budget": 0}, "budget"),
    ({"init": "many"}, "init"),
    ({"init": True}, "init"),
    ({"colour": "red"}, "colour"),
    ({"train": {"lr": -1}}, "train.lr"),
    ({"train": {"optimiser": "adam"}}, "train.optimiser"),
    ({"autoal": {"tau": "hot"}}, "autoal.tau"),
    ({"autoal": {"threshold": "median"}}, "autoal.threshold"),
    ({"preset": "paper-imagenet"}, "preset"),
    ({"train": 3}, "train"),
])
def test_bad_values_name_the_field(values, field):
    with pytest.raises(ConfigError) as e:
        load_config(values)
    assert e.value.field == field
    assert "\n" not in str(e.value)


def test_data_dependent_checks():
    cfg = load_config({"init": 5})
    with pytest.raises(ConfigError, match="number of classes"):
        check_against_data(cfg, num_classes=10, pool_size=100)
    with pytest.raises(ConfigError, match="budget"):
        check_against_data(load_config({"init": 10, "budget": 95}), 10, 100)
    with pytest.raises(ConfigError, match="rounds"):
        check_against_data(load_config({"init": 10, "budget": 20, "rounds": 5}), 10, 100)
    check_against_data(load_config({"init": 10, "budget": 20, "rounds": 4}), 10, 100)


def test_config_files(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("dataset: digits\nbudget: 7\ntrain:\n  epochs: 3\n")
    assert read_config_file(p) == {"dataset": "digits", "budget": 7, "train": {"epochs": 3}}
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"budget": 3}))
    assert load_config(read_config_file(j)).budget == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("budget: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(bad)
    with pytest.raises(ConfigError, match="no such file"):
        read_config_file(tmp_path / "missing.yaml")
