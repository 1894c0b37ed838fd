"""The Prometheus scrape endpoint (GET /metrics) of aggregators and edge agents.

prometheus-client's own WSGI server, in a daemon thread, so a scrape never
waits on (or stalls) the event loop.  Plain HTTP, as scrapers expect: bind it
to loopback or a monitoring network only, never to the network edge nodes use.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from twinmpc.services.listen import split_listen


@dataclass
class MetricsEndpoint:
    """A running scrape endpoint; `close()` stops it (blocking, up to half a second)."""

    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def start_metrics_server(registry: CollectorRegistry, listen: str) -> MetricsEndpoint:
    """Serve `registry` on `listen` ("HOST:PORT"; port 0 picks a free one); raises OSError if it cannot bind."""
    host, port = split_listen(listen)
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsEndpoint(server.server_port, server, thread)
