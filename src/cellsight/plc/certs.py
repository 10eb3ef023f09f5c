"""Self-signed application certificates for commissioning and tests (a plant CA should sign real ones).

`python -m cellsight.plc.certs server.pem server.key urn:cellsight:plc:server --server`
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID


def write_self_signed(
    certificate: Path,
    private_key: Path,
    application_uri: str,
    *,
    server: bool,
    host: str | None = None,
    days: int = 365,
) -> None:
    """Write a PEM certificate and PEM key for an OPC UA application (URI and host in the SubjectAltName)."""
    host = host or socket.gethostname()
    key = generate_private_key()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri), x509.DNSName(host)]
    usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = generate_self_signed_app_certificate(key, application_uri, {}, names, extended=usage, days=days)
    private_key.write_bytes(dump_private_key_as_pem(key))
    private_key.chmod(0o600)
    certificate.write_bytes(cert.public_bytes(Encoding.PEM))


def pem_or_der(path: Path) -> str:
    """ "pem" or "der" by content, not by name: asyncua guesses from the suffix, and a `.key` is often PEM."""
    with path.open("rb") as f:
        return "pem" if f.read(64).lstrip().startswith(b"-----BEGIN") else "der"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("certificate", type=Path)
    parser.add_argument("private_key", type=Path)
    parser.add_argument("application_uri")
    parser.add_argument("--server", action="store_true", help="a server certificate (default: a client one)")
    parser.add_argument("--host", default=None)
    args = parser.parse_args()
    write_self_signed(args.certificate, args.private_key, args.application_uri, server=args.server, host=args.host)


if __name__ == "__main__":
    main()
