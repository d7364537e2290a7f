"""The app is an Open edX plugin: edx-platform's plugin machinery (edx-django-utils) finds it through the
``lms.djangoapp`` / ``cms.djangoapp`` entry points and applies its ``plugin_settings``."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest
from edx_django_utils.plugins import add_plugins, get_plugin_apps

from edbus.contrib.django.settings.common import DEFAULTS


@pytest.fixture
def settings_module() -> Iterator[types.ModuleType]:
    module = types.ModuleType("edbus_test_lms_settings")
    module.EDBUS_CONSUMER_CONCURRENCY = 8  # type: ignore[attr-defined]  # the service's own value
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


@pytest.mark.parametrize("project", ["lms.djangoapp", "cms.djangoapp"])
def test_lms_and_studio_find_the_app_and_apply_its_settings_without_overriding_theirs(
        project: str, settings_module: types.ModuleType) -> None:
    assert "edbus.contrib.django.apps.EdbusConfig" in get_plugin_apps(project)
    for settings_type in ("common", "production"):
        add_plugins(settings_module.__name__, project, settings_type)
    assert settings_module.EDBUS_CONSUMER_CONCURRENCY == 8
    assert settings_module.EDBUS_CONSUMER_MAX_ATTEMPTS == 5
    assert all(hasattr(settings_module, name) for name in DEFAULTS)


def test_every_setting_is_documented_with_an_annotation() -> None:
    import inspect

    from edbus.contrib.django.settings import common

    source = inspect.getsource(common)
    for name in DEFAULTS:
        assert name.startswith("EDBUS_")
        assert f"# .. setting_name: {name}\n" in source
