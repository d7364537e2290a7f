"""Admin sessions: the token entered once, kept as a signed cookie naming who asked; CSRF tokens for forms."""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["COOKIE", "Admin"]

COOKIE = "edbus_admin"


class Admin:
    """Signs and checks the session cookie and the forms' CSRF tokens with a key derived from the admin token.

    The cookie holds the operator's name and an HMAC of it: nothing secret, and a new token (restart with
    another file) voids every session."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._key = hashlib.sha256(b"edbus-dashboard-session\0" + self._token).digest()

    def token_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.strip().encode(), self._token)

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()

    def session(self, who: str) -> str:
        name = base64.urlsafe_b64encode(who.encode()).decode().rstrip("=")
        return f"{name}.{self._sign('session', who)}"

    def who(self, cookie: str | None) -> str | None:
        """The operator named by a valid session cookie, else None."""
        if not cookie or "." not in cookie:
            return None
        name, _, signature = cookie.rpartition(".")
        try:
            who = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return who if hmac.compare_digest(signature, self._sign("session", who)) else None

    def csrf(self, cookie: str) -> str:
        return self._sign("csrf", cookie)

    def csrf_matches(self, cookie: str, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf(cookie).encode())
