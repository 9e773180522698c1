"""A local stand-in for NuvIoT's ``GET /api/deployment/instance/full`` (reference/nuviot-runtime.md §1.5).

Serves one solution document on loopback from a thread, so both the real daemon and a container can
fetch it. Every request is kept as ``"<path> <Authorization header>"``.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def serve_instance(body: bytes, content_type: str,
                   access_key: str | None = None) -> Iterator[tuple[str, list[str]]]:
    """Yields (base URL, requests seen). With ``access_key``, any other bearer token gets 401."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"{self.path} {self.headers.get('Authorization')}")
            if access_key is not None and self.headers.get("Authorization") != f"Bearer {access_key}":
                self.send_error(401)
                return
            if not self.path.startswith("/api/deployment/instance/full"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
