"""What stands between the network and the admin pages: the access token, the Host
check, CSRF tokens and the security headers every response carries.

``Guard`` is plain ASGI middleware, so it works the same under any Starlette version.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = [
    "CSRF_COOKIE",
    "LOOPBACK_HOSTS",
    "TOKEN_COOKIE",
    "Csrf",
    "Guard",
    "is_loopback",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_COOKIE = "sessionmeta_token"
CSRF_COOKIE = "sessionmeta_csrf"
# The names a browser on this machine uses for a server bound to the loopback interface.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

# No script runs on these pages (there is none), styles come from our own stylesheet,
# forms post only back here, and no other site may frame them.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # A first visit's ?token=... must not leak to other sites through the Referer.
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` serves this machine only."""
    import ipaddress

    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _cookies(scope: Scope) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed cookie header is no cookie
                continue
    return {name: morsel.value for name, morsel in jar.items()}


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


async def _plain(
    send: Send, status: int, text: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Refuses requests for another Host (DNS rebinding) and, with a token, requests
    without it (401); hands every page a CSRF cookie; adds the security headers.

    The token is accepted as ``Authorization: Bearer TOKEN``, as the cookie a first
    visit to ``/?token=TOKEN`` sets (then redirected to the same page without it), or
    as that query parameter on any request.
    """

    def __init__(
        self, app: ASGIApp, *, token: str | None, allowed_hosts: Iterable[str] | None
    ) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)
        # The cookie holds a digest of the token (any text fits a cookie as hex).
        self._token_cookie = (
            "" if token is None else hashlib.sha256(f"sessionmeta:{token}".encode()).hexdigest()
        )

    def _host_allowed(self, scope: Scope) -> bool:
        if self.allowed_hosts is None:
            return True
        host = _header(scope, b"host") or ""
        # "127.0.0.1:8765" and "[::1]:8765" without their port.
        name = host[: host.find("]") + 1] if host.startswith("[") else host.rsplit(":", 1)[0]
        return name in self.allowed_hosts

    def _authorized(self, scope: Scope, query: list[tuple[str, str]]) -> bool:
        assert self.token is not None
        given: str | None = None
        authorization = _header(scope, b"authorization")
        if authorization is not None and authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        for name, value in query:
            if name == "token":
                given = value
        if given is not None:
            return hmac.compare_digest(given.encode(), self.token.encode())
        cookie = _cookies(scope).get(TOKEN_COOKIE)
        return cookie is not None and hmac.compare_digest(cookie, self._token_cookie)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._host_allowed(scope):
            await _plain(send, 400, "this server answers only for its own address (Host refused)\n")
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if self.token is not None:
            if not self._authorized(scope, query):
                await _plain(
                    send,
                    401,
                    "a token is required: open /?token=TOKEN once, or send "
                    "Authorization: Bearer TOKEN\n",
                    [(b"www-authenticate", b'Bearer realm="sessionmeta"')],
                )
                return
            if any(name == "token" for name, _ in query) and scope["method"] in ("GET", "HEAD"):
                # Keep the token in an HttpOnly cookie, out of the address bar and history.
                kept = urlencode([(name, value) for name, value in query if name != "token"])
                location = scope.get("root_path", "") + scope["path"] + (f"?{kept}" if kept else "")
                cookie = f"{TOKEN_COOKIE}={self._token_cookie}; Path=/; HttpOnly; SameSite=Strict"
                await _plain(
                    send,
                    303,
                    "see other\n",
                    [(b"location", location.encode()), (b"set-cookie", cookie.encode())],
                )
                return
        sent_cookie = _cookies(scope).get(CSRF_COOKIE) or None
        new_cookie = None if sent_cookie else secrets.token_urlsafe(24)
        state = scope.setdefault("state", {})
        # Forms are made for the cookie the browser will hold; a POST is checked against
        # the one it sent (a cookie made now proves nothing).
        state["csrf_cookie"] = sent_cookie or new_cookie
        state["csrf_sent_cookie"] = sent_cookie

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if new_cookie is not None:
                    cookie = f"{CSRF_COOKIE}={new_cookie}; Path=/; HttpOnly; SameSite=Strict"
                    headers.append((b"set-cookie", cookie.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Csrf:
    """CSRF tokens bound to the browser's cookie: a form's token is a MAC of the cookie
    under a key of this process, so a page of another site can neither read nor make one."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def token_for(self, cookie: str) -> str:
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def valid(self, cookie: str | None, token: str | None) -> bool:
        """Whether ``token`` (from the form) was made for ``cookie`` (sent by the browser)."""
        if not cookie or not token:
            return False
        return hmac.compare_digest(self.token_for(cookie), token)
