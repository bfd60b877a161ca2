"""A Dask cluster only the TA's machines can join: TLS with certificates of the TA's own authority (Dask's
``Security``). Without them, anyone who reaches the scheduler's port could start a worker and be sent the hidden test
set, the classifier and every hand-in, and return any grade.

    python -m vaekit.cluster certs ~/.vaekit-tls     # once: ca.pem, node.pem, node-key.pem (copy to every machine)

then, on the machines, the commands it prints (``dask scheduler`` / ``dask worker`` with the three files), and
``grade.py --batch ... --scheduler tls://HOST:8786 --tls ~/.vaekit-tls``. Every connection, the TA's included, needs a
certificate the authority signed; ``ca-key.pem`` (the authority's key) stays with the TA.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from pathlib import Path
from typing import Any

CA, CA_KEY, CERT, KEY = "ca.pem", "ca-key.pem", "node.pem", "node-key.pem"


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
