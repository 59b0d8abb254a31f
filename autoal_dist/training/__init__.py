"""Classifier training: the loop (`loop.py`) and the same loop as a Ray Train job (`ray_job.py`)."""
