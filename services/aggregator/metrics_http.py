"""A minimal Prometheus scrape endpoint (GET /metrics) on its own loopback port.

Plain HTTP on purpose, as scrapers expect; bind it to 127.0.0.1 or a
monitoring network only.  Anything but ``GET /metrics`` answers 404.
"""

from __future__ import annotations

import asyncio

from twinmpc.services.aggregator.metrics import Metrics


async def start_metrics_server(metrics: Metrics, host: str, port: int) -> tuple[asyncio.base_events.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass
            if request_line.split(b" ")[:2] == [b"GET", b"/metrics"]:
                body, status = metrics.render().encode(), b"200 OK"
            else:
                body, status = b"not found\n", b"404 Not Found"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    return server, server.sockets[0].getsockname()[1]
