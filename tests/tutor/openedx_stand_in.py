"""A stand-in for edx-platform around the settings Tutor renders, to start Django on them here.

edx-platform is not installable here (its image is what ``tutor images build`` makes), so Tutor's
``production.py`` (``from lms.envs.production import *`` first) cannot be imported as a whole. What is
run instead is real: a minimal base settings module (the edbus app, a database, and producer
configuration entries like edx-platform's), then, executed as they are
rendered and in their rendered order, the lines of the rendered ``production.py`` from Tutor's own
event-bus block (``# edx-event-bus-redis settings``) to the end of the plugin's block (``# END edbus``);
and a ``manage.py`` that, like edx-platform's, takes the service (``lms``/``cms``) as its first argument.
What this cannot show: that no later line of edx-platform's own settings changes ``EVENT_BUS_*`` again
(Tutor's settings are imported after edx-platform's, and the plugin's block comes after Tutor's).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TUTOR_BLOCK_START = "# edx-event-bus-redis settings"
PLUGIN_BLOCK_END = "# END edbus"

_BASE = '''"""Minimal base settings standing in for edx-platform's (see tests/tutor/openedx_stand_in.py)."""
SECRET_KEY = "edbus-tutor-tests-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "edbus.contrib.django"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r}}}}}
# entries like those of edx-platform's EVENT_BUS_PRODUCER_CONFIG (lms/envs/common.py), enabled
EVENT_BUS_PRODUCER_CONFIG = {{
    "org.openedx.learning.certificate.created.v1": {{
        "learning-certificate-lifecycle": {{"event_key_field": "certificate.course.course_key", "enabled": True}},
    }},
    "org.openedx.learning.course.unenrollment.completed.v1": {{
        "course-unenrollment-lifecycle": {{"event_key_field": "enrollment.course.course_key", "enabled": True}},
    }},
    "org.openedx.content_authoring.xblock.published.v1": {{
        "course-authoring-xblock-lifecycle": {{"event_key_field": "xblock_info.usage_key", "enabled": True}},
    }},
}}
'''

_MANAGE = '''#!{python}
"""Like edx-platform's manage.py: ./manage.py lms|cms COMMAND ..., with that service's settings."""
import os
import sys

from django.core.management import execute_from_command_line

service = sys.argv.pop(1)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", f"{{service}}_tutor_settings")
execute_from_command_line(sys.argv)
'''


def event_bus_block(production_py: str) -> str:
    """The rendered lines from Tutor's event-bus settings to the end of the plugin's block."""
    lines = production_py.splitlines()
    start = lines.index(TUTOR_BLOCK_START)
    end = lines.index(PLUGIN_BLOCK_END)
    assert start < end, "the plugin's block must come after Tutor's event-bus settings"
    return "\n".join(lines[start:end + 1]) + "\n"


def write(folder: Path, settings: dict[str, str]) -> Path:
    """``folder`` gets base_settings.py, ``<service>_tutor_settings.py`` (base + the rendered block) for
    each service of ``settings`` (service -> the event-bus block to use), and manage.py."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base_settings.py").write_text(_BASE.format(db=str(folder / "service.db")))
    for service, block in settings.items():
        (folder / f"{service}_tutor_settings.py").write_text("from base_settings import *  # noqa: F403\n\n" + block)
    manage = folder / "manage.py"
    manage.write_text(_MANAGE.format(python=sys.executable))
    manage.chmod(0o755)
    return folder


def run(folder: Path, command: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``command`` in ``folder`` (where manage.py is), with the project's python on PATH."""
    env = {**os.environ, "PYTHONPATH": str(folder), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
