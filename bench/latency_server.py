"""An HTTP server on 127.0.0.1 that answers every GET after ``?ms=`` milliseconds.

Run as ``python -m bench.latency_server PORT``; prints ``ready`` once listening.
"""

from __future__ import annotations

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class DelayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)
        time.sleep(int(query.get("ms", ["0"])[0]) / 1000)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


class DelayServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main() -> None:
    server = DelayServer(("127.0.0.1", int(sys.argv[1])), DelayHandler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
