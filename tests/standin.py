"""A stand-in HTTP server on 127.0.0.1 for provider APIs (Twilio, Telegram, Stripe): the real SDKs talk to it.

Tests queue responses per (method, path prefix) and read back every request the SDK made.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode())

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Scripted:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class StandIn:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._responses: dict[tuple[str, str], deque[Scripted]] = {}
        self._defaults: dict[tuple[str, str], Scripted] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def respond(
        self, method: str, path_prefix: str, status: int, body: Any, *, once: bool = True, **headers: str
    ) -> None:
        """Queue a response for requests whose path starts with `path_prefix` (once, or as the default)."""
        scripted = Scripted(status, body, headers)
        with self._lock:
            if once:
                self._responses.setdefault((method, path_prefix), deque()).append(scripted)
            else:
                self._defaults[(method, path_prefix)] = scripted

    def _next(self, method: str, path: str) -> Scripted:
        with self._lock:
            for (m, prefix), queue in self._responses.items():
                if m == method and path.startswith(prefix) and queue:
                    return queue.popleft()
            for (m, prefix), scripted in self._defaults.items():
                if m == method and path.startswith(prefix):
                    return scripted
        return Scripted(404, {"error": f"no scripted response for {method} {path}"})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                with standin._lock:
                    standin.requests.append(
                        Recorded(self.command, parts.path, parse_qs(parts.query), dict(self.headers), body)
                    )
                scripted = standin._next(self.command, parts.path)
                payload = scripted.body if isinstance(scripted.body, bytes) else json.dumps(scripted.body).encode()
                self.send_response(scripted.status)
                self.send_header("Content-Type", scripted.headers.pop("Content-Type", "application/json"))
                for name, value in scripted.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *_args: object) -> None:
                pass

        return Handler
