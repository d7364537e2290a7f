"""The tutor hooks of tutor-contrib-edbus (entry point ``tutor.plugin.v1``: ``edbus``).

Patches are the files of ``patches/``, one per patch name; the init task is ``templates/edbus/tasks/init``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from tutor.exceptions import TutorError
from tutor.hooks.catalog import Actions, Filters

from tutoredbus import config

_PACKAGE = resources.files("tutoredbus")

Filters.CONFIG_DEFAULTS.add_items([(f"EDBUS_{name}", value) for name, value in config.DEFAULTS.items()])

for patch in sorted(_PACKAGE.joinpath("patches").iterdir(), key=lambda p: p.name):
    if patch.is_file() and not patch.name.startswith("."):
        Filters.ENV_PATCHES.add_item((patch.name, patch.read_text(encoding="utf-8")))

# Prepares the store in an lms job: the Pulsar namespace's policies, or the embedded store's file, and the
# configured subscriptions (so no event published before a consumer first starts is missed).
Filters.CLI_DO_INIT_TASKS.add_item(
    ("lms", _PACKAGE.joinpath("templates", "edbus", "tasks", "init").read_text(encoding="utf-8")))


def _py(value: Any) -> str:
    """A Python literal for the settings patch (repr of str, int, float, bool, None)."""
    return repr(value)


def _json(value: Any) -> str:
    """A JSON value: also a YAML flow value, for the compose and k8s patches."""
    return json.dumps(value)


Filters.ENV_TEMPLATE_FILTERS.add_items([("edbus_py", _py), ("edbus_json", _json)])
Filters.ENV_TEMPLATE_VARIABLES.add_items([("edbus_consumers", config.consumers),
                                                ("edbus_store_dir", config.store_dir)])


@Filters.IMAGES_BUILD_REQUIRED.add()
def _build_openedx(images: list[str], context: str) -> list[str]:
    """``tutor local launch`` builds the openedx image: the stock one has no edbus (the Dockerfile patch).
    (``tutor dev launch`` builds openedx-dev, from the same Dockerfile, by itself.)"""
    return [*images, "openedx"] if context == "local" and "openedx" not in images else images


@Actions.CONFIG_LOADED.add()
def _check_config(loaded: dict[str, Any]) -> None:
    """A bad value stops ``tutor config save`` (and every later command) with one line naming it."""
    try:
        config.check(loaded)
    except config.EdbusConfigError as exc:
        raise TutorError(f"edbus plugin: {exc}") from None
