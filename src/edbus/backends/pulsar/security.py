"""TLS and token settings of a Pulsar connection, and the checks that make their failures one clear line.

The token itself is never held in a setting, a URL, a repr or a message: the settings name where it is
(``token_file=/path`` or ``token_env=VAR``) and it is read when a connection needs it, so a rotated
token file is picked up by the next connection. Messages name the token's *role* (its ``sub`` claim,
read without verification: the broker verifies it), which is not a secret.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import socket
import ssl

from edbus.errors import AuthenticationError, ConfigError

__all__ = ["Security", "tls_probe", "untrusted_certificate"]


@dataclasses.dataclass(frozen=True, slots=True)
class Security:
    """``tls``: the service URL is ``pulsar+ssl://`` (the admin URLs then must be ``https://``);
    ``tls_ca``: the CA file that signs the brokers' certificates (default: the system's trust store);
    hostnames are always validated. ``token_file`` / ``token_env``: where the JWT is (one of them)."""

    tls: bool = False
    tls_ca: str = ""
    token_file: str = ""
    token_env: str = ""

    @property
    def has_token(self) -> bool:
        return bool(self.token_file or self.token_env)

    @property
    def token_source(self) -> str:
        """Where the token is read from, for messages."""
        return f"token_file={self.token_file}" if self.token_file else f"token_env={self.token_env}"

    def token(self) -> str:
        """The token, read now; ``ConfigError`` (naming where it was looked for, never its content) when
        there is none."""
        if self.token_file:
            try:
                with open(self.token_file, encoding="utf-8") as f:
                    found = f.read().strip()
            except OSError as exc:
                raise ConfigError(f"Pulsar token_file={self.token_file}: cannot read it ({exc.strerror})") from None
        else:
            found = os.environ.get(self.token_env, "").strip()
        if not found:
            raise ConfigError(f"Pulsar {self.token_source}: empty or not set")
        return found

    def token_or_empty(self) -> str:
        """For the client's C++ thread, which must not get an exception: "" makes the broker refuse."""
        try:
            return self.token()
        except ConfigError:
            return ""

    def role(self) -> str:
        """The token's role (its ``sub`` claim) for messages; ``"?"`` when it cannot be read."""
        if not self.has_token:
            return "anonymous"
        try:
            body = self.token().split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            return str(claims.get("sub") or "?") if isinstance(claims, dict) else "?"
        except (ConfigError, IndexError, ValueError, binascii.Error):
            return "?"

    def ssl_context(self) -> ssl.SSLContext:
        """Certificate and hostname validation on, trusting ``tls_ca`` (else the system's store)."""
        try:
            return ssl.create_default_context(cafile=self.tls_ca or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"Pulsar tls_ca={self.tls_ca}: not a readable CA file ({exc})") from None


def _untrusted(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc)


def tls_probe(security: Security, hosts: list[tuple[str, int]], timeout: float = 3.0) -> None:
    """A TLS handshake with the first host that accepts a connection, validated as the client will:
    an untrusted certificate or a wrong hostname is ``AuthenticationError`` in one line, not the
    client's silent reconnection loop. Unreachable hosts are left to the client's own retries."""
    context = security.ssl_context()
    for host, port in hosts:
        try:
            with socket.create_connection((host, port), timeout=timeout) as raw, \
                    context.wrap_socket(raw, server_hostname=host):
                return
        except ssl.SSLError as exc:
            trusted = f"tls_ca={security.tls_ca}" if security.tls_ca else "the system's trust store"
            what = "not trusted by" if _untrusted(exc) else "refused with"
            detail = getattr(exc, "verify_message", None) or exc.reason or exc
            raise AuthenticationError(
                f"Pulsar broker at {host}:{port}: TLS certificate {what} {trusted} ({detail})") from None
        except OSError:
            continue


def untrusted_certificate(exc: BaseException) -> bool:
    """Whether an exception (or its cause chain) is a failed certificate validation."""
    seen: BaseException | None = exc
    while seen is not None:
        if _untrusted(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
