"""The Pulsar backend (``pulsar://host:6650``): see docs/pulsar.md."""

from edbus.backends.pulsar.backend import PulsarBackend

__all__ = ["PulsarBackend"]
