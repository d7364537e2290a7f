from edbus_services.xapi.cli import xapi_feed

xapi_feed()
