"""Machinery shared by the course scripts: data, training loop, checkpoints, metrics, grading, plots."""
