"""The dashboard's web application: pages, the admin session and the changes, each confirmed and logged.

Read-only unless started with an admin token. A change needs a session (the token entered once, kept in an
HttpOnly SameSite=Strict cookie naming who asked), a form's CSRF token derived from it, and a POST from the
confirmation page. Bad input anywhere is a 4xx error page that changes nothing; an internal fault is logged
and shown as a 500 page without its traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from edbus.backends.base import StartAt
from edbus.bus.bus import Bus
from edbus.cli.output import human_age, human_bytes
from edbus.dashboard.auth import COOKIE, Admin
from edbus.dashboard.chart import backlog_svg
from edbus.dashboard.store import DashboardStore
from edbus.errors import ConfigError, EdbusError, NotFoundError, ValidationError

__all__ = ["DashboardSettings", "create_app"]

log = logging.getLogger("edbus.dashboard")
audit = logging.getLogger("edbus.dashboard.audit")
HERE = Path(__file__).parent
ACTIONS = {"redrive", "purge", "republish", "replay"}
MASK = "•••"


@dataclasses.dataclass(frozen=True, slots=True)
class DashboardSettings:
    url: str | None = None
    admin_token: str | None = None
    sample_every: float = 10.0


class BadInput(Exception):
    """A request the dashboard refuses: its status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def masked(value: Any) -> Any:
    """The data's shape with every value hidden: keys and list lengths stay, contents do not."""
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return None if value is None else MASK


