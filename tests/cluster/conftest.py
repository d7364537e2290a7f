"""The cluster tests run on the cluster of ``scripts/pulsar-cluster.sh``, named by ``$EDBUS_CLUSTER_DATA``:
``scripts/pulsar-cluster.sh test`` (``make test-cluster``) starts one, sets it and runs them after the
contract suite. Without it (``make unit``, the single-broker run) this folder is not collected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.cluster import PulsarCluster

collect_ignore_glob = [] if os.environ.get("EDBUS_CLUSTER_DATA") else ["test_*.py"]


@pytest.fixture(scope="session")
def cluster() -> PulsarCluster:
    """The serving cluster of ``$EDBUS_CLUSTER_DATA`` (a failure, not a skip, when it does not serve)."""
    c = PulsarCluster(Path(os.environ["EDBUS_CLUSTER_DATA"]), own=False)
    done = c.script("status", check=False)
    if done.returncode != 0:
        pytest.fail(f"the cluster in {c.data} does not serve: {done.stdout}{done.stderr}")
    return c
