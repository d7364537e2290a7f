"""The plugin's configuration: defaults, and the checks that refuse a bad value at ``tutor config save``.

No tutor import here: ``plugin.py`` wires these into tutor's hooks and turns ``EdbusConfigError`` into
tutor's own error (one ``Error: ...`` line, exit code 1).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from typing import Any

# The folder every Open edX container of a `tutor local` install mounts from one host folder
# (data/openedx-media-private): lms, cms, their workers and jobs, and the consumers this plugin adds.
SHARED_DIR = "/openedx/media-private"
EMBEDDED_URL = f"sqlite:///{SHARED_DIR}/edbus/edbus.db"
PULSAR_URL = "pulsar://edbus-pulsar:6650?admin=http://edbus-pulsar:8080&tenant=public&namespace=openedx"

# Values may use Jinja, like tutor's own defaults: they are rendered with the whole configuration.
DEFAULTS: dict[str, Any] = {
    "VERSION": "0.1.0",
    # "embedded": the SQLite store on the shared volume, one host only; "pulsar": an Apache Pulsar cluster.
    "BACKEND": "embedded",
    "URL": "{% if EDBUS_BACKEND == 'pulsar' %}" + PULSAR_URL + "{% else %}" + EMBEDDED_URL + "{% endif %}",
    # What the openedx image installs: a pinned release by default (extras follow the backend).
    "PIP_REQUIREMENT": "edbus[openedx{% if EDBUS_BACKEND == 'pulsar' %},pulsar{% endif %}]=={{ EDBUS_VERSION }}",
    # openedx-events' EVENT_BUS_TOPIC_PREFIX; "dev" is what Tutor core sets.
    "TOPIC_PREFIX": "dev",
    # Acknowledged events are kept this long for replay (EDBUS_RETENTION_SECONDS; Pulsar namespace retention).
    "RETENTION_SECONDS": 7 * 24 * 3600,
    # One service (local) / Deployment (k8s) per entry: topic, group, and optionally service (lms|cms),
    # mode, replicas, concurrency, name.
    "CONSUMERS": [],
    # Run a Pulsar standalone broker in `tutor local` (backend "pulsar" only); k8s needs a Pulsar cluster.
    "RUN_PULSAR": True,
    "PULSAR_DOCKER_IMAGE": "apachepulsar/pulsar:4.2.4",
    "PULSAR_MEMORY": "-Xms512m -Xmx512m -XX:MaxDirectMemorySize=512m",
    # Health probes of the consumers (a port, e.g. 8099; None: no probes): /healthz is alive while the
    # consumer's loop turns, /readyz while its store answers (edbus docs/operations.md).
    "CONSUMER_HEALTH_PORT": None,
    "CONSUMER_LIVENESS_PATH": "/healthz",
    "CONSUMER_READINESS_PATH": "/readyz",
    # k8s with the embedded store: the ReadWriteOnce volume shared by the pods (one node only).
    "K8S_STORE_SIZE": "2Gi",
    # True: you mount the embedded store's folder into every Open edX container yourself, so EDBUS_URL
    # may point outside /openedx/media-private.
    "CUSTOM_STORE_VOLUME": False,
}

BACKENDS = ("embedded", "pulsar")
MODES = ("key_ordered", "shared", "exclusive")
SERVICES = ("lms", "cms")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,200}")
_GROUP = re.compile(r"[A-Za-z0-9_-]{1,100}")
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?")  # edbus-consumer-<name>: a DNS label (<= 63)
_CONSUMER_KEYS = ("topic", "group", "service", "mode", "replicas", "concurrency", "name")


class EdbusConfigError(ValueError):
    """A bad plugin setting: the message names the setting, the value and what is allowed."""


@dataclasses.dataclass(frozen=True, slots=True)
class Consumer:
    """One configured subscription: a ``consume_events`` service with ``replicas`` processes."""

    name: str
    topic: str
    group: str
    service: str = "lms"
    mode: str = "key_ordered"
    replicas: int = 1
    concurrency: int | None = None

    @property
    def service_name(self) -> str:
        return f"edbus-consumer-{self.name}"

    @property
    def extra(self) -> str:
        """``consume_events --extra``: the options edbus's consumer reads (it refuses unknown ones)."""
        options: dict[str, Any] = {"mode": self.mode}
        if self.concurrency is not None:
            options["concurrency"] = self.concurrency
        return json.dumps(options, separators=(",", ":"))

    def command(self, health_port: int | None) -> list[str]:
        extra = json.loads(self.extra)
        if health_port is not None:
            extra["health_port"] = health_port
        return ["./manage.py", self.service, "consume_events", "-t", self.topic, "-g", self.group,
                "--extra", json.dumps(extra, separators=(",", ":"))]


