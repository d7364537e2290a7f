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
import logging
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edbus.backends import Mode, Record, StartAt, open_backend
from edbus.backends.pulsar import PulsarBackend
from edbus.errors import AuthenticationError, AuthorizationError, ConfigError
from tests.conftest import eventually

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
    made: list[str] = dataclasses.field(default_factory=list)  # every token made, forged ones included

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def untrusted_ca(self) -> Path:
        return self.folder / "untrusted-ca.pem"

    def token(self, role: str) -> str:
        token = hs256_token((self.folder / "secret.key").read_bytes(), role)
        self.made.append(token)
        return token

    def forge(self, role: str, path: Path) -> Path:
        """A token file of ``role`` signed with a key the broker does not know."""
        token = hs256_token(secrets.token_bytes(32), role)
        self.made.append(token)
        path.write_text(token)
        return path

    def token_file(self, role: str) -> Path:
        path = self.folder / f"{role}.token"
        if not path.exists():
            path.touch(0o600)
            path.write_text(self.token(role))
        return path

    def secrets(self) -> dict[str, str]:
        """What must never be printed, by name: every token made so far and the signing key (as text),
        and the tokens' signatures alone (a token cut short in a message)."""
        key = (self.folder / "secret.key").read_bytes()
        found = {"key (hex)": key.hex(), "key (base64)": base64.b64encode(key).decode(), "key (base64url)": _b64(key)}
        for path in self.folder.glob("*.token"):
            token = path.read_text().strip()
            found[path.name] = token
            found[f"{path.name} signature"] = token.rsplit(".", 1)[1]
        for n, token in enumerate(self.made):
            found[f"token {n} ({json.loads(base64.urlsafe_b64decode(token.split('.')[1] + '=='))['sub']})"] = token
            found[f"token {n} signature"] = token.rsplit(".", 1)[1]
        return found

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


# -- the tests -------------------------------------------------------------------------------------
CI = os.environ.get("CI") == "true"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """One secured broker for the module (its start costs ~10 s); its log must hold no secret either."""
    try:
        import pulsar  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"CI needs pulsar-client: {exc}") if CI else pytest.skip(f"pulsar-client missing: {exc}")
    broker = SecuredBroker(tmp_path_factory.mktemp("secured"))
    try:
        broker.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        if CI:
            pytest.fail(f"CI needs the secured Pulsar broker: {exc}")
        pytest.skip(f"no secured Pulsar broker (java and scripts/pulsar.sh fetch needed): {exc}")
    try:
        yield broker
    finally:
        broker.stop()
        log = (broker.data / "broker.log").read_text(errors="replace")
        assert [name for name, value in broker.material.secrets().items() if value in log] == []


