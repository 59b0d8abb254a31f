"""Classifier training: the loop (`loop.py`) and the same loop as a Ray Train job (`ray_job.py`)."""
from autoal_dist.lazy import LazyRegistry

# name -> optimizer(params, TrainConfig); lazy: a config check needs the names, not torch
OPTIMIZERS: LazyRegistry = LazyRegistry({"adam": "autoal_dist.training.loop:adam",
                                         "sgd": "autoal_dist.training.loop:sgd"})
