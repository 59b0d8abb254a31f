"""Labeling with people (oracle `files`): the labels store, export, label files, import."""
from autoal_dist.labeling.export import default_export_dir, export_batch, next_steps
from autoal_dist.labeling.files import LabelError
from autoal_dist.labeling.labels import (
                                         LABELS_DIR,
                                         LABELS_SCHEMA,
                                         UNLABELED,
                                         awaiting_labels,
                                         awaiting_round,
                                         progress,
                                         read_labels,
                                         revealed_labels,
)

__all__ = ["LABELS_DIR", "LABELS_SCHEMA", "UNLABELED", "LabelError", "awaiting_labels",
           "awaiting_round",
           "default_export_dir", "export_batch", "next_steps", "progress", "read_labels",
           "revealed_labels"]
