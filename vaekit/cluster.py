"""Grade on a Dask cluster only the TA's machines can join (TLS with the TA's own certificates).

The certificates are of the TA's own authority (Dask's ``Security``); each worker builds the judge once, and each
submission is one task. Only ``--scheduler`` imports this module (and Dask): a student's ``grade.py`` never does.
Without the certificates, anyone who reaches the scheduler's port could start a worker and be sent the hidden test
set, the classifier and every hand-in, and return any grade.

    python -m vaekit.cluster certs ~/.vaekit-tls     # once: ca.pem, node.pem, node-key.pem (copy to every machine)

then, on the machines, the commands it prints (``dask scheduler`` / ``dask worker`` with the three files), and
``grade.py --batch ... --scheduler tls://HOST:8786 --tls ~/.vaekit-tls``. Every connection, the TA's included, needs a
certificate the authority signed; ``ca-key.pem`` (the authority's key) stays with the TA.
"""

from __future__ import annotations

import argparse
import datetime
import io
import ipaddress
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from distributed import WorkerPlugin

from .batch import Staged, grade_staged
from .course import SubmissionError
from .data import load_test_data
from .grading import GradeSettings
from .judge import Judge

CA, CA_KEY, CERT, KEY = "ca.pem", "ca-key.pem", "node.pem", "node-key.pem"
PLUGIN = "vaekit-judge"
CONNECT_TIMEOUT = 10  # seconds to reach a scheduler


def make_certificates(folder: str | Path, days: int = 365) -> Path:
    """A new authority (``ca.pem``, ``ca-key.pem``) and one certificate it signs for every member of the cluster
    (``node.pem``, ``node-key.pem``, for both ends of a connection), in ``folder`` (keys readable by the owner only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vaekit grading authority")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    node = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vaekit grading node")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    private = dict(encoding=pem, format=serialization.PrivateFormat.PKCS8,
                   encryption_algorithm=serialization.NoEncryption())
    files = ((CA, ca.public_bytes(pem), 0o644), (CERT, node.public_bytes(pem), 0o644),
             (CA_KEY, ca_key.private_bytes(**private), 0o600), (KEY, key.private_bytes(**private), 0o600))
    for name, data, mode in files:
        path = folder / name
        path.touch(mode=mode)
        path.chmod(mode)
        path.write_bytes(data)
    return folder


def tls_flags(folder: str | Path) -> list[str]:
    """The ``dask scheduler`` / ``dask worker`` flags that make it a member of the cluster."""
    folder = Path(folder)
    return ["--tls-ca-file", str(folder / CA), "--tls-cert", str(folder / CERT), "--tls-key", str(folder / KEY)]


def security(folder: str | Path) -> Any:
    """The TA's side of every connection: TLS, the authority's certificate required of the other end."""
    from distributed.security import Security

    folder = Path(folder)
    missing = [name for name in (CA, CERT, KEY) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} has no {', '.join(missing)}; make them with "
                                f"`python -m vaekit.cluster certs {folder}`.")
    return Security(tls_ca_file=str(folder / CA), tls_client_cert=str(folder / CERT),
                    tls_client_key=str(folder / KEY), require_encryption=True)


# -- grading on the cluster ------------------------------------------------------------------------------


class JudgePlugin(WorkerPlugin):
    """Builds the judge once per worker, on its first submission, from the test set and classifier it carries (sent
    to each worker once, with the plugin)."""

    name = PLUGIN

    def __init__(self, test_npz: bytes | None, classifier: bytes | None, threads: int):
        self.test_npz, self.classifier, self.threads = test_npz, classifier, threads

    def setup(self, worker: Any = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="vaekit-judge-"))
        self._judge: Judge | None = None
        self._lock = threading.Lock()

    def teardown(self, worker: Any = None) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def judge(self) -> Judge:
        with self._lock:
            if self._judge is None:
                test = classifier = None
                if self.test_npz is not None:
                    test = self.folder / "test.npz"
                    test.write_bytes(self.test_npz)
                if self.classifier is not None:
                    classifier = self.folder / "classifier.pt"
                    classifier.write_bytes(self.classifier)
                self._judge = Judge(str(test) if test else None, str(classifier) if classifier else None,
                                    threads=self.threads)
            return self._judge


def _grade_on_worker(staged: Staged, tasks: list[str], settings: GradeSettings
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, bytes]]:
    from distributed import get_worker

    return grade_staged(get_worker().plugins[PLUGIN].judge(), staged, tasks, settings)


def _isolation_of_worker(mode: str) -> str | None:
    from .isolation import resolve_isolation

    try:
        resolve_isolation(mode)
    except SubmissionError as e:
        return str(e)
    return None


def connect(address: str, security: Any = None) -> Any:
    """A client of the scheduler at ``address`` (over TLS with ``security``: ``vaekit.cluster.security``), or
    ``ConnectionError`` with one sentence."""
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_TIMEOUT, security=security)
    except (OSError, TimeoutError, ValueError) as e:
        reason = str(e).split("\n")[0][:200]
        raise ConnectionError(f"no Dask scheduler answered at {address} within {CONNECT_TIMEOUT} s ({reason}); start "
                              "one with `dask scheduler` and workers with `dask worker ADDRESS`, or grade here with "
                              "--scheduler local.") from e


def prepare_cluster(client: Any, test_data: str | None, classifier: str | None, settings: GradeSettings) -> None:
    """Check every worker can sandbox as ``settings.isolation`` asks, then give each the judge's files once."""
    refused = {addr: why for addr, why in client.run(_isolation_of_worker, settings.isolation).items() if why}
    if refused:
        addr, why = sorted(refused.items())[0]
        raise SubmissionError(f"worker {addr} cannot grade: {why}")
    if not client.scheduler_info().get("workers"):
        raise ConnectionError("the Dask scheduler has no workers; start some with `dask worker ADDRESS`.")
    test = None
    if test_data is not None:  # as the float32 images it loads to, so every worker hashes the same test set
        split = load_test_data(test_data)
        buf = io.BytesIO()
        np.savez(buf, x=split.x.numpy(), y=split.y.numpy())
        test = buf.getvalue()
    client.register_plugin(JudgePlugin(test, Path(classifier).read_bytes() if classifier else None,
                                       settings.threads), name=PLUGIN)


