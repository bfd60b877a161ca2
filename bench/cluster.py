"""A real Dask cluster on this machine, as a TA starts one: ``dask scheduler`` and ``dask worker`` processes on
localhost, over TLS with the certificates in ``tls`` (``python -m vaekit.cluster certs``; plain TCP without). The batch
benchmark and the cluster tests use it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vaekit.cluster import security, tls_flags

DASK = Path(sys.executable).with_name("dask")  # the venv's own command, so workers import this kit


class LocalDaskCluster:
    """A scheduler at once; ``add_worker`` for each worker (one thread each, no nanny: a killed worker stays dead).
    Logs go to ``folder``. ``tls``: the certificates' folder (every member and client must present them)."""

    def __init__(self, folder: Path, cwd: Path, tls: Path | None = None):
        self.folder, self.cwd, self.workers, self.tls = Path(folder), Path(cwd), {}, tls
        self.flags = ["--protocol", "tls", *tls_flags(tls)] if tls else []
        self.folder.mkdir(parents=True, exist_ok=True)
        file = self.folder / "scheduler.json"
        file.unlink(missing_ok=True)
        self.scheduler = self._start([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                      "--scheduler-file", str(file), *self.flags], "scheduler")
        deadline = time.monotonic() + 60
        while not file.exists():
            if time.monotonic() > deadline or self.scheduler.poll() is not None:
                self.close()
                raise RuntimeError(f"dask scheduler did not start (see {self.folder / 'scheduler.log'})")
            time.sleep(0.2)
        self.address = json.loads(file.read_text())["address"]

    def _start(self, cmd: list[str], name: str, env: dict | None = None) -> subprocess.Popen:
        with open(self.folder / f"{name}.log", "w") as log:
            return subprocess.Popen(cmd, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)

    def add_worker(self, name: str, env: dict | None = None, certificates: Path | None | str = "cluster"
                   ) -> subprocess.Popen:
        """Start a worker with the cluster's certificates, or ``certificates``: another folder of them (a stranger's
        own authority) or None (none at all)."""
        folder = self.tls if certificates == "cluster" else certificates
        flags = tls_flags(folder) if folder else []
        self.workers[name] = self._start([str(DASK), "worker", self.address, "--name", name, "--nthreads", "1",
                                          "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", *flags], name, env)
        return self.workers[name]

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=30, set_as_default=False,
                      security=security(self.tls) if self.tls else None)

    def wait_for_workers(self, n: int) -> None:
        with self.client() as c:
            c.wait_for_workers(n, timeout=120)

    def kill(self, name: str) -> None:
        """SIGKILL a worker and everything it started."""
        os.killpg(self.workers[name].pid, signal.SIGKILL)
        self.workers[name].wait()

    def close(self) -> None:
        for p in [*self.workers.values(), self.scheduler]:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()

    def __enter__(self) -> LocalDaskCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
