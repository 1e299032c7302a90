"""Key material the sandbox makes at start: a throwaway CA, a server certificate, a JWT key.

simple-salesforce only builds ``https://`` URLs, so the sandbox must speak TLS; a private CA
(rather than a bare self-signed leaf) lets clients verify with an ordinary ``verify=ca_bundle``
and keeps hostname checking on. The server key is EC P-256 (instant to make, fast
handshakes); the JWT key is RSA because Salesforce's JWT bearer flow is RS256 only.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["KeyMaterial", "make_key_material"]


@dataclass(frozen=True)
class KeyMaterial:
    """Paths of the PEM files written for one sandbox (all inside one private directory)."""

    ca_bundle: Path
    server_cert: Path
    server_key: Path
    jwt_private_key: Path
    jwt_certificate: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tieout Salesforce sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(path: Path, data: bytes, *, private: bool) -> Path:
    # Private keys are created 0600 from the start, never world-readable even briefly.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def _pem_key(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_key_material(
    directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> KeyMaterial:
    """Write a CA, a server cert for ``hosts`` signed by it, and an RSA JWT key + cert."""
    now = datetime.now(UTC)
    not_before = now - timedelta(minutes=5)  # tolerate small clock skew between threads/hosts
    not_after = now + timedelta(days=7)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("tieout sandbox CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    # Extensions chosen to satisfy VERIFY_X509_STRICT (the default from Python 3.13 on).
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    # The connected app's certificate: Salesforce stores only the cert, the client keeps the key.
    jwt_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwt_name = _name("tieout sandbox connected app")
    jwt_cert = (
        x509.CertificateBuilder()
        .subject_name(jwt_name)
        .issuer_name(jwt_name)
        .public_key(jwt_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(jwt_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    return KeyMaterial(
        ca_bundle=_write(directory / "ca.pem", ca_cert.public_bytes(pem), private=False),
        server_cert=_write(
            directory / "server.pem",
            server_cert.public_bytes(pem) + ca_cert.public_bytes(pem),
            private=False,
        ),
        server_key=_write(directory / "server.key", _pem_key(server_key), private=True),
        jwt_private_key=_write(directory / "jwt.key", _pem_key(jwt_key), private=True),
        jwt_certificate=_write(directory / "jwt.pem", jwt_cert.public_bytes(pem), private=False),
    )
