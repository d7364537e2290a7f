"""Entry point of the demo's processes: ``python -m edbus_services.catalog.worker ROLE NAME CONFIG_JSON``.

ROLE is ``studio``, ``replica``, ``audit``, or ``service=module:attribute`` for a process of another
``DemoService``. Each process builds its own Bus. The exit status is 0 when
the process finished its work (Studio) or was stopped gracefully (consumers).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from edbus_services.catalog.audit import run_audit
from edbus_services.catalog.replica import run_replica
from edbus_services.catalog.service import DemoConfig, ServiceProcess, load_service
from edbus_services.catalog.studio import run_studio

__all__ = ["ROLES", "SERVICE_ROLE", "main"]

SERVICE_ROLE = "service="

ROLES: dict[str, Callable[[ServiceProcess], int]] = {"studio": run_studio, "replica": run_replica,
                                                     "audit": run_audit}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or not (args[0] in ROLES or args[0].startswith(SERVICE_ROLE)):
        print(f"usage: python -m edbus_services.catalog.worker {{{','.join(ROLES)},{SERVICE_ROLE}module:attribute}} "
              "NAME CONFIG_JSON", file=sys.stderr)
        return 2
    role, name, config_json = args
    service = ServiceProcess(name, DemoConfig.from_json(config_json))
    try:
        if role.startswith(SERVICE_ROLE):
            load_service(role[len(SERVICE_ROLE):]).run(service)
        else:
            ROLES[role](service)
    except Exception:
        logging.getLogger("edbus.demo").exception("%s failed", name)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
