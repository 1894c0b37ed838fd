"""Running one aggregator (`serve`): its primary process and the workers sharing its port.

One grpc.aio process spends most of a small upload call in gRPC's own per-call
work on one core. With ``workers = N`` the aggregator's first process (the
primary) binds the port with SO_REUSEPORT, then starts N-1 worker processes that
bind the same port; the kernel spreads incoming connections over them. Each
worker is a full replica of the aggregator: it opens the same data_dir and
database (its own name in job leases), runs the same roles behind the same mTLS
and role policy, and appends to the same audit log (each append locks the file).
What replicas already guarantee holds between workers: an upload is acknowledged
only once durable in the shared store, a job is driven by the worker holding its
lease, a collection is released once.

Not shared between workers: the in-memory rounds of masks tasks (refused while
``workers > 1``), rate-limit buckets (each worker enforces the configured rates
for the connections it serves), and metrics (worker i serves /metrics on the
configured metrics port + i; sum the counters across them).

The primary supervises: a worker that dies is restarted; a worker whose primary
dies is stopped by the kernel (PR_SET_PDEATHSIG), so no orphan keeps the port.
Each serving worker names its process id in ``<data_dir>/worker-<i>.pid``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path

from twinmpc.mpc.modes import mode_of
from twinmpc.services.aggregator.config import AggregatorConfig, ConfigError
from twinmpc.services.aggregator.server import check_port_free, start_aggregator, stop_aggregator
from twinmpc.services.listen import split_listen
from twinmpc.services.parent_death import end_with_parent

log = logging.getLogger("twinmpc.aggregator")

READY_TIMEOUT_SECONDS = 60.0
RESTART_DELAY_SECONDS = 1.0
# Young-generation threshold while serving: each upload call allocates a few hundred
# short-lived objects (messages, futures, handles), so CPython's default of 700 ran a
# collection every couple of calls (about 6 % of a leader's time under per-call load).
SERVING_GC_THRESHOLD = (50_000, 20, 100)


def settle_heap() -> None:
    """Once a serving process is up: move what startup built out of the collector's view
    (gc.freeze) and collect the young generation less often. Cycles are still found."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLD)


async def serve(config: AggregatorConfig, *, port_file: str | None = None) -> None:
    """Run until SIGINT/SIGTERM with `config.workers` processes; optionally write the bound port to `port_file`.

    The port file is written once every worker serves, so a script that waits for it
    finds the whole aggregator up.
    """
    pool = supervisor = None
    if config.workers > 1:
        check_port_free(config.listen)  # the workers share the port with each other, never with a stranger
    server, port, core = await start_aggregator(config, reuse_port=config.workers > 1)
    try:
        if config.workers > 1:
            one_process = [t.task_id_b64 for t in core.tasks.list() if mode_of(t).needs_one_process]
            if one_process:
                raise ConfigError(f"workers = {config.workers}, but tasks {one_process} run masks rounds, which live in one "
                                  "process's memory: serve this aggregator with workers = 1")
            pool = WorkerPool(config, port)
            await asyncio.to_thread(pool.start)
            supervisor = asyncio.create_task(pool.supervise())
    except BaseException:
        if pool is not None:
            await asyncio.to_thread(pool.stop)
        await stop_aggregator(server, core)
        raise
    settle_heap()
    if port_file:
        tmp = Path(port_file + ".tmp")
        tmp.write_text(str(port))
        tmp.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if pool is not None:
        await asyncio.to_thread(pool.stop)
        if supervisor is not None:
            supervisor.cancel()
    await stop_aggregator(server, core)


def worker_config(config: AggregatorConfig, index: int, port: int) -> AggregatorConfig:
    """Worker `index`'s config: the primary's bound port, and its own metrics port (configured + index)."""
    host, _ = split_listen(config.listen)
    update: dict[str, object] = {"listen": f"[{host}]:{port}" if ":" in host else f"{host}:{port}"}
    if config.metrics_listen:
        metrics_host, metrics_port = split_listen(config.metrics_listen)
        if metrics_port:
            shown = f"[{metrics_host}]" if ":" in metrics_host else metrics_host
            update["metrics_listen"] = f"{shown}:{metrics_port + index}"
    return config.model_copy(update=update)