def dask_grader(client: Any, tasks: list[str], settings: GradeSettings) -> Callable[[Staged], Any]:
    def grade(staged: Staged) -> Any:
        # pure=False: a rerun after a lost worker is a new task; retries are the scheduler's own (allowed-failures).
        return client.submit(_grade_on_worker, staged, tasks, settings.for_workers(), pure=False,
                             key=f"grade-{staged.name}-{staged.sha256[:12]}-{time.monotonic_ns()}")

    return grade



def main(argv: list[str] | None = None) -> None:
    from .cli import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m vaekit.cluster", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    certs = sub.add_parser("certs", help="make the authority and the cluster's certificate in DIR",
                           formatter_class=HelpFormatter)
    certs.add_argument("dir", help="folder for ca.pem, ca-key.pem, node.pem, node-key.pem")
    certs.add_argument("--days", type=int, default=365, help="how long the certificates are valid")
    args = p.parse_args(argv)
    folder = make_certificates(args.dir, args.days)
    flags = " ".join(tls_flags(folder))
    print(f"wrote {folder}/{{{CA},{CERT},{KEY}}} (copy these three to every grading machine; keep {CA_KEY} here)\n"
          f"  dask scheduler {flags}\n"
          f"  dask worker tls://HOST:8786 --nthreads $(nproc) {flags}\n"
          f"  python grade.py --batch hand-ins/ --scheduler tls://HOST:8786 --tls {folder} ...")


if __name__ == "__main__":
    main()
