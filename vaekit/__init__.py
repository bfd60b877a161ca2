"""Machinery shared by the course scripts, each piece written once.

``course`` holds what the course defines (task folders, required files, loading a course folder);
``train_command`` the run of ``train_vae.py`` / ``train_cond.py``; ``training_loop`` the one training loop;
``cli`` the flags every script shares. The grader: ``grading`` runs one submission: ``intake`` checks and copies
its files, ``isolation`` sandboxes its code, ``protocol`` drives the ``worker`` process and reads its replies;
``judge`` holds what it is judged against, ``scoring`` turns the workers' images into numbers (``metrics`` the
formulas), ``results`` writes them, ``batch`` grades a class, resumably, ``gradepage`` draws the page,
``outputs`` writes every file atomically, ``escape`` makes what a hand-in decides safe for a folder name, a sheet
and a terminal, ``cluster`` grading on a TLS-only Dask cluster. ``defaults`` says where each training default
comes from, ``samplecheck`` reads a trained model's samples. Also ``data``, ``checkpoint``, ``generation``,
``classifier``, ``plots``, ``paths``, ``readme``.
"""

from .paths import run_own_code

run_own_code()  # a script of another checkout than this package's runs with its own checkout's package
