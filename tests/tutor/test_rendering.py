"""What ``tutor config save`` renders with the edbus plugin enabled (tutor 22.0.3 from PyPI): settings,
Dockerfile, docker-compose services and k8s manifests; and bad values refused at save time."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.tutor.conftest import CONSUMERS
from tests.tutor.openedx_stand_in import PLUGIN_BLOCK_END, TUTOR_BLOCK_START
from tests.tutor.tutor_venv import TutorRoot

SETTINGS = [("lms", "production.py"), ("lms", "development.py"), ("cms", "production.py"), ("cms", "development.py")]
STORE_MOUNT = "../../data/openedx-media-private:/openedx/media-private:z"


def assignments(text: str, name: str) -> list[tuple[int, str]]:
    """(line number, value) of every top-level ``NAME = value`` line."""
    return [(n, line.split("=", 1)[1].strip()) for n, line in enumerate(text.splitlines())
            if line.split("=", 1)[0].strip() == name and not line.startswith((" ", "#"))]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc.get("kind") == kind}


@pytest.mark.parametrize(("service", "module"), SETTINGS)
def test_edbus_settings_come_after_tutors_redis_event_bus_settings(embedded: TutorRoot, service: str,
                                                                     module: str) -> None:
    text = embedded.text("apps", "openedx", "settings", service, module)
    producers = assignments(text, "EVENT_BUS_PRODUCER")
    consumers = assignments(text, "EVENT_BUS_CONSUMER")
    assert [v for _, v in producers] == ["'edx_event_bus_redis.create_producer'", '"edbus.openedx.create_producer"']
    assert [v for _, v in consumers] == ["'edx_event_bus_redis.RedisEventConsumer'", '"edbus.openedx.EdbusConsumer"']
    assert producers[0][0] < producers[1][0] and consumers[0][0] < consumers[1][0]
    lines = text.splitlines()
    assert lines.index(TUTOR_BLOCK_START) < lines.index(PLUGIN_BLOCK_END)
    assert assignments(text, "EDBUS_URL") == [(producers[1][0] + 3, "'sqlite:////openedx/media-private/edbus/edbus.db'")]
    assert [v for _, v in assignments(text, "EVENT_BUS_TOPIC_PREFIX")] == ["'dev'", "'dev'"]
    assert [v for _, v in assignments(text, "EDBUS_RETENTION_SECONDS")] == ["604800"]


def test_the_openedx_image_installs_the_pinned_edbus_release_or_the_configured_requirement(
        embedded: TutorRoot, pulsar: TutorRoot, new_root: Callable[..., TutorRoot]) -> None:
    assert "$PIP_COMMAND install 'edbus[openedx]==0.1.0'" in embedded.text("build", "openedx", "Dockerfile")
    assert "$PIP_COMMAND install 'edbus[openedx,pulsar]==0.1.0'" in pulsar.text("build", "openedx", "Dockerfile")
    wheel = "edbus[openedx] @ https://files.example.org/edbus-0.1.0-py3-none-any.whl"
    custom = new_root(EDBUS_PIP_REQUIREMENT=wheel)
    dockerfile = custom.text("build", "openedx", "Dockerfile")
    assert f"$PIP_COMMAND install '{wheel}'" in dockerfile
    # after edx-platform's requirements, so openedx-events and Django are the platform's
    assert dockerfile.index(wheel) > dockerfile.index("requirements/edx/base.txt")


def test_local_compose_runs_one_consume_events_service_per_subscription_on_the_shared_store(
        embedded: TutorRoot) -> None:
    (compose,) = embedded.yaml("local", "docker-compose.yml")
    (prod,) = embedded.yaml("local", "docker-compose.prod.yml")
    services = compose["services"]
    catalog, search = services["edbus-consumer-discovery-catalog"], services["edbus-consumer-search-index"]
    assert catalog["command"] == ["./manage.py", "lms", "consume_events", "-t", "course-catalog-info-changed",
                                  "-g", "discovery_catalog", "--extra", '{"mode":"key_ordered"}']
    assert search["command"] == ["./manage.py", "cms", "consume_events", "-t", "course-authoring-xblock-lifecycle",
                                 "-g", "search-index", "--extra", '{"mode":"shared","concurrency":4}']
    assert catalog["deploy"]["replicas"] == 2 and search["deploy"]["replicas"] == 1
    for consumer, service in ((catalog, "lms"), (search, "cms")):
        assert consumer["image"] == services[service]["image"]
        assert consumer["environment"] == {"SERVICE_VARIANT": service,
                                           "DJANGO_SETTINGS_MODULE": f"{service}.envs.tutor.production"}
        assert consumer["restart"] == "unless-stopped" and consumer["stop_grace_period"] == "60s"
        assert consumer["depends_on"] == [service]
        assert "healthcheck" not in consumer
        # what the service's celery worker mounts: Tutor's settings, its data, media, and the one host
        # folder every Open edX container mounts, where the embedded store is
        assert consumer["volumes"] == prod["services"][f"{service}-worker"]["volumes"]
        assert STORE_MOUNT in consumer["volumes"]
    assert "edbus-pulsar" not in services
    for worker in ("lms-worker", "cms-worker"):
        assert STORE_MOUNT in prod["services"][worker]["volumes"]
    (jobs,) = embedded.yaml("local", "docker-compose.jobs.yml")
    assert STORE_MOUNT in jobs["services"]["lms-job"]["volumes"]


def test_k8s_has_a_consumer_deployment_per_subscription_and_the_store_volume_in_every_openedx_pod(
        embedded: TutorRoot) -> None:
    deployments = by_kind(embedded.yaml("k8s", "deployments.yml"), "Deployment")
    catalog, search = deployments["edbus-consumer-discovery-catalog"], deployments["edbus-consumer-search-index"]
    assert catalog["spec"]["replicas"] == 2 and search["spec"]["replicas"] == 1
    pod = catalog["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:7] == ["./manage.py", "lms", "consume_events", "-t", "course-catalog-info-changed",
                                     "-g", "discovery_catalog"]
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "SERVICE_VARIANT": "lms", "DJANGO_SETTINGS_MODULE": "lms.envs.tutor.production"}
    labels = catalog["spec"]["template"]["metadata"]["labels"]
    assert catalog["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pod["terminationGracePeriodSeconds"] == 60 and pod["securityContext"]["fsGroup"] == 1000
    assert "livenessProbe" not in container and "readinessProbe" not in container
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["edbus-store"] == "/openedx/media-private/edbus"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["edbus-store"]["persistentVolumeClaim"] == {"claimName": "edbus-store"}
    assert {"settings-lms", "settings-cms", "config"} <= set(volumes)
    claims = by_kind(embedded.yaml("k8s", "volumes.yml"), "PersistentVolumeClaim")
    assert claims["edbus-store"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    overrides = embedded.yaml("k8s", "override.yml")
    assert sorted((o["kind"], o["metadata"]["name"]) for o in overrides) == sorted(
        [("Deployment", n) for n in ("lms", "cms", "lms-worker", "cms-worker")]
        + [("Job", "lms-job"), ("Job", "cms-job")])
    assert "- path: k8s/override.yml" in embedded.text("kustomization.yml")
    all_deployments = by_kind(embedded.yaml("k8s", "deployments.yml"), "Deployment")
    jobs = by_kind(embedded.yaml("k8s", "jobs.yml"), "Job")
    for override in overrides:
        target = (all_deployments if override["kind"] == "Deployment" else jobs)[override["metadata"]["name"]]
        names = {c["name"] for c in target["spec"]["template"]["spec"]["containers"]}
        (patched,) = override["spec"]["template"]["spec"]["containers"]
        assert patched["name"] in names  # a strategic merge by container name: it must name the real one
        assert patched["volumeMounts"] == [{"mountPath": "/openedx/media-private/edbus", "name": "edbus-store"}]


def test_the_pulsar_backend_runs_a_broker_with_a_volume_locally_and_no_store_volume(pulsar: TutorRoot) -> None:
    (compose,) = pulsar.yaml("local", "docker-compose.yml")
    services = compose["services"]
    broker = services["edbus-pulsar"]
    assert broker["image"] == "apachepulsar/pulsar:4.2.4"
    assert broker["volumes"] == ["../../data/edbus-pulsar:/pulsar/data:z"]
    assert broker["environment"]["PULSAR_PREFIX_brokerDeduplicationEnabled"] == "true"
    assert broker["environment"]["PULSAR_PREFIX_allowAutoSubscriptionCreation"] == "false"
    assert broker["restart"] == "unless-stopped"
    assert "../../data/edbus-pulsar:/mounts/edbus-pulsar:z" in services["permissions"]["volumes"]
    assert "setowner 10000 /mounts/edbus-pulsar" in pulsar.text("apps", "permissions", "setowners.sh")
    for service in ("lms", "cms", "edbus-consumer-discovery-catalog"):
        assert "edbus-pulsar" in services[service]["depends_on"]
    settings = pulsar.text("apps", "openedx", "settings", "lms", "production.py")
    assert ("EDBUS_URL = 'pulsar://edbus-pulsar:6650?admin=http://edbus-pulsar:8080&tenant=public&namespace=openedx'"
            in settings)
    assert "edbus-store" not in pulsar.text("k8s", "volumes.yml") + pulsar.text("k8s", "deployments.yml")
    assert not pulsar.yaml("k8s", "override.yml")


def test_health_probes_are_rendered_only_when_a_health_port_is_configured(
        new_root: Callable[..., TutorRoot]) -> None:
    root = new_root(EDBUS_CONSUMERS=CONSUMERS[:1], EDBUS_CONSUMER_HEALTH_PORT=8099)
    (compose,) = root.yaml("local", "docker-compose.yml")
    consumer = compose["services"]["edbus-consumer-discovery-catalog"]
    assert "http://127.0.0.1:8099/healthz" in consumer["healthcheck"]["test"][-1]
    assert json.loads(consumer["command"][-1]) == {"mode": "key_ordered", "health_port": 8099}
    (container,) = by_kind(root.yaml("k8s", "deployments.yml"), "Deployment")[
        "edbus-consumer-discovery-catalog"]["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["ports"] == [{"containerPort": 8099, "name": "health"}]


BAD_VALUES = [
    ({"EDBUS_BACKEND": "kafka"}, "EDBUS_BACKEND 'kafka': use embedded (one host) or pulsar"),
    ({"EDBUS_CONSUMERS": [{"topic": "t"}]}, "EDBUS_CONSUMERS[0]: group None"),
    ({"EDBUS_CONSUMERS": [{"topic": "t", "group": "g.x"}]}, "EDBUS_CONSUMERS[0]: group 'g.x'"),
    ({"EDBUS_CONSUMERS": [{"topic": "t", "group": "g", "mode": "ordered"}]},
     "EDBUS_CONSUMERS[0]: mode 'ordered': use key_ordered, shared, exclusive"),
    ({"EDBUS_CONSUMERS": [{"topic": "t", "group": "g", "replica": 2}]}, "EDBUS_CONSUMERS[0]: unknown key(s) replica"),
    ({"EDBUS_CONSUMERS": [{"topic": "t", "group": "g", "replicas": 0}]}, "replicas must be a whole number >= 1"),
    ({"EDBUS_CONSUMERS": [{"topic": "t", "group": "g"}, {"topic": "t", "group": "g", "service": "cms"}]},
     "one entry per subscription"),
    ({"EDBUS_CONSUMERS": "t:g"}, "EDBUS_CONSUMERS must be a list of mappings"),
    ({"EDBUS_URL": "sqlite:///edbus.db"}, "the embedded backend takes sqlite:////absolute/path.db"),
    ({"EDBUS_URL": "sqlite:////srv/edbus.db"}, "must be under /openedx/media-private/"),
    ({"EDBUS_BACKEND": "pulsar", "EDBUS_URL": "http://pulsar:8080"}, "the pulsar backend takes pulsar://"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[m[:40] for _, m in BAD_VALUES])
def test_a_bad_value_stops_config_save_with_one_line_naming_it(blank_root: Callable[[], TutorRoot],
                                                               values: dict[str, Any], message: str) -> None:
    root = blank_root()
    sets = [arg for key, value in values.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    done = root.run("config", "save", *sets)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: edbus plugin: ") and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_launch_builds_the_openedx_image_that_holds_edbus(embedded: TutorRoot) -> None:
    build = embedded.hooks()["build_required"]
    assert build["local"] == ["openedx"] and "openedx" not in build["dev"]
