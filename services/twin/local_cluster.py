"""A K-aggregator deployment on loopback: PKI, configs, servers, provisioning.

Used by `twinmpc demo`, the end-to-end tests and the benchmarks.  Aggregators
run either in this process (fast, for tests) or as real child processes
(`twinmpc aggregator serve`), which can be SIGKILLed and restarted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc.task import Task, b64encode
from twinmpc.services import pki
from twinmpc.services.aggregator.config import load_aggregator_config
from twinmpc.services.aggregator.core import AggregatorCore
from twinmpc.services.aggregator.server import start_aggregator, stop_aggregator
from twinmpc.services.client import Collector, TaskAdminClient, UploadClient


def _free_port() -> int:
    """A loopback port free right now: a child process must be told its metrics port up front."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class _Node:
    index: int
    config_path: Path
    port: int = 0
    metrics_port: int = 0
    server: Any = None
    core: AggregatorCore | None = None
    process: subprocess.Popen | None = None


@dataclass
class LocalCluster:
    workdir: Path
    k: int = 2
    processes: bool = False
    hpke_suite: str = "x25519-hkdf-sha256-aes128gcm"
    limits: dict[str, Any] = field(default_factory=dict)
    metrics: bool = False  # expose Prometheus /metrics on a free loopback port (`metrics_endpoints`)
    database_urls: dict[int, str] = field(default_factory=dict)  # aggregator index -> postgresql:// URL (else SQLite)
    database_password_env: str | None = None  # env var holding the database password, for those aggregators
    workers: dict[int, int] = field(default_factory=dict)  # aggregator index -> processes sharing its port (else 1)
    nodes: list[_Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("a cluster needs at least one aggregator")
        self.workdir = Path(self.workdir)
        self.pki_dir = self.workdir / "pki"
        if not (self.pki_dir / "ca.crt").exists():
            pki.init_ca(self.pki_dir, passphrase_env=None)
        self.collector_key = HpkeKeypair.generate(0, self.hpke_suite)
        for i in range(self.k):
            ident = f"agg{i}"
            if not (self.pki_dir / f"{ident}.crt").exists():
                pki.issue(self.pki_dir, "aggregator", ident, self.pki_dir, passphrase_env=None)
            cfg = self.workdir / f"{ident}.toml"
            node = _Node(i, cfg, metrics_port=_free_port() if self.metrics else 0)
            self.nodes.append(node)
            self._write_config(cfg, ident, port=0)

    def _write_config(self, path: Path, ident: str, port: int) -> None:
        node = self.nodes[int(ident.removeprefix("agg"))]
        lines = [
            f'listen = "127.0.0.1:{port}"',
            f'data_dir = "{ident}-data"',
            f'identity = "{ident}"',
            f'hpke_suite = "{self.hpke_suite}"',
            *([f'metrics_listen = "127.0.0.1:{node.metrics_port}"'] if self.metrics else []),
            *self._database_lines(int(ident.removeprefix("agg"))),
            *([f"workers = {self.workers[node.index]}"] if self.workers.get(node.index, 1) > 1 else []),
            "[tls]",
            f'cert = "pki/{ident}.crt"',
            f'key = "pki/{ident}.key"',
            'ca = "pki/ca.crt"',
            "[limits]",
            *(f"{k} = {v}" for k, v in self.limits.items()),
        ]
        path.write_text("\n".join(lines) + "\n")

    def _database_lines(self, index: int) -> list[str]:
        url = self.database_urls.get(index)
        if url is None:
            return []
        return [f'database_url = "{url}"', *([f'database_password_env = "{self.database_password_env}"'] if self.database_password_env else [])]

    # --- credentials ---------------------------------------------------------------
    def credentials(self, role: str, identity: str | None = None) -> grpc.ChannelCredentials:
        identity = identity or f"{role}-1"
        if not (self.pki_dir / f"{identity}.crt").exists():
            pki.issue(self.pki_dir, role, identity, self.pki_dir, passphrase_env=None)
        return pki.channel_credentials(self.pki_dir / f"{identity}.crt", self.pki_dir / f"{identity}.key", self.pki_dir / "ca.crt")

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    @property
    def metrics_endpoints(self) -> list[str]:
        """HOST:PORT of each aggregator's Prometheus endpoint (``metrics=True``), in- or out-of-process alike."""
        return [f"127.0.0.1:{n.metrics_port}" for n in self.nodes] if self.metrics else []

    def audit_logs(self) -> list[tuple[Path, Path]]:
        """(audit.log, audit_signing.pub) of each aggregator, for offline verification."""
        return [(self.workdir / f"agg{n.index}-data" / "audit.log", self.workdir / f"agg{n.index}-data" / "audit_signing.pub")
                for n in self.nodes]

    # --- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        for node in self.nodes:
            await self._start_node(node)

    async def _start_node(self, node: _Node) -> None:
        if self.processes:
            port_file = self.workdir / f"agg{node.index}.port"
            port_file.unlink(missing_ok=True)
            log = open(self.workdir / f"agg{node.index}.log", "ab")
            node.process = subprocess.Popen(
                [sys.executable, "-m", "twinmpc.services.cli", "aggregator", "serve", "--config", str(node.config_path), "--port-file", str(port_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))},
            )
            deadline = time.monotonic() + 30
            while not port_file.exists():
                if node.process.poll() is not None:
                    raise RuntimeError(f"aggregator {node.index} exited with {node.process.returncode}; see {log.name}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"aggregator {node.index} did not start")
                await asyncio.sleep(0.05)
            node.port = int(port_file.read_text())
        else:
            config = load_aggregator_config(node.config_path)
            node.server, node.port, node.core = await start_aggregator(config)
        # pin the port so a restart comes back on the same endpoint
        self._write_config(node.config_path, f"agg{node.index}", node.port)

    async def stop(self) -> None:
        for node in self.nodes:
            await self._stop_node(node)

    async def _stop_node(self, node: _Node) -> None:
        if node.process is not None:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(node.process.wait, 15)
                except subprocess.TimeoutExpired:
                    node.process.kill()
            node.process = None
        elif node.server is not None:
            await stop_aggregator(node.server, node.core)
            node.server = node.core = None

    def kill(self, index: int) -> None:
        """SIGKILL an aggregator process (process mode only)."""
        node = self.nodes[index]
        if node.process is None:
            raise RuntimeError("kill needs processes=True")
        node.process.kill()
        node.process.wait()
        node.process = None

    async def restart(self, index: int) -> None:
        await self._start_node(self.nodes[index])

    # --- tasks and clients -----------------------------------------------------------
    async def provision(self, document: dict[str, Any], *, aggregators: int | None = None) -> Task:
        """Install a task on the first `aggregators` aggregators (default: all)."""
        doc = {"collector_hpke_config": b64encode(self.collector_key.config.encode()), **document}
        endpoints = self.endpoints[: aggregators or len(self.endpoints)]
        return await TaskAdminClient(self.credentials("admin")).provision_task(endpoints, doc)

    def upload_client(self, identity: str = "edge-1", **kwargs: Any) -> UploadClient:
        return UploadClient(self.endpoints[0], self.credentials("edge", identity), **kwargs)

    def collector(self, identity: str = "controller-1", *, he_secret_key: Any = None) -> Collector:
        return Collector(self.endpoints[0], self.credentials("controller", identity), self.collector_key, he_secret_key=he_secret_key)
