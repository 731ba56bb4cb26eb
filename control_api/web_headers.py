"""Security headers on every response of the node (API, web client, static files, WebSocket
handshakes), set once in ``on_response_prepare``.

The web client keeps its tokens in ``localStorage``, which any script running on the origin can
read; that is acceptable only because no script but the origin's own files can run: the policy
allows scripts and styles from 'self' alone (no inline code, no ``eval``, no style attributes),
no plugins, no ``<base>`` rewriting, and no framing (``frame-ancestors 'none'``, so no
clickjacking).  The Swagger page at ``/api/docs`` gets a looser style policy: Swagger UI writes
inline styles, and that page holds no tokens.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from control_api.config import ApiSettings

SERVER_NAME = "VideoConf"  # not aiohttp's "Python/3.x aiohttp/3.y": versions help only attackers
DOCS_PREFIX = "/api/docs"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def web_policy(settings: ApiSettings) -> str:
    """The Content-Security-Policy of the web client (and of everything else the node serves)."""
    signaling = " ".join([_origin(settings.effective_signaling_url), *settings.connect_sources])
    return "; ".join((
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        f"connect-src 'self' {signaling}",
        "worker-src 'self'",
        "manifest-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ))


DOCS_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
))


def security_headers(path: str, has_cache_control: bool, web_csp: str, https: bool) -> dict[str, str]:
    """The headers a response to ``path`` gets.  API answers are never stored by a cache (they
    carry tokens and personal data) unless the handler chose a policy itself."""
    docs = path.startswith(DOCS_PREFIX)
    headers = {
        "Server": SERVER_NAME,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # invite links carry meeting codes in their path
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": DOCS_POLICY if docs else web_csp,
    }
    if path.startswith("/api/") and not docs and not has_cache_control:
        headers["Cache-Control"] = "no-store"
    if https:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers


def install(app: web.Application, settings: ApiSettings) -> None:
    web_csp = web_policy(settings)
    https = settings.base_url.startswith("https://")

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        headers = security_headers(request.path, "Cache-Control" in response.headers, web_csp, https)
        response.headers.update(headers)

    app.on_response_prepare.append(add_headers)