def create_app(settings: DashboardSettings, bus: Bus | None = None) -> Starlette:
    """The ASGI app (``bus``: an open bus to use, else one opened on ``settings.url``; it is closed on shutdown)."""
    admin = Admin(settings.admin_token) if settings.admin_token else None
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["age"] = human_age
    templates.env.filters["size"] = human_bytes
    templates.env.filters["q"] = lambda s: quote(str(s), safe="")
    templates.env.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, sort_keys=True)
    holder: dict[str, DashboardStore] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = DashboardStore(bus or Bus.from_url(settings.url, create=False), sample_every=settings.sample_every)
        store.start()
        holder["store"] = store
        try:
            yield
        finally:
            store.stop()
            store.bus.close()

    def who(request: Request) -> str | None:
        return admin.who(request.cookies.get(COOKIE)) if admin else None

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        operator = who(request)
        cookie = request.cookies.get(COOKIE, "")
        context.update(admin_enabled=admin is not None, operator=operator,
                       csrf=admin.csrf(cookie) if admin and operator else "")
        return templates.TemplateResponse(request, name, context, status_code=status)

    def page(fn: Callable[[Request, DashboardStore], Response]) -> Callable[[Request], Response]:
        """Runs a (sync, threadpool) handler; edbus errors and refusals become error pages."""
        def endpoint(request: Request) -> Response:
            try:
                return fn(request, holder["store"])
            except BadInput as exc:
                return error(request, exc.status, exc.message)
            except NotFoundError as exc:
                return error(request, 404, str(exc))
            except (ConfigError, ValidationError) as exc:
                return error(request, 400, str(exc))
            except EdbusError as exc:
                log.exception("dashboard: %s %s failed", request.method, request.url.path)
                return error(request, 503, f"the store refused: {exc}")
        return endpoint

    def error(request: Request, status: int, message: str) -> Response:
        return render(request, "error.html", status=status, status_code=status, message=message)

    def param(request: Request, name: str) -> str:
        return str(request.path_params[name])

    # -- pages ---------------------------------------------------------------------------------------
    def overview(request: Request, store: DashboardStore) -> Response:
        topics = store.topics()
        subs = store.subscriptions()
        name = "_figures.html" if request.headers.get("HX-Request") else "overview.html"
        return render(request, name, topics=topics, subs=subs, rate=store.rate)

    def subscription(request: Request, store: DashboardStore) -> Response:
        topic, sub = param(request, "topic"), param(request, "subscription")
        stats = store.subscription(topic, sub)
        return render(request, "subscription.html", s=stats, dead=store.dead_letters(topic, sub),
                      chart=backlog_svg(store.backlog_samples(topic, sub)), every=store.sample_every)

    def dead_letter(request: Request, store: DashboardStore) -> Response:
        topic, sub, event_id = param(request, "topic"), param(request, "subscription"), param(request, "event_id")
        found = store.dead_letter(topic, sub, event_id)
        reveal = request.query_params.get("reveal") == "1"
        operator = who(request)
        if reveal and operator is None:
            raise BadInput(403, "showing a payload unmasked needs the admin session (log in with the token)")
        if reveal:
            audit.info("%s (%s) revealed the payload of dead letter %s of %s on %s", operator, _client(request),
                       event_id, sub, topic)
        data = found.event.get("data")
        return render(request, "dead_letter.html", topic=topic, sub=sub, d=found, reveal=reveal,
                      data=data if reveal else masked(data))

    def schemas(request: Request, store: DashboardStore) -> Response:
        types, rules = store.schemas()
        return render(request, "schemas.html", types=types, rules=rules)

    # -- changes -------------------------------------------------------------------------------------
    def _action_input(values: dict[str, str]) -> tuple[str, str, str, str | None, StartAt | None]:
        action = values.get("action", "")
        if action not in ACTIONS:
            raise BadInput(400, f"unknown action {action[:40]!r}: redrive, purge, republish or replay")
        topic, sub = values.get("topic", ""), values.get("subscription", "")
        if not topic or not sub:
            raise BadInput(400, "say which topic and subscription")
        event_id = values.get("id") or None
        if action == "republish" and event_id is None:
            raise BadInput(400, "republish takes one dead letter: give its id")
        to = None
        if action == "replay":
            to = StartAt.parse(values.get("to", ""))  # ConfigError: a 400 page
        return action, topic, sub, event_id, to

    def _require_admin(request: Request) -> str:
        if admin is None:
            raise BadInput(403, "this dashboard is read-only: start it with --admin-token-file to make changes")
        operator = who(request)
        if operator is None:
            raise BadInput(403, "changes need the admin session: log in with the admin token first")
        return operator

    def confirm(request: Request, store: DashboardStore) -> Response:
        _require_admin(request)
        values = dict(request.query_params)
        action, topic, sub, event_id, _ = _action_input(values)
        s = store.subscription(topic, sub)
        if event_id is not None:
            store.dead_letter(topic, sub, event_id)
        count = 1 if event_id else len(store.dead_letters(topic, sub))
        return render(request, "confirm.html", action=action, topic=topic, sub=sub, event_id=event_id,
                      to=values.get("to", ""), count=count, s=s)

    async def act(request: Request) -> Response:
        form = await request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(page(lambda r, store: _act(r, store, values)), request)

    def _act(request: Request, store: DashboardStore, values: dict[str, str]) -> Response:
        operator = _require_admin(request)
        assert admin is not None
        if not admin.csrf_matches(request.cookies.get(COOKIE, ""), values.get("csrf", "")):
            raise BadInput(403, "the form's CSRF token does not match this session: reload the page and retry")
        action, topic, sub, event_id, to = _action_input(values)
        if values.get("confirm") != "yes":
            raise BadInput(400, "not confirmed: use the confirmation page")
        what = f"{action} {'dead letter ' + event_id if event_id else 'all dead letters'} of {sub} on {topic}"
        if action == "redrive":
            result = f"redrove {store.redrive(topic, sub, event_id)} dead letter(s)"
        elif action == "purge":
            result = f"purged {store.purge(topic, sub, event_id)} dead letter(s)"
        elif action == "republish":
            assert event_id is not None
            result = f"republished dead letter {event_id} to {topic} as event {store.republish(topic, sub, event_id)}"
        else:
            assert to is not None
            before, after = store.replay(topic, sub, to)
            what = f"replay {sub} on {topic} to {values.get('to', '')}"
            result = f"moved {sub} to {values.get('to', '')}: backlog {before} -> {after}"
        audit.info("%s (%s) asked: %s: %s", operator, _client(request), what, result)
        store.sample()
        return render(request, "done.html", result=result, topic=topic, sub=sub)

    # -- session -------------------------------------------------------------------------------------
    def login_form(request: Request, store: DashboardStore) -> Response:
        if admin is None:
            raise BadInput(403, "this dashboard is read-only: there is no admin session to open")
        return render(request, "login.html")

    async def login(request: Request) -> Response:
        form = await request.form()
        token, name = str(form.get("token", "")), str(form.get("name", "")).strip()
        if admin is None:
            return error(request, 403, "this dashboard is read-only: there is no admin session to open")
        if not name or len(name) > 80 or not name.isprintable():
            return error(request, 400, "give your name (up to 80 characters): every change is logged with it")
        if not admin.token_matches(token):
            audit.warning("refused admin login as %r from %s: wrong token", name, _client(request))
            return error(request, 403, "wrong admin token")
        audit.info("%s (%s) opened an admin session", name, _client(request))
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, admin.session(name), httponly=True, samesite="strict", path="/")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = "no such page" if status == 404 else (exc.detail if isinstance(exc, HTTPException) else "")
        return error(request, status, str(message))

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("dashboard: %s %s failed", request.method, request.url.path, exc_info=exc)
        return error(request, 500, "internal error (logged by the dashboard); nothing was changed by this page")

    sub_path = "/subscriptions/{topic}/{subscription}"
    routes = [
        Route("/", page(overview)),
        Route(sub_path, page(subscription)),
        Route(sub_path + "/dead-letters/{event_id:path}", page(dead_letter)),
        Route("/schemas", page(schemas)),
        Route("/confirm", page(confirm)),
        Route("/actions", act, methods=["POST"]),
        Route("/login", page(login_form)),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: not_found, Exception: internal})


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


