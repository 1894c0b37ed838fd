"""Chaos injection for the benchmark runs, loopback only.

* `FaultProxy`: a small asyncio TCP proxy put on one link (leader -> helper,
  or edge -> leader).  TLS passes through it untouched (it relays bytes; the
  certificates still name the real peer), and it injects

  - one-way ``delay_ms`` on every forwarded chunk, order preserved (a chunk is
    released at arrival + delay, so delay does not cap throughput);
  - ``loss``: with this probability per chunk, a TCP retransmission stall of
    ``rto_ms`` (what a lost segment costs a TCP stream: the bytes arrive late,
    and everything behind them waits);
  - ``reset``: with this probability per chunk, the connection is cut on both
    sides (the client sees UNAVAILABLE and must retry).

  It listens and connects on 127.0.0.1 only; any other target is refused.
* `kill_restart`: SIGKILL one aggregator process of a `LocalCluster` and
  restart it on the same port after a pause.
* `malformed_reports`: report messages broken in the ways the leader must
  refuse at upload (or the helper during aggregation), each with the
  status it must get.

Drop-edge and replay/malformed storms are driven by the load generator
(bench.loadgen) in its own process; this module holds what they share.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
_CHUNK = 64 * 1024


@dataclass
class ProxyStats:
    connections: int = 0
    chunks: int = 0
    bytes: int = 0
    delayed_chunks: int = 0
    lost_chunks: int = 0  # retransmission stalls injected
    resets: int = 0


@dataclass
class FaultSettings:
    delay_ms: float = 0.0
    loss: float = 0.0
    rto_ms: float = 200.0
    reset: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.rto_ms < 0:
            raise ValueError("delay_ms and rto_ms must be >= 0")
        if not (0 <= self.loss < 1 and 0 <= self.reset < 1):
            raise ValueError("loss and reset are probabilities in [0, 1)")


def _parse_loopback(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    if host != LOOPBACK:
        raise ValueError(f"the fault proxy only relays to {LOOPBACK}, not {host!r}")
    return host, int(port)


class _ConnectionCut(Exception):
    """Raised inside a pipe when an injected reset cuts the connection."""


@dataclass
class FaultProxy:
    """TCP relay 127.0.0.1:<port> -> target (127.0.0.1 only) with injected faults.

    ``rng`` and ``sleep`` are seams for tests (deterministic drops, recorded
    delays); production runs use `random.Random()` and `asyncio.sleep`.
    """

    target: str
    faults: FaultSettings = field(default_factory=FaultSettings)
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    stats: ProxyStats = field(default_factory=ProxyStats)

    def __post_init__(self) -> None:
        self._target = _parse_loopback(self.target)
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task] = set()
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        self._handlers.add(me)  # type: ignore[arg-type]
        self.stats.connections += 1
        upstream_writer: asyncio.StreamWriter | None = None
        pipes: list[asyncio.Future] = []
        cut = False
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
            pipes = [
                asyncio.ensure_future(self._pipe(client_reader, upstream_writer)),
                asyncio.ensure_future(self._pipe(upstream_reader, client_writer)),
            ]
            # both directions end at EOF, or one raises _ConnectionCut (the only error a pipe lets out)
            done, _ = await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
            cut = any(not t.cancelled() and isinstance(t.exception(), _ConnectionCut) for t in done)
        except (OSError, asyncio.CancelledError):
            pass  # target down (a killed aggregator) or the proxy is stopping: drop this connection
        finally:
            for t in pipes:
                t.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (client_writer, upstream_writer):
                if w is not None and not w.is_closing():
                    if cut:
                        w.transport.abort()  # RST, as a cut link looks to both ends
                    else:
                        w.close()
            self._handlers.discard(me)  # type: ignore[arg-type]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read chunks, stamp each with its release time, write them in order."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                release, data = item
                wait = release - self.clock()
                if wait > 0:
                    await self.sleep(wait)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        delivering = asyncio.ensure_future(deliver())
        last_release = 0.0
        try:
            while data := await reader.read(_CHUNK):
                f = self.faults
                self.stats.chunks += 1
                self.stats.bytes += len(data)
                if f.reset and self.rng.random() < f.reset:
                    self.stats.resets += 1
                    raise _ConnectionCut()
                extra = f.delay_ms / 1000.0
                if extra:
                    self.stats.delayed_chunks += 1
                if f.loss and self.rng.random() < f.loss:
                    self.stats.lost_chunks += 1
                    extra += f.rto_ms / 1000.0
                # in-order delivery: a chunk never overtakes a stalled one
                last_release = max(last_release, self.clock() + extra)
                queue.put_nowait((last_release, data))
            queue.put_nowait(None)
            await delivering
        except (ConnectionError, OSError):
            pass
        finally:
            delivering.cancel()
            await asyncio.gather(delivering, return_exceptions=True)


async def kill_restart(cluster, index: int, down_seconds: float) -> dict[str, float]:
    """SIGKILL aggregator `index` of a process-mode LocalCluster, restart it after a pause."""
    t0 = time.time()
    cluster.kill(index)
    await asyncio.sleep(down_seconds)
    await cluster.restart(index)
    return {"killed_at": t0, "back_at": time.time(), "index": index}


# --- malformed reports ---------------------------------------------------------------

# kind -> upload statuses the leader may answer; "counted" says whether it may ever be summed
MALFORMED_KINDS: dict[str, tuple[frozenset[str], bool]] = {
    "short_report_id": (frozenset({"INVALID"}), False),
    "leader_share_flipped": (frozenset({"INVALID"}), False),
    "missing_share": (frozenset({"INVALID"}), False),
    "garbage_public_share": (frozenset({"INVALID"}), False),  # the public share is bound into every seal
    "helper_share_flipped": (frozenset({"ACCEPTED", "INVALID"}), False),  # the helper rejects it in aggregation
    "future_time": (frozenset({"STALE"}), False),
}


def _flip(data: bytes, position: int) -> bytes:
    b = bytearray(data)
    b[position % len(b)] ^= 0x01
    return bytes(b)


def malformed_report(kind: str, report_id: bytes, time_: int, public_share: bytes, sealed: list[bytes], rng: random.Random) -> dict:
    """Fields of an upload message broken as `kind` says (from a valid report's parts)."""
    fields = {"report_id": report_id, "time": time_, "public_share": public_share, "sealed_shares": list(sealed)}
    if kind == "short_report_id":
        fields["report_id"] = report_id[:-1]
    elif kind == "leader_share_flipped":
        fields["sealed_shares"][0] = _flip(sealed[0], rng.randrange(len(sealed[0])))
    elif kind == "missing_share":
        fields["sealed_shares"] = sealed[:-1]
    elif kind == "garbage_public_share":
        fields["public_share"] = bytes(rng.randrange(256) for _ in range(max(1, len(public_share)) + 3))
    elif kind == "helper_share_flipped":
        fields["sealed_shares"][1] = _flip(sealed[1], rng.randrange(len(sealed[1])))
    elif kind == "future_time":
        fields["time"] = time_ + 10 * 86400
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return fields
