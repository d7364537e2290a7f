"""Run by the tutor virtualenv's python: print, as JSON, what the edbus plugin adds to tutor's hooks for
the TUTOR_ROOT given: its init tasks, rendered as ``tutor local do init`` renders them (tutor.tasks),
and the images ``tutor local launch`` / ``tutor dev launch`` build first."""

import json
import sys

from tutor import config as tutor_config
from tutor import env as tutor_env
from tutor import hooks

hooks.Actions.CORE_READY.do()
root = sys.argv[1]
hooks.Actions.PROJECT_ROOT_READY.do(root)  # loads the plugins enabled in config.yml
config = tutor_config.load_full(root)
tasks = [(service, tutor_env.render_str(config, task).strip())
         for service, task in hooks.Filters.CLI_DO_INIT_TASKS.iterate() if "tutor-contrib-edbus" in task]
build = {context: hooks.Filters.IMAGES_BUILD_REQUIRED.apply([], context) for context in ("local", "dev")}
json.dump({"init_tasks": tasks, "build_required": build}, sys.stdout)