@pytest.fixture(autouse=True)
def nothing_secret_is_printed(secured: SecuredBroker, caplog: pytest.LogCaptureFixture,
                              capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Over the whole test: no log record (every logger, DEBUG up: httpx's and httpcore's included) and
    nothing written to stdout or stderr (the C++ client's log, subprocesses) holds a token or the key."""
    caplog.set_level(logging.DEBUG)
    yield
    out, err = capfd.readouterr()
    sys.stdout.write(out)  # shown again by pytest on a failure
    sys.stderr.write(err)
    formatter = logging.Formatter("%(name)s %(message)s")  # with any traceback a record carries
    logged = [formatter.format(r) for when in ("setup", "call") for r in caplog.get_records(when)]
    printed = out + err + "\n".join(logged)
    assert [name for name, value in secured.material.secrets().items() if value in printed] == []


@dataclasses.dataclass(frozen=True)
class Grants:
    """Topic ``orders`` with subscription ``billing``, made by the superuser, and two roles' grants:
    ``producer`` may produce to ``orders`` only; ``consumer`` may consume ``orders`` (not produce) and
    use the subscription's own topics (retry, dead letters: produce and consume)."""

    prefix: str
    broker: SecuredBroker

    def url(self, role: str) -> str:
        return self.broker.url(role, self.prefix)

    def full(self, topic: str) -> str:
        return f"persistent://public/default/{self.prefix}{topic}"


@pytest.fixture
def grants(secured: SecuredBroker) -> Grants:
    g = Grants(f"s{uuid.uuid4().hex[:10]}-", secured)
    admin = open_backend(g.url("admin"))
    try:
        assert isinstance(admin, PulsarBackend)
        for topic in ("orders", "other"):
            admin.admin.create_topic(g.prefix + topic)
        admin.subscribe("orders", "billing", Mode.KEY_ORDERED, StartAt())
        admin.fetch("orders", "billing", "setup", 1, 1)  # makes the subscription's own topics
        admin._dlq("orders", "billing")  # and its dead-letter topic (else made at the first dead letter)
        api = admin.admin

        def grant(topic: str, role: str, actions: list[str]) -> None:
            api.call("POST", f"{api.topic_path(topic)}/permissions/{role}", actions)

        grant(g.prefix + "orders", "producer", ["produce"])
        grant(g.prefix + "orders", "consumer", ["consume"])
        for topic in api.list_topics():
            if topic.startswith(g.prefix) and topic not in (g.prefix + "orders", g.prefix + "other"):
                grant(topic, "consumer", ["produce", "consume"])
    finally:
        admin.close()
    return g


def rec(i: int) -> Record:
    return Record(f"e{i}", "org.openedx.test.item.made.v1", f"k{i % 3}", {"ce_id": f"e{i}"}, b"p%d" % i)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def test_a_producer_role_and_a_consumer_role_each_work_within_their_grants(
        grants: Grants, caplog: pytest.LogCaptureFixture) -> None:
    producer, consumer = open_backend(grants.url("producer")), open_backend(grants.url("consumer"))
    try:
        producer.append("orders", [rec(i) for i in range(5)])
        consumer.subscribe("orders", "billing", Mode.KEY_ORDERED, StartAt())  # exists: the operator made it
        got: list[str] = []

        def take() -> bool:
            batch = consumer.fetch("orders", "billing", "c", 10, 30)
            got.extend(d.message.record.id for d in batch)
            consumer.ack(batch)
            return len(got) >= 5

        eventually(take, timeout=30)
        assert sorted(got) == [f"e{i}" for i in range(5)]
        assert eventually(lambda: consumer.subscriptions("orders")[0].backlog == 0, timeout=10)
    finally:
        producer.close()
        consumer.close()
    # neither role may read the namespace's policies: the deduplication check says what it could not check
    assert any("could not check that Pulsar broker deduplication is on" in r.getMessage() and "'producer'"
               in r.getMessage() for r in caplog.records)


def test_a_producer_role_stepping_outside_its_grant_gets_an_authorization_error_naming_topic_and_role(
        grants: Grants) -> None:
    producer = open_backend(grants.url("producer"))
    try:
        with pytest.raises(AuthorizationError) as publishing:
            producer.append("other", [rec(1)])  # produce, on a topic it has no grant for
        assert grants.full("other") in one_line(publishing.value) and "'producer'" in str(publishing.value)
        assert publishing.value.role == "producer" and grants.full("other") in publishing.value.resource
        with pytest.raises(AuthorizationError) as reading:
            producer.read("orders", StartAt(), 10)  # consume, on its own topic
        assert grants.full("orders") in one_line(reading.value) and "'producer'" in str(reading.value)
        with pytest.raises(AuthorizationError, match=r"role 'producer' .*" + grants.prefix + "orders"):
            producer.subscribe("orders", "audit", Mode.SHARED, StartAt())
    finally:
        producer.close()


def test_a_consumer_role_that_publishes_gets_an_authorization_error_naming_topic_and_role(grants: Grants) -> None:
    consumer = open_backend(grants.url("consumer"))
    try:
        with pytest.raises(AuthorizationError) as publishing:
            consumer.append("orders", [rec(1)])
        assert grants.full("orders") in one_line(publishing.value) and "'consumer'" in str(publishing.value)
    finally:
        consumer.close()


def test_a_token_signed_with_another_key_is_refused_in_one_line(secured: SecuredBroker, grants: Grants,
                                                                tmp_path: Path) -> None:
    forged = secured.material.forge("admin", tmp_path / "forged.token")
    url = grants.url("producer").replace(str(secured.material.token_file("producer")), str(forged))
    b = open_backend(url)
    try:
        with pytest.raises(AuthenticationError, match="refused the credentials of role 'admin'") as refused:
            b.append("orders", [rec(1)])  # the check at start asks the admin API first
        assert "forged.token" in one_line(refused.value)
    finally:
        b.close()


def test_a_token_file_replaced_by_a_bad_token_is_read_at_the_next_connection_and_refused_in_one_line(
        secured: SecuredBroker, grants: Grants, tmp_path: Path) -> None:
    """The token is read at each connection (a rotated file is picked up). The broker closes a connection
    whose token it refuses and the client retries as if it were down; at publish_timeout the backend asks
    the admin API, whose answer says what happened."""
    rotated = tmp_path / "rotated.token"
    rotated.write_text(secured.material.token("producer"))
    url = grants.url("producer").replace(str(secured.material.token_file("producer")), str(rotated))
    b = open_backend(url + "&publish_timeout=3")
    assert isinstance(b, PulsarBackend)
    try:
        b.append("orders", [rec(1)])
        secured.material.forge("producer", rotated)
        b.producers.close()
        b.holder.close()  # the next append connects again, with the file's new content
        with pytest.raises(AuthenticationError, match="refused the credentials of role 'producer'") as refused:
            b.append("orders", [rec(2)])
        one_line(refused.value)
    finally:
        b.close()


def test_a_broker_certificate_of_an_untrusted_ca_is_refused_in_one_line(secured: SecuredBroker,
                                                                         grants: Grants) -> None:
    b = open_backend(secured.url("producer", grants.prefix, ca=secured.material.untrusted_ca))
    try:
        untrusted = r"TLS certificate not trusted by tls_ca=.*untrusted-ca\.pem"
        with pytest.raises(AuthenticationError, match=untrusted) as admin:
            b.append("orders", [rec(1)])
        one_line(admin.value)
        assert isinstance(b, PulsarBackend)
        with pytest.raises(AuthenticationError, match=r"Pulsar broker at 127\.0\.0\.1:\d+: TLS certificate not "
                           r"trusted by tls_ca=.*untrusted-ca\.pem") as client:
            b.producers.append(grants.full("orders"), [rec(1)])
        one_line(client.value)
    finally:
        b.close()


def test_a_token_in_the_url_is_refused_in_one_line_that_does_not_repeat_it(secured: SecuredBroker) -> None:
    token = secured.material.token("producer")
    for url in (f"{secured.service}?token={token}", f"{secured.service}?tls_ca={token}",
                f"pulsar+ssl://producer:{token}@127.0.0.1:{secured.port}"):
        with pytest.raises(ConfigError) as refused:
            open_backend(url)
        assert token not in one_line(refused.value) and "token_file=/path or token_env=VAR" in str(refused.value)


def test_a_token_from_an_environment_variable_is_used_and_a_missing_one_is_one_line(
        grants: Grants, secured: SecuredBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDBUS_TEST_TOKEN", secured.material.token("producer"))
    url = grants.url("producer").replace(f"token_file={secured.material.token_file('producer')}",
                                         "token_env=EDBUS_TEST_TOKEN")
    b = open_backend(url)
    try:
        b.append("orders", [rec(1)])
    finally:
        b.close()
    b = open_backend(url.replace("EDBUS_TEST_TOKEN", "EDBUS_TEST_NO_TOKEN"))
    try:
        with pytest.raises(ConfigError, match="token_env=EDBUS_TEST_NO_TOKEN: empty or not set"):
            b.append("orders", [rec(2)])
    finally:
        b.close()


def test_the_cli_with_a_bad_token_prints_one_line_and_exits_non_zero(secured: SecuredBroker, grants: Grants,
                                                                      tmp_path: Path) -> None:
    forged = secured.material.forge("producer", tmp_path / "forged.token")
    url = grants.url("producer").replace(str(secured.material.token_file("producer")), str(forged))
    for command in (["topics"], ["subscriptions", "orders"]):
        done = subprocess.run([sys.executable, "-m", "edbus.cli.main", "--url", url, *command],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert done.returncode != 0
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "refused the credentials of role 'producer'" in lines[0], done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        sys.stderr.write(done.stdout + done.stderr)  # through capfd: checked for secrets with the rest


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
