"""Pulsar with TLS, token authentication and per-role authorization, on a secured standalone broker of the
module's own (scripts/pulsar.sh with EDBUS_PULSAR_SECURE_DIR): certificates, the HS256 key and the
tokens are made here, in a temporary folder, nothing committed.

Also the driver of the contract suite on such a broker:
``python -m tests.test_pulsar_security contract [pytest options]`` starts one on free ports with fresh
material, runs ``pytest tests/contract -k pulsar`` against it as the superuser, and stops it.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PULSAR_SH = ROOT / "scripts" / "pulsar.sh"


# -- material: a CA, a server certificate, an untrusted CA, the token key and tokens -----------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(secret: bytes, role: str) -> str:
    """A Pulsar token: a JWT whose ``sub`` is the role, signed HS256 (what ``pulsar tokens create`` makes)."""
    head = _b64(json.dumps({"alg": "HS256"}).encode()) + "." + _b64(json.dumps({"sub": role}).encode())
    return head + "." + _b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())


def _certificate(subject: str, key: object, issuer: tuple[str, object] | None, ca: bool) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]) if issuer else name
    signer = issuer[1] if issuer else key
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    else:
        builder = (builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclasses.dataclass(frozen=True)
class Material:
    """A secured broker's folder (scripts/pulsar.sh's EDBUS_PULSAR_SECURE_DIR) plus an untrusted CA."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def untrusted_ca(self) -> Path:
        return self.folder / "untrusted-ca.pem"

    def token(self, role: str) -> str:
        return hs256_token((self.folder / "secret.key").read_bytes(), role)

    def token_file(self, role: str) -> Path:
        path = self.folder / f"{role}.token"
        if not path.exists():
            path.touch(0o600)
            path.write_text(self.token(role))
        return path

    def secrets(self) -> list[str]:
        """What must never be printed: every token made so far and the signing key (as text forms)."""
        key = (self.folder / "secret.key").read_bytes()
        tokens = [p.read_text().strip() for p in self.folder.glob("*.token")]
        return [*tokens, key.hex(), base64.b64encode(key).decode(), _b64(key)]

    @classmethod
    def write(cls, folder: Path) -> Material:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        ca_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
        # RSA: the broker's web TLS reads no other key type
        server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (folder / "ca.pem").write_bytes(_certificate("edbus test CA", ca_key, None, ca=True))
        (folder / "untrusted-ca.pem").write_bytes(_certificate("edbus untrusted CA", other_key, None, ca=True))
        (folder / "server.pem").write_bytes(_certificate("localhost", server_key, ("edbus test CA", ca_key), ca=False))
        (folder / "server-key.pem").write_bytes(server_key.private_bytes(  # PKCS#8: what Netty reads
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        os.chmod(folder / "server-key.pem", 0o600)
        (folder / "secret.key").touch(0o600)
        (folder / "secret.key").write_bytes(secrets.token_bytes(32))
        material = cls(folder)
        material.token_file("admin")  # the superuser: the broker's own client and pulsar.sh's readiness check
        return material


# -- the secured broker ----------------------------------------------------------------------------
def _free_port() -> str:
    return subprocess.run(["bash", str(PULSAR_SH), "free-port"], capture_output=True, text=True,
                          check=True).stdout.strip()


class SecuredBroker:
    """A secured standalone broker of its own (data folder, free ports, fresh material)."""

    def __init__(self, root: Path) -> None:
        self.material = Material.write(root / "secure")
        self.data = root / "data"
        self.port, self.admin_port = _free_port(), _free_port()
        self.env = {**os.environ, "EDBUS_PULSAR_DATA": str(self.data), "EDBUS_PULSAR_PORT": self.port,
                    "EDBUS_PULSAR_ADMIN_PORT": self.admin_port, "EDBUS_PULSAR_SECURE_DIR": str(self.material.folder)}

    @property
    def service(self) -> str:
        return f"pulsar+ssl://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"https://127.0.0.1:{self.admin_port}"

    def options(self, role: str, ca: Path | None = None) -> str:
        return f"tls_ca={ca or self.material.ca}&token_file={self.material.token_file(role)}"

    def url(self, role: str, prefix: str = "", ca: Path | None = None) -> str:
        return f"{self.service}?admin={self.admin}&{self.options(role, ca)}&prefix={prefix}"

    def _script(self, command: str) -> None:
        done = subprocess.run(["bash", str(PULSAR_SH), command], env=self.env, capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"pulsar.sh {command} failed: {done.stdout[-2000:]}{done.stderr[-3000:]}")

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")


def contract(argv: list[str]) -> int:
    """Start a secured broker, run the contract suite's Pulsar half on it as the superuser, stop it."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="edbus-secured-"))
    broker = SecuredBroker(root)
    try:
        broker.start()
        env = {**broker.env, "EDBUS_TEST_PULSAR": broker.service, "EDBUS_TEST_PULSAR_ADMIN": broker.admin,
               "EDBUS_TEST_PULSAR_OPTIONS": broker.options("admin")}
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/contract", "-k", "pulsar", *argv],
                              env=env, cwd=ROOT).returncode
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] != ["contract"]:
        sys.exit("usage: python -m tests.test_pulsar_security contract [pytest options]")
    sys.exit(contract(sys.argv[2:]))
