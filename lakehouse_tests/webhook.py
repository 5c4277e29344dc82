"""A webhook receiver on 127.0.0.1 for the alert tests: a real HTTP server in a thread."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hook:
    """A webhook on 127.0.0.1 that records every JSON body; answers 500 `fail_first` times."""

    def __init__(self, port: int, fail_first: int = 0) -> None:
        self.bodies: list[dict] = []
        self.received: list[datetime] = []
        """When each body arrived (UTC, naive: as the lake's timestamps)."""
        self.calls = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.calls += 1
                if hook.calls <= fail_first:
                    self.send_response(500)
                else:
                    hook.bodies.append(body)
                    hook.received.append(datetime.now(UTC).replace(tzinfo=None))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @contextmanager
    def running(self) -> Iterator[Hook]:
        self.thread.start()
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop answering (the port then refuses connections); safe to call twice."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
