from edbus.apps.xapi.cli import xapi_feed

xapi_feed()
