"""Machinery shared by the course scripts: data, the training loop, checkpoints, metrics, grading, plots.

``course`` holds what the course defines (task folders, required files, loading and writing a course
folder); ``trainer`` the run of ``train_vae.py`` / ``train_cond.py``; ``training`` the one training loop;
``grading`` with ``sandbox`` and ``worker`` the grader; ``cli`` the flags every script shares.
"""
