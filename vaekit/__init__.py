"""Machinery shared by the course scripts, each piece written once.

``course`` holds what the course defines (task folders, required files, loading a course folder); ``building``
builds a submission's model; ``train_command`` the run of ``train_vae.py`` / ``train_cond.py``; ``training_loop``
the one training loop; ``priors`` fits a trained model's prior; ``settings`` the options of training, grading and a
batch; ``cli`` the flags every script shares. The grader: ``grading`` walks one submission through ``intake`` (its
files checked and copied), ``isolation`` (the sandbox), ``stages`` and ``protocol`` (the ``worker`` processes, their
clock and their replies; ``process_env`` their environment) and ``scoring`` (numbers from the workers' images
against the ``judge``; ``metrics`` the formulas) into a ``grade_record``; ``batch`` grades a class, resumably
(``progress`` its terminal line), ``gradepage`` draws the page, ``outputs`` writes every file atomically, ``escape``
makes what a hand-in decides safe for a folder name, a sheet and a terminal, ``cluster`` grading on a TLS-only Dask
cluster. ``defaults`` says where each training default comes from, ``samplecheck`` reads a trained model's samples.
Also ``data``, ``checkpoint``, ``generation``, ``classifier``, ``plots``, ``paths``, ``readme``, ``contract``,
``course_inference``, ``adversarial``, ``photos``, ``student``.
"""

from .paths import run_own_code

run_own_code()  # a script of another checkout than this package's runs with its own checkout's package
