"""Credentials never reach a message: database URLs (``user:password@``), Pulsar URLs (tokens, userinfo), LRS
URLs, in errors raised (``str(exc)``), log lines and the command line's one error line. One helper,
``edbus.errors.redact``, does it; these tests go through the real paths that quote a URL."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from edbus import Bus
from edbus.backends import Record, open_backend
from edbus.backends.pulsar.connection import PulsarConfig, pulsar_errors
from edbus.bus.middleware import Middleware
from edbus.cli.main import cli
from edbus.errors import (
    AuthorizationError,
    ConfigError,
    EdbusError,
    StoreError,
    StoreUnavailableError,
    redact,
)
from edbus.outbox import Relay, SQLAlchemyOutbox, create_tables
from edbus_services.xapi.lrs import LrsClient, LrsConfig
from tests.conftest import eventually
from tests.events import SEQ, Seq

SECRET = "s3cr3t-Pa55"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlLWhlcmU"


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(("text", "shown"), [
    (f"postgresql+psycopg://app:{SECRET}@db.internal:5432/lms", "postgresql+psycopg://app:***@db.internal:5432/lms"),
    (f"mysql+pymysql://root:{SECRET}@10.0.0.5/edxapp", "mysql+pymysql://root:***@10.0.0.5/edxapp"),
    (f"postgresql//app:{SECRET}@db/lms", "postgresql//app:***@db/lms"),  # a mistyped scheme too
    (f"https://admin:p@ss{SECRET}@lrs.example/xAPI/", "https://admin:***@lrs.example/xAPI/"),  # '@' in a password
    (f"http://{SECRET}@lrs.example/xAPI/", "http://***@lrs.example/xAPI/"),  # a userinfo alone is a token
    (f"pulsar://h1:6650,h2:6650?token={JWT}&admin=http://h1:8080", "pulsar://h1:6650,h2:6650?token=***&admin=http://h1:8080"),
    (f"pulsar+ssl://h:6651?auth_params={SECRET}", "pulsar+ssl://h:6651?auth_params=***"),
    (f"host=db user=app password={SECRET} dbname=lms", "host=db user=app password=*** dbname=lms"),
    (f"host=db password='{SECRET} x' dbname=lms", "host=db password=*** dbname=lms"),
    (f"Authorization: Bearer {SECRET}0123", "Authorization: Bearer ***"),
    (f"got {JWT} from the environment", "got *** from the environment"),
])
def test_redact_masks_the_secret_and_keeps_what_names_the_mistake(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize("text", [
    "sqlite:////var/lib/edbus/edbus.db", "block-v1:edX+DemoX+2024_T1+type@problem+block@p1", "learner@example.com",
    "course-v1:edX+DemoX+2024_T1", "https://lms.example.com/courses/x", "key=course-v1:edX+A+1 mode=shared",
])
def test_redact_leaves_text_without_credentials_alone(text: str) -> None:
    assert redact(text) == text


def test_every_edbus_error_masks_credentials_in_its_message_and_args() -> None:
    for exc in (ConfigError(f"bad URL 'postgresql://u:{SECRET}@h/db'"), StoreUnavailableError(f"token={SECRET}"),
                AuthorizationError(f"refused on http://u:{SECRET}@h", "role", "t")):
        assert SECRET not in str(exc) and SECRET not in repr(exc) and SECRET not in repr(exc.args)


def test_a_database_url_given_as_the_store_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        open_backend(f"postgresql://app:{SECRET}@db.internal:5432/lms")
    assert SECRET not in str(caught.value) and "postgresql://app:***@db.internal" in str(caught.value)


def test_an_embedded_store_url_with_a_secret_option_is_refused_without_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        open_backend(f"sqlite:///{tmp_path}/edbus.db?password={SECRET}")
    assert SECRET not in str(caught.value) and "password" in str(caught.value)


@pytest.mark.parametrize("url", [
    f"pulsar://127.0.0.1:6650?token={JWT}",
    f"pulsar://admin:{SECRET}@127.0.0.1:6650",
    f"pulsar://127.0.0.1:6650?admin=http://admin:{SECRET}@127.0.0.1:8080",
    f"pulsar://127.0.0.1:6650?tenant={JWT}",
    f"pulsar+ssl://127.0.0.1:6651?token_file=/t&nosuch={SECRET}",
    f"pulsar://127.0.0.1:6650?token_env={SECRET}",  # the token in place of the variable's name
    f"pulsar://127.0.0.1:6650?token_env=EDBUS_TOKEN&token_file={SECRET}",
])
def test_pulsar_urls_with_credentials_are_refused_without_repeating_them(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PulsarConfig.parse(url)
    assert SECRET not in str(caught.value) and JWT not in str(caught.value)


def test_a_pulsar_client_error_quoting_a_credential_is_reported_without_it() -> None:
    import _pulsar

    with pytest.raises(StoreError) as caught, pulsar_errors("connect"):
        raise _pulsar.ConnectError(f"Failed to connect to pulsar://u:{SECRET}@127.0.0.1:6650 token={JWT}")
    assert SECRET not in str(caught.value) and JWT not in str(caught.value) and "ConnectError" in str(caught.value)


def test_an_unreachable_lrs_is_reported_without_the_credentials_of_its_url() -> None:
    lrs = LrsClient(LrsConfig(f"http://feed:{SECRET}@127.0.0.1:{closed_port()}/xAPI/", "feed", "other-secret",
                              timeout=2))
    with pytest.raises(EdbusError) as caught:
        lrs.statements()
    text = str(caught.value)
    assert SECRET not in text and "other-secret" not in text and "http://feed:***@127.0.0.1" in text


# -- the command line: one line, exit 1, no secret ---------------------------------------------------------

def _one_error_line(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, env={"EDBUS_URL": None, "EDBUS_OUTBOX_DB": None})
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_cli_a_database_url_as_url_is_one_line_without_the_password() -> None:
    line = _one_error_line(["--url", f"postgresql://app:{SECRET}@db.internal:5432/lms", "topics"])
    assert SECRET not in line and "postgresql://app:***@db.internal" in line


def test_cli_a_pulsar_url_with_a_token_is_one_line_without_the_token() -> None:
    line = _one_error_line(["--url", f"pulsar://127.0.0.1:6650?token={JWT}", "topics"])
    assert JWT not in line and "token_file" in line


def test_cli_outbox_database_unreachable_is_one_line_naming_it_without_the_password() -> None:
    line = _one_error_line(["outbox", "status", "--db",
                            f"postgresql+psycopg://app:{SECRET}@127.0.0.1:{closed_port()}/lms"])
    assert SECRET not in line and "postgresql+psycopg://app:***@127.0.0.1" in line


@pytest.mark.parametrize("db", [f"postgresql//app:{SECRET}@127.0.0.1/lms", f"nosuchdb://app:{SECRET}@127.0.0.1/lms"])
def test_cli_a_malformed_outbox_url_is_one_line_without_the_password(db: str) -> None:
    line = _one_error_line(["outbox", "status", "--db", db])
    assert SECRET not in line and "bad --db URL" in line


# -- log lines ---------------------------------------------------------------------------------------------

class AuditCheck(Middleware):
    """A publish policy that calls a service whose URL holds credentials, and fails (foreign error text)."""

    def before_publish(self, topic: str, records: Sequence[Record]) -> Sequence[Record]:
        raise RuntimeError(f"POST https://relay:{SECRET}@audit.internal/check: connection refused")


def test_the_outbox_relay_logs_a_failed_publish_without_credentials(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/service.db")
    create_tables(engine)
    with Bus.from_url(f"sqlite:///{tmp_path}/bus.db", middleware=[AuditCheck()]) as bus:
        with engine.begin() as conn:
            SQLAlchemyOutbox(bus).publish(conn, "seq", SEQ, Seq("k", 1))
        relay = Relay(engine, bus, poll=0.01, max_backoff=0.05)
        runner = threading.Thread(target=relay.run)
        with caplog.at_level(logging.WARNING, "edbus"):
            runner.start()
            try:
                eventually(lambda: any("retrying" in r.getMessage() for r in caplog.records), timeout=20)
            finally:
                relay.stop()
                runner.join(20)
    warning = next(r.getMessage() for r in caplog.records if "retrying" in r.getMessage())
    assert "https://relay:***@audit.internal" in warning
    assert SECRET not in caplog.text
    engine.dispose()


def test_a_handler_error_quoting_credentials_is_logged_and_dead_lettered_without_them(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    from edbus.backends import StartAt, dlq_topic

    with Bus.from_url(url) as bus:
        bus.publish("t", SEQ, Seq("k", 1))
        consumer = bus.consumer("t", "s", max_attempts=1)

        @consumer.handler(SEQ)
        def post(event: object) -> None:
            raise RuntimeError(f"POST https://feed:{SECRET}@lrs.internal/xAPI/statements: 502")

        with caplog.at_level(logging.INFO, "edbus"):
            consumer.run(max_events=1, install_signals=False)
        [dead] = eventually(lambda: bus.backend.read(dlq_topic(bus.topic("t"), "s"), StartAt(), 10), timeout=30)
    stored = " ".join(dead.record.headers.values())
    assert "https://feed:***@lrs.internal" in stored
    assert SECRET not in stored and SECRET not in caplog.text