def _whole(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EdbusConfigError(f"{what} must be a whole number >= {minimum}, not {value!r}")
    return value


def parse_consumer(index: int, entry: Any) -> Consumer:
    where = f"EDBUS_CONSUMERS[{index}]"
    if not isinstance(entry, dict):
        raise EdbusConfigError(f"{where} must be a mapping with topic and group, not {entry!r}")
    unknown = sorted(set(entry) - set(_CONSUMER_KEYS))
    if unknown:
        raise EdbusConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; use {', '.join(_CONSUMER_KEYS)}")
    topic, group = entry.get("topic"), entry.get("group")
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic) or topic.endswith(".dlq"):
        raise EdbusConfigError(f"{where}: topic {topic!r}: give the topic without the prefix, in letters, "
                               "digits, '-', '_' and '.'")
    if not isinstance(group, str) or not _GROUP.fullmatch(group):
        raise EdbusConfigError(f"{where}: group {group!r}: the subscription name, in letters, digits, '-' and '_'")
    service = entry.get("service", "lms")
    if service not in SERVICES:
        raise EdbusConfigError(f"{where}: service {service!r}: use lms or cms (whose settings and code it runs)")
    mode = entry.get("mode", "key_ordered")
    if mode not in MODES:
        raise EdbusConfigError(f"{where}: mode {mode!r}: use {', '.join(MODES)}")
    name = entry.get("name", group.lower().replace("_", "-"))
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise EdbusConfigError(f"{where}: name {name!r}: lower-case letters, digits and '-', at most 48 "
                               "characters (it names the service edbus-consumer-<name>); set name: explicitly")
    concurrency = entry.get("concurrency")
    return Consumer(name=name, topic=topic, group=group, service=service, mode=mode,
                    replicas=_whole(entry.get("replicas", 1), f"{where}: replicas", 1),
                    concurrency=None if concurrency is None else _whole(concurrency, f"{where}: concurrency", 1))


def consumers(entries: Any) -> list[Consumer]:
    """The consumers of ``EDBUS_CONSUMERS``, checked (also used as a template function)."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise EdbusConfigError(f"EDBUS_CONSUMERS must be a list of mappings, not {entries!r}")
    parsed = [parse_consumer(i, entry) for i, entry in enumerate(entries)]
    seen: dict[str, Consumer] = {}
    for consumer in parsed:
        for key in (consumer.name, f"{consumer.topic} {consumer.group}"):
            if key in seen:
                raise EdbusConfigError(
                    f"EDBUS_CONSUMERS: {consumer.group!r} on {consumer.topic!r} (service {consumer.service_name}) "
                    f"repeats {seen[key].group!r} on {seen[key].topic!r}: one entry per subscription "
                    "(raise its replicas to run more processes)")
            seen[key] = consumer
    return parsed


def check(config: dict[str, Any]) -> None:
    """Every plugin setting of a fully rendered configuration, or ``EdbusConfigError``."""
    backend = config.get("EDBUS_BACKEND")
    if backend not in BACKENDS:
        raise EdbusConfigError(f"EDBUS_BACKEND {backend!r}: use embedded (one host) or pulsar")
    url = config.get("EDBUS_URL")
    if not isinstance(url, str):
        raise EdbusConfigError(f"EDBUS_URL must be a string, not {url!r}")
    if backend == "embedded":
        if not url.startswith("sqlite:////"):
            raise EdbusConfigError(f"EDBUS_URL {url!r}: the embedded backend takes sqlite:////absolute/path.db")
        if not config.get("EDBUS_CUSTOM_STORE_VOLUME") and not url.startswith(f"sqlite:///{SHARED_DIR}/"):
            raise EdbusConfigError(
                f"EDBUS_URL {url!r}: the embedded store must be under {SHARED_DIR}/, the folder every Open edX "
                "container shares; elsewhere each container would write its own file (or set "
                "EDBUS_CUSTOM_STORE_VOLUME=true if you mount that folder into every container yourself)")
    elif not url.startswith(("pulsar://", "pulsar+ssl://")):
        raise EdbusConfigError(f"EDBUS_URL {url!r}: the pulsar backend takes pulsar://host:6650?admin=http://host:8080")
    prefix = config.get("EDBUS_TOPIC_PREFIX")
    if not isinstance(prefix, str) or (prefix and not _TOPIC.fullmatch(prefix)):
        raise EdbusConfigError(f"EDBUS_TOPIC_PREFIX {prefix!r}: letters, digits, '-', '_' and '.', or empty")
    retention = config.get("EDBUS_RETENTION_SECONDS")
    if retention is not None:
        _whole(retention, "EDBUS_RETENTION_SECONDS", 60)
    port = config.get("EDBUS_CONSUMER_HEALTH_PORT")
    if port is not None and not (isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536):
        raise EdbusConfigError(f"EDBUS_CONSUMER_HEALTH_PORT {port!r}: a TCP port, or null for no health probes")
    requirement = config.get("EDBUS_PIP_REQUIREMENT")
    if not isinstance(requirement, str) or not requirement.strip() or "'" in requirement:
        raise EdbusConfigError(f"EDBUS_PIP_REQUIREMENT {requirement!r}: one pip requirement, without quotes")
    consumers(config.get("EDBUS_CONSUMERS"))


def store_dir(url: str) -> str:
    """The folder of an embedded store's file (``sqlite:////a/b/edbus.db`` -> ``/a/b``): what k8s mounts."""
    return posixpath.dirname(url[len("sqlite:///"):]) if url.startswith("sqlite:////") else ""
