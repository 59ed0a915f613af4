"""The life cycle the fake servers share: a threaded HTTP server on 127.0.0.1 (port 0 = a free one), started
and stopped by hand or as a context manager, its handler reaching the fake through ``server.fake``."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class LocalServer:
    handler: type = None  # the BaseHTTPRequestHandler subclass; set by each fake
    name = "fake-server"
    _port = 0
    _httpd: ThreadingHTTPServer | None = None

    def start(self):
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), self.handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name=self.name,
                         daemon=True).start()
        return self

    def stop(self):
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]
