"""The edge agent: MQTT readings -> minimisation -> one report per window -> outbox -> upload.

Flow per reading: decode JSON (bounded size, no NaN, bounded nesting) ->
:class:`~services.edge.pipeline.Pipeline` rules -> the open window's
:class:`~services.edge.pipeline.WindowAccumulator`.  When a window closes
(``window_start + window_seconds + grace_seconds <= now``) the agent builds
the task's measurement, shards and seals it with ``mpc.client.shard_report``
under the node's deterministic report id, stores it in the durable
:class:`~services.edge.outbox.Outbox`, and the upload loop forwards it.

Bad input never stops the agent: every rejected message is counted by reason
in :class:`EdgeMetrics` and logged with the stream name and the reason only
(never the payload, never the concrete topic, which may carry a device id).
Each report stored and each upload's outcome are logged at INFO; with
``metrics_listen`` set the counters and stage histograms are served for
Prometheus (`services.edge.metrics`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from secrets import SystemRandom
from typing import Any

import aiomqtt
import numpy as np

from twinmpc.mpc.client import shard_report
from twinmpc.mpc.errors import InvalidMeasurement, InvalidTask
from twinmpc.mpc.measurements import Count, Histogram, MeasurementType, Sum, SumVec
from twinmpc.mpc.modes import HomomorphicMode, mode_of
from twinmpc.mpc.task import Task
from twinmpc.services.client import UploadClient
from twinmpc.services.pki import channel_credentials

from twinmpc.services.metrics_http import start_metrics_server

from .config import EdgeConfig, EdgeConfigError, StreamConfig, load_edge_config
from .masks import MasksWindows, masks_client
from .metrics import EdgePrometheus
from .mqtt_source import MqttSource
from .outbox import Outbox, OutboxFull, Uploader, WindowAlreadyReported, drain_once
from .pipeline import Pipeline, RejectedReading, WindowAccumulator, window_start

__all__ = ["EdgeAgent", "EdgeMetrics", "load_stream_task", "report_time", "run_edge_agent", "to_measurement", "upload_client"]

log = logging.getLogger("twinmpc.edge")

_PSEUDONYM_PURPOSE = b"contributor-pseudonyms"


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


@dataclass
class EdgeMetrics:
    """Counters of the agent (Prometheus-style names in :meth:`snapshot`)."""

    messages: int = 0
    readings_accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    late_readings: int = 0
    windows_reported: int = 0
    readings_reported: int = 0
    windows_empty: int = 0
    windows_refused: int = 0
    readings_refused: int = 0
    windows_clamped: int = 0
    suppressed_zones: int = 0
    suppressed_readings: int = 0
    reports_acked: int = 0
    reports_replayed: int = 0
    readings_acked: int = 0
    dead_letters: int = 0
    upload_retries: int = 0
    outbox_full: bool = False
    outbox_pending: int = 0

    def snapshot(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "rejected"}
        out["rejected"] = dict(self.rejected)
        out["rejected_total"] = sum(self.rejected.values())
        return out


def to_measurement(mtype: MeasurementType, value: int | list[int]) -> tuple[Any, bool]:
    """Clamp a window's combined value into the task measurement's range.

    Returns (measurement, clamped).  Clamping bounds one node's contribution
    per window, as the task's sensitivity assumes.
    """
    if isinstance(mtype, SumVec):
        if not isinstance(value, list) or len(value) != mtype.vector_length:
            raise InvalidMeasurement(f"expected a vector of length {mtype.vector_length}")
        top = (1 << mtype.bits) - 1
        out = [min(max(v, 0), top) for v in value]
        return out, out != value
    if isinstance(value, list):
        raise InvalidMeasurement("a scalar task got a vector")
    if isinstance(mtype, Count):
        top = 1
    elif isinstance(mtype, Sum):  # also Mean
        top = (1 << mtype.bits) - 1
    elif isinstance(mtype, Histogram):
        top = mtype.buckets - 1
    else:
        raise InvalidMeasurement(f"measurement type {mtype.NAME!r} is not produced by the edge pipeline")
    clamped = min(max(value, 0), top)
    return clamped, clamped != value


def report_time(task: Task, ws: int) -> int:
    """The time a window's report carries: the window's last second.

    Any fixed point of the window reveals nothing beyond the window; the last
    second is the one closest to the upload, so the aggregators' clock-skew
    check (``max_skew_seconds``) spends only the grace period and the outage,
    not the window length.
    """
    return ws + task.window_seconds - 1


def load_stream_task(cfg: EdgeConfig, stream: StreamConfig) -> Task:
    """Load the task document a stream feeds (TOML by suffix, else JSON)."""
    path = cfg.path(stream.task)
    try:
        if path.suffix == ".toml":
            return Task.from_toml(path)
        return Task.from_json(path.read_bytes())
    except OSError as exc:
        raise EdgeConfigError(f"stream {stream.name!r}: cannot read task {path}: {exc.strerror}") from None
    except InvalidTask as exc:
        raise EdgeConfigError(f"stream {stream.name!r}: task {path}: {exc}") from None


def _check_stream_task(stream: StreamConfig, task: Task) -> None:
    m = task.measurement
    if isinstance(mode_of(task), HomomorphicMode):  # edge nodes secret-share or mask; they hold no collector key
        raise EdgeConfigError(f"stream {stream.name!r}: task mode {task.mode!r} is not supported at the edge (use 'shares' or 'masks')")
    if not isinstance(m, (Count, Sum, Histogram, SumVec)):
        raise EdgeConfigError(f"stream {stream.name!r}: measurement type {m.NAME!r} is not supported by the edge pipeline")
    if isinstance(m, SumVec) and stream.measurement.index is None:
        raise EdgeConfigError(f"stream {stream.name!r}: a sumvec task needs measurement.index")
    if not isinstance(m, SumVec) and stream.measurement.index is not None:
        raise EdgeConfigError(f"stream {stream.name!r}: measurement.index is only for sumvec tasks")
    if any(r.rule == "local_noise" for r in stream.rules) and not isinstance(m, (Sum, SumVec)):
        raise EdgeConfigError(
            f"stream {stream.name!r}: local_noise needs a sum, mean or sumvec task; noise on a {m.NAME} would not be a count"
        )


class _Stream:
    """A configured stream bound to its task, pipeline and open windows."""

    def __init__(self, cfg: StreamConfig, task: Task, pseudonym_key: bytes) -> None:
        _check_stream_task(cfg, task)
        self.cfg = cfg
        self.task = task
        self.pipeline = Pipeline(cfg, window_seconds=task.window_seconds, pseudonym_key=pseudonym_key)
        self.length = task.measurement.vector_length if isinstance(task.measurement, SumVec) else None
        self.k = self.pipeline.suppress.k if self.pipeline.suppress is not None else None
        self.open: dict[int, WindowAccumulator] = {}

    def closes_at(self, ws: int) -> int:
        return ws + self.task.window_seconds + self.cfg.grace_seconds


class EdgeAgent:
    """One edge node: streams, outbox and uploader wired together.

    ``clock`` (seconds), ``jitter``/``rand`` and ``noise_rng`` are seams for
    tests; in production they are wall time and the OS CSPRNG.
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        uploader: Uploader,
        tasks: dict[str, Task] | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = SystemRandom().random,
        rand: Callable[[int], bytes] = os.urandom,
        noise_rng: np.random.Generator | None = None,
    ) -> None:
        self.config = config
        self._noise_rng = noise_rng
        self.uploader = uploader
        self.clock = clock
        self._jitter = jitter
        self._rand = rand
        self.metrics = EdgeMetrics()
        self.masks: MasksWindows | None = None  # set by run_edge_agent when a stream's task is in mode 'masks'
        self.prometheus = EdgePrometheus(self.metrics)
        self.outbox = Outbox(config.path(config.outbox.dir), max_reports=config.outbox.max_reports, clock=clock, rand=rand)
        key = self.outbox.derive_key(_PSEUDONYM_PURPOSE)
        tasks = tasks or {}
        try:
            self.streams = [
                _Stream(s, tasks[s.name] if s.name in tasks else load_stream_task(config, s), key) for s in config.streams
            ]
            self._restore_open_windows()
        except BaseException:
            self.outbox.close()
            raise
        self._route_cache: dict[str, tuple[_Stream, ...]] = {}
        self._last_warning: dict[str, float] = {}
        self._stop = asyncio.Event()
        self.source: MqttSource | None = None

    def __repr__(self) -> str:
        return f"EdgeAgent(node_id={self.config.node_id!r}, streams={[s.cfg.name for s in self.streams]})"

    # -- graceful restart -------------------------------------------------
    def _restore_open_windows(self) -> None:
        """Take back the open windows a graceful stop saved (same streams, same rules)."""
        by_name = {s.cfg.name: s for s in self.streams}
        for name, ws, state in self.outbox.open_windows():
            stream = by_name.get(name)
            try:
                if stream is None:
                    raise ValueError("stream no longer configured")
                acc = WindowAccumulator.from_state(json.loads(state))
                if (acc.combine, acc.k, acc.length) != (stream.cfg.measurement.combine, stream.k, stream.length):
                    raise ValueError("stream configuration changed")
            except ValueError as exc:
                log.warning("saved open window %d of stream %s not restored: %s", ws, name, exc)
                self.outbox.forget_open_window(name, ws)
                continue
            stream.open[ws] = acc
        restored = sum(a.readings for s in self.streams for a in s.open.values())
        if restored:
            log.info("restored %d readings of open windows saved at the last stop", restored)

    def save_open_windows(self) -> int:
        """Persist the open windows (graceful stop); returns how many readings they hold."""
        states = [
            (s.cfg.name, ws, json.dumps(acc.to_state(), separators=(",", ":")))
            for s in self.streams
            for ws, acc in s.open.items()
        ]
        self.outbox.save_open_windows(states)
        return sum(a.readings for s in self.streams for a in s.open.values())

    # -- ingestion --------------------------------------------------------
    def _routes(self, topic: str) -> tuple[_Stream, ...]:
        hit = self._route_cache.get(topic)
        if hit is None:
            try:
                t = aiomqtt.Topic(topic)
            except ValueError:  # wildcards or empty: no broker delivers these, but never crash on input
                return ()
            hit = tuple(s for s in self.streams if any(t.matches(f) for f in s.cfg.topics))
            if len(self._route_cache) >= 4096:
                self._route_cache.clear()
            self._route_cache[topic] = hit
        return hit

    def _reject(self, stream: str, reason: str, detail: str = "") -> None:
        self.metrics.rejected[reason] += 1
        key = f"{stream}/{reason}"
        now = time.monotonic()
        # At most one warning per (stream, reason) and minute: a flood of bad
        # messages must not flood the log.
        if now - self._last_warning.get(key, -1e9) >= 60.0:
            self._last_warning[key] = now
            log.warning("stream %s: message rejected: %s%s (further ones this minute at debug)", stream, reason, detail)
        else:
            log.debug("stream %s: message rejected: %s%s", stream, reason, detail)

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Ingest one MQTT message; never raises on bad input."""
        self.metrics.messages += 1
        routes = self._routes(topic)
        if not routes:
            self._reject("-", "no_stream")
            return
        name = routes[0].cfg.name
        if len(payload) > self.config.mqtt.max_payload_bytes:
            self._reject(name, "too_large", f" ({len(payload)} bytes)")
            return
        try:
            record = json.loads(payload, parse_constant=_no_constants)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self._reject(name, "bad_json", f" ({len(payload)} bytes)")
            return
        now = int(self.clock())
        for stream in routes:
            try:
                reading = stream.pipeline.apply(record, now)
                ws = window_start(reading.time, stream.task.window_seconds)
                if stream.closes_at(ws) <= now:
                    self.metrics.late_readings += 1
                    self._reject(stream.cfg.name, "late")
                    continue
                acc = stream.open.get(ws)
                if acc is None:
                    acc = stream.open[ws] = WindowAccumulator(stream.cfg.measurement.combine, stream.k, stream.length)
                acc.add(reading)
                self.metrics.readings_accepted += 1
            except RejectedReading as exc:
                where = f" at rules[{exc.rule_index}]" if exc.rule_index is not None else ""
                what = f" field {exc.field!r}" if exc.field is not None else ""
                self._reject(stream.cfg.name, exc.reason, where + what)

    # -- windows ----------------------------------------------------------
    def close_due_windows(self, now: float | None = None) -> int:
        """Close every window whose end plus grace has passed; returns reports stored."""
        now = int(self.clock() if now is None else now)
        stored = 0
        for stream in self.streams:
            for ws in sorted(w for w in stream.open if stream.closes_at(w) <= now):
                stored += self._close(stream, ws, stream.open.pop(ws))
                self.outbox.forget_open_window(stream.cfg.name, ws)
        return stored

    def _close(self, stream: _Stream, ws: int, acc: WindowAccumulator) -> int:
        result = acc.close()
        m = self.metrics
        m.suppressed_zones += result.suppressed_zones
        m.suppressed_readings += result.suppressed_readings
        if result.value is None:
            m.windows_empty += 1
            return 0
        task = stream.task
        noisy = stream.pipeline.add_noise(result.value, self._noise_rng)
        measurement, clamped = to_measurement(task.measurement, noisy)
        m.windows_clamped += int(clamped)
        if not mode_of(task).takes_uploads:  # masks: no report to store, the value joins the window's round now
            if self.masks is None:
                raise EdgeConfigError(f"stream {stream.cfg.name!r}: a masks-mode task needs the agent's masks client")
            self.masks.start(task, ws, measurement, result.readings)
            return 1
        started = time.perf_counter()
        report = shard_report(
            task, measurement, time=report_time(task, ws), report_id=self.outbox.report_id(task.task_id, ws), rand=self._rand
        )
        self.prometheus.observe("seal", time.perf_counter() - started)
        try:
            self.outbox.put(task.task_id, ws, report, stream=stream.cfg.name, readings=result.readings)
        except OutboxFull as exc:
            m.outbox_full = True
            m.windows_refused += 1
            m.readings_refused += result.readings
            log.error(
                "ALARM outbox full: window %d of stream %s refused (%d readings not reported): %s",
                ws, stream.cfg.name, result.readings, exc,
            )
            return 0
        except WindowAlreadyReported:
            m.late_readings += result.readings
            log.warning("stream %s: window %d was already reported before a restart; %d readings not reported",
                        stream.cfg.name, ws, result.readings)
            return 0
        m.outbox_full = False
        m.windows_reported += 1
        m.readings_reported += result.readings
        log.info("window %d of stream %s closed: report stored in the outbox (%d readings)", ws, stream.cfg.name, result.readings)
        return 1

    # -- upload -----------------------------------------------------------
    async def drain(self) -> int:
        """Upload every due report once; returns how many were settled as delivered."""
        ob = self.config.outbox
        started = time.perf_counter()
        res = await drain_once(
            self.outbox,
            self.uploader,
            now=self.clock(),
            batch_size=ob.batch_size,
            retry_initial=ob.retry_initial_seconds,
            retry_max=ob.retry_max_seconds,
            jitter=self._jitter,
        )
        if res.accepted or res.replayed or res.dead or res.retried:
            self.prometheus.observe("upload", time.perf_counter() - started)
        if res.accepted or res.replayed or res.dead:
            log.info("upload: %d report(s) acknowledged (%d readings), %d already held by the leader, %d dead-lettered, %d to retry",
                     res.accepted, res.readings_acked, res.replayed, res.dead, res.retried)
        m = self.metrics
        m.reports_acked += res.accepted
        m.reports_replayed += res.replayed
        m.readings_acked += res.readings_acked
        m.dead_letters += res.dead
        m.upload_retries += res.retried
        if res.accepted or res.replayed:
            m.outbox_full = self.outbox.pending() >= self.outbox.max_reports
        return res.accepted + res.replayed

    async def tick(self) -> None:
        """One step of the background loop: close due windows, drain the outbox, prune the ledger."""
        self.close_due_windows()
        while await self.drain() >= self.config.outbox.batch_size:
            pass  # a full batch went through: more may be due right now
        self.metrics.outbox_pending = self.outbox.pending()
        self.outbox.prune(self.clock() - self.config.outbox.ledger_retention_seconds)

    async def _tick_loop(self) -> None:
        while not self._stop.is_set():
            await self.tick()
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.config.outbox.tick_seconds)
            except TimeoutError:
                pass

    # -- lifecycle --------------------------------------------------------
    async def run(self) -> None:
        """Run until :meth:`stop`: MQTT ingestion plus the window/upload loop."""
        topics = [t for s in self.streams for t in s.cfg.topics]
        self.source = MqttSource(
            self.config.mqtt,
            topics,
            self.handle_message,
            password=self.config.mqtt.password(Path(self.config.base_dir)),
            base_dir=self.config.base_dir,
            jitter=self._jitter,
        )
        mqtt_task = asyncio.create_task(self.source.run(), name="edge-mqtt")
        tick_task = asyncio.create_task(self._tick_loop(), name="edge-tick")
        stop_task = asyncio.create_task(self._stop.wait(), name="edge-stop")
        try:
            done, _ = await asyncio.wait({mqtt_task, tick_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop_task and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            self._stop.set()
            for t in (mqtt_task, stop_task):
                t.cancel()
            await asyncio.gather(mqtt_task, stop_task, return_exceptions=True)
            await asyncio.gather(tick_task, return_exceptions=True)
            saved = self.save_open_windows()
            if saved:
                log.info("saved %d readings of still-open windows for the next start", saved)
            if self.masks is not None:
                await self.masks.close()
            self.outbox.close()

    def stop(self) -> None:
        """Ask :meth:`run` to finish (graceful: the outbox keeps every stored report)."""
        self._stop.set()


def upload_client(cfg: EdgeConfig) -> UploadClient:
    """The gRPC upload client of the ``[upload]`` table (mTLS with the node's edge certificate)."""
    if cfg.upload is None:
        raise EdgeConfigError("an [upload] table is needed to run the agent")
    up = cfg.upload
    creds = channel_credentials(cfg.path(up.cert_file), cfg.path(up.key_file), cfg.path(up.ca_file))
    return UploadClient(up.leader, creds, batch_size=cfg.outbox.batch_size, timeout=up.timeout_seconds)


async def run_edge_agent(config_path: str) -> None:
    """Entry point behind ``twinmpc edge run --config``.

    Runs until SIGTERM or SIGINT, then stops gracefully: open windows are saved
    for the next start and every stored report stays in the outbox.
    """
    cfg = load_edge_config(config_path)
    client = upload_client(cfg)
    agent = EdgeAgent(cfg, uploader=client)
    if any(not mode_of(s.task).takes_uploads for s in agent.streams):
        agent.masks = MasksWindows(masks_client(cfg), agent.metrics)
    endpoint = None
    if cfg.metrics_listen:
        try:
            endpoint = start_metrics_server(agent.prometheus.registry, cfg.metrics_listen)
        except OSError as exc:
            agent.outbox.close()
            raise OSError(f"metrics_listen {cfg.metrics_listen}: {exc.strerror or exc}") from None  # e.g. port in use: exit 1
        log.info("metrics on port %d (GET /metrics)", endpoint.port)
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, agent.stop)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread / platform without signals
            pass
    try:
        await agent.run()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await client.close()
        if endpoint is not None:
            await asyncio.to_thread(endpoint.close)