class WorkerPool:
    """The primary's worker processes 1..N-1: started, watched and restarted, stopped."""

    def __init__(self, config: AggregatorConfig, port: int) -> None:
        self._config = config
        self._port = port
        self._context = multiprocessing.get_context("spawn")  # a clean interpreter: no gRPC state forked
        self._ready = self._context.Queue()
        self._processes: dict[int, multiprocessing.process.BaseProcess] = {}
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes.values() if p.pid is not None]

    def start(self) -> None:
        """Start every worker and wait until each serves the port (raises if one fails to start)."""
        for index in range(1, self._config.workers):
            self._spawn(index)
        self._await_ready(set(self._processes))

    def _spawn(self, index: int) -> None:
        process = self._context.Process(
            target=_worker_main, args=(worker_config(self._config, index, self._port), index, os.getpid(), self._ready),
            name=f"aggregator-worker-{index}", daemon=False,
        )
        process.start()
        self._processes[index] = process

    def _await_ready(self, waiting: set[int]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while waiting:
            for index in list(waiting):
                if not self._processes[index].is_alive():
                    raise RuntimeError(f"aggregator worker {index} exited with code {self._processes[index].exitcode} while starting")
            try:
                index, error = self._ready.get(timeout=0.2)
            except Exception:  # queue.Empty
                if time.monotonic() > deadline:
                    raise RuntimeError(f"aggregator workers {sorted(waiting)} did not start in {READY_TIMEOUT_SECONDS:.0f}s") from None
                continue
            if error:
                raise RuntimeError(f"aggregator worker {index} could not start: {error}")
            waiting.discard(index)

    async def supervise(self) -> None:
        """Restart any worker that exits until `stop` (runs as a task of the primary's loop)."""
        while not self._stopping:
            await asyncio.sleep(0.5)
            for index, process in list(self._processes.items()):
                if self._stopping or process.is_alive():
                    continue
                log.error("aggregator worker %d exited (code %s); restarting it", index, process.exitcode)
                await asyncio.sleep(RESTART_DELAY_SECONDS)
                if self._stopping:
                    return
                try:
                    self._spawn(index)
                    await asyncio.to_thread(self._await_ready, {index})
                except RuntimeError as exc:
                    log.error("%s", exc)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every worker (each stops gracefully), then kill what is still running after `timeout`."""
        self._stopping = True
        for process in self._processes.values():
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self._processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1.0)


def _worker_main(config: AggregatorConfig, index: int, primary_pid: int, ready) -> None:
    """Entry point of one worker process: serve the shared port until SIGTERM."""
    end_with_parent(primary_pid)  # SIGTERM: a graceful stop that frees the port
    from twinmpc.services.logs import configure_json_logging

    configure_json_logging(config.log_level)
    asyncio.run(_serve_worker(config, index, ready))


async def _serve_worker(config: AggregatorConfig, index: int, ready) -> None:
    try:
        server, _, core = await start_aggregator(config, reuse_port=True, worker=index)
    except Exception as exc:  # noqa: BLE001 - reported to the primary, which refuses to start
        ready.put((index, str(exc) or type(exc).__name__))
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pid_file = pid_path(config, index)
    pid_file.write_text(f"{os.getpid()}\n")
    settle_heap()
    ready.put((index, ""))
    await stop.wait()
    pid_file.unlink(missing_ok=True)
    await stop_aggregator(server, core)


def pid_path(config: AggregatorConfig, index: int) -> Path:
    """Where worker `index` of the aggregator names its process id while it serves."""
    return config.data_dir / f"worker-{index}.pid"
