"""Run by the tutor virtualenv's python: print, as JSON, the (service, script) init tasks of the edbus
plugin for the TUTOR_ROOT given, rendered as ``tutor local do init`` renders them (tutor.tasks)."""

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
json.dump(tasks, sys.stdout)
