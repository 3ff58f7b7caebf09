"""A loopback HTTP proxy in front of the S3 server that injects faults request by request.

Clients talk to the proxy's endpoint; it forwards each request unchanged (the Host header too, so
SigV4 signatures still verify) to the upstream server, unless a queued fault takes it:
  "5xx"   answer 503 SlowDown without forwarding (what S3 says under load)
  "slow"  wait `delay` seconds, then forward
  "drop"  read the request, then close the connection without a response
While `down` is set every request is answered by closing the connection, and so is any request
that was in flight when the server went down, as in a restart; `upstream_port` may then be
re-pointed to the restarted server. `down_on(text)` takes the server down at the first request whose
path contains `text` (an outage at a chosen point of a step). Every request's method and path is
kept in `requests` with whether it was conditional (If-None-Match), to see which keys a client
read and wrote and how; a DeleteObjects request adds one DELETE per key it names. It proxies any HTTP server: S3 or MLflow.
"""
from __future__ import annotations

import http.client
import re
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def _read_chunked(rfile) -> bytes:
    """The raw body of a chunked request, framing included (forwarded as it came)."""
    raw = bytearray()
    while True:
        line = rfile.readline()
        raw += line
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, then the empty line
                trailer = rfile.readline()
                raw += trailer
                if trailer in (b"\r\n", b"\n", b""):
                    return bytes(raw)
        raw += rfile.read(size + 2)


class FaultProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.faults: deque[tuple[str, float]] = deque()
        self._down = False
        self.epoch = 0  # bumped whenever the server goes down: in-flight responses are then lost
        self.seen: Counter = Counter()  # "forwarded", "5xx", "slow", "drop", "down", "lost"
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, bool]] = []
        self.down_trigger: str | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    return _read_chunked(self.rfile)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._body()
                kind, delay = proxy._next_fault(self.command, self.path, "If-None-Match" in self.headers)
                if self.command == "POST" and "delete" in self.path.split("?")[-1]:  # DeleteObjects: keys in the body
                    bucket = self.path.split("?")[0].rstrip("/")
                    with proxy.lock:
                        proxy.requests += [("DELETE", f"{bucket}/{k.decode()}", False)
                                           for k in re.findall(rb"<Key>(.*?)</Key>", body)]
                if kind == "down":
                    self.close_connection = True
                    self.connection.close()
                    return
                if kind == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if kind == "5xx":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                if kind == "slow":
                    time.sleep(delay)
                self._forward(body)

            def _forward(self, body: bytes):
                epoch = proxy.epoch
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                try:
                    upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        upstream.putheader(name, value)
                    upstream.endheaders(body or None)
                    response = upstream.getresponse()
                    data = response.read()
                except OSError:
                    # The upstream went away mid-request: the client sees a dropped connection.
                    self.close_connection = True
                    self.connection.close()
                    return
                finally:
                    upstream.close()
                if proxy.down or proxy.epoch != epoch:
                    # The server went down while this request was in flight: a restart loses the
                    # connection (SeaweedFS, stopping, would answer 403 InvalidAccessKeyId instead).
                    proxy.seen["lost"] += 1
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def down(self) -> bool:
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        with self.lock:
            if value and not self._down:
                self.epoch += 1
            self._down = value

    def inject(self, kind: str, count: int = 1, delay: float = 0.0) -> None:
        assert kind in ("5xx", "slow", "drop"), kind
        with self.lock:
            self.faults.extend([(kind, delay)] * count)

    def down_on(self, text: str) -> None:
        self.down_trigger = text

    def _next_fault(self, method: str, path: str, conditional: bool) -> tuple[str | None, float]:
        with self.lock:
            self.requests.append((method, path, conditional))
            if self.down_trigger and self.down_trigger in path:
                self.down_trigger = None
                self._down = True
                self.epoch += 1
            if self._down:
                self.seen["down"] += 1
                return "down", 0.0
            kind, delay = self.faults.popleft() if self.faults else (None, 0.0)
            self.seen[kind or "forwarded"] += 1
            return kind, delay

    def pending(self) -> int:
        with self.lock:
            return len(self.faults)

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
