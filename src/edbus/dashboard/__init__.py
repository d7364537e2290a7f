"""The operator dashboard: a web page served by edbus itself (Starlette, Jinja2, htmx; no build step)."""
