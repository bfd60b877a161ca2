"""Machinery shared by the course scripts, each piece written once.

``course`` holds what the course defines (task folders, required files, loading and writing a course folder);
``trainer`` the run of ``train_vae.py`` / ``train_cond.py``; ``training`` the one training loop; ``cli`` the flags
every script shares; ``grading`` with ``sandbox`` and ``worker`` the grader, ``gradepage`` its HTML page;
``data``, ``checkpoint``, ``generation``, ``metrics``, ``classifier``, ``plots``, ``paths``, ``readme``.
"""
