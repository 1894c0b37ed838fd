"""How the intersections' detector counts reach the aggregators: district gateways, in-process or over MQTT.

Every district has its own tasks (one per private controller): a SumVec of
length 2, the (ns, ew) arrivals.  Both feeds take a window's per-intersection
arrival counts (N, 2) and deliver each intersection's counts to its own
district's tasks, and to no other, before the window closes.

* `GatewayFeed` (default): every intersection cabinet is an edge node; it
  shards and seals its own report (one per task of its district and window:
  its ns and ew counts), and its district's gateway uploads the district's
  reports in one batch over mTLS with the gateway's edge certificate.  The
  privacy unit of the DP noise is therefore one intersection's window.
* `MqttFeed` (``--mqtt HOST:PORT``): the cabinets publish detector messages
  (one per approach and window, with a plate-like field the gateway must
  drop) to a real broker; one `services.edge.EdgeAgent` per district
  subscribes to its intersections' topics, sums the counts per approach
  and uploads one report per task of its district and window.  The edge
  agent reports one measurement per node and window, so here the privacy
  unit is a whole district's window: the noise needed is of the order of a
  district total (docs/twin.md says what that costs the controller).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path

import aiomqtt
import numpy as np

from twinmpc.mpc.client import shard_reports
from twinmpc.mpc.he_mode import encrypt_he_report
from twinmpc.mpc.modes import mode_of
from twinmpc.mpc.report import Report
from twinmpc.mpc.task import Task
from twinmpc.services.client import UploadClient
from twinmpc.services.edge.agent import EdgeAgent, upload_client
from twinmpc.services.edge.config import parse_edge_config
from twinmpc.services.twin.local_cluster import LocalCluster
from twinmpc.services.twin.traffic import Grid


def make_reports(task: Task, measurements: Sequence[list[int]], report_time: int) -> list[Report]:
    """Shard and seal (shares modes) or encrypt (homomorphic modes) one report per measurement."""
    if mode_of(task).verifies_with_helpers:
        return shard_reports(task, list(measurements), time=report_time)
    return [encrypt_he_report(task, m, time=report_time) for m in measurements]


class GatewayFeed:
    """One upload client per district gateway; cabinets' reports are built off the event loop."""

    def __init__(self, cluster: LocalCluster, grid: Grid) -> None:
        self.grid = grid
        self.gateways = [cluster.upload_client(f"edge-d{d}") for d in range(grid.districts)]

    async def deliver(self, tasks: Sequence[Sequence[Task]], counts: np.ndarray, report_time: int) -> int:
        """Upload every intersection's (ns, ew) report to each task of its district (``tasks[d]``); returns the number refused."""
        refused = 0
        for d, gateway in enumerate(self.gateways):
            members = counts[self.grid.district_of == d].astype(np.int64).tolist()
            for task in tasks[d]:
                reports = await asyncio.to_thread(make_reports, task, members, report_time)
                outcomes = await gateway.upload_batch(task.task_id, reports)
                refused += sum(not o.accepted for o in outcomes)
        return refused

    async def close(self) -> None:
        for gateway in self.gateways:
            await gateway.close()


def gateway_config(root: Path, cluster: LocalCluster, district: int, host: str, port: int, task_files: dict[str, Path]) -> str:
    """`task_files`: stream name -> task file, the district's own tasks."""
    """The TOML an operator would write for one district gateway of the twin."""
    ident = f"edge-d{district}"
    cluster.credentials("edge", ident)
    pki = cluster.pki_dir
    lines = [
        f'node_id = "twin-gateway-d{district}"',
        "[mqtt]", f'host = "{host}"', f"port = {port}", f'client_id = "twinmpc-twin-{ident}"', "qos = 1",
        "[outbox]", f'dir = "{root / ident}"', "tick_seconds = 0.05", "retry_initial_seconds = 0.2",
        "[upload]", f'leader = "{cluster.endpoints[0]}"', f'ca_file = "{pki / "ca.crt"}"',
        f'cert_file = "{pki / (ident + ".crt")}"', f'key_file = "{pki / (ident + ".key")}"',
    ]
    for name, path in task_files.items():
        lines += [
            "[[streams]]", f'name = "{name}"', f'topics = ["twin/d{district}/+/detector"]', f'task = "{path}"',
            'time_field = "ts"', "grace_seconds = 0",
            "[[streams.rules]]", 'rule = "drop"', 'fields = ["plate"]',
            "[[streams.rules]]", 'rule = "keep"', 'fields = ["ts", "slot", "count"]',
            "[streams.measurement]", 'field = "count"', 'combine = "sum"', 'index = "slot"',
        ]
    return "\n".join(lines) + "\n"


class MqttFeed:
    """Detector messages through a real broker into one edge agent per district."""

    def __init__(self, root: Path, cluster: LocalCluster, grid: Grid, tasks: Sequence[dict[str, Task]], host: str, port: int) -> None:
        """`tasks[d]`: stream name -> task, the tasks of district d."""
        (root / "tasks").mkdir(parents=True, exist_ok=True)
        self.grid, self.host, self.port = grid, host, port
        self.agents: list[EdgeAgent] = []
        for d in range(grid.districts):
            files = {}
            for name, task in tasks[d].items():
                files[name] = root / "tasks" / f"d{d}-{name}.json"
                files[name].write_text(task.to_json())
            text = gateway_config(root, cluster, d, host, port, files)
            cfg = parse_edge_config(text, source=f"twin-gateway-d{d}", base_dir=root)
            self.agents.append(EdgeAgent(cfg, uploader=upload_client(cfg)))
        self._runs: list[asyncio.Task] = []

    async def start(self) -> None:
        self._runs = [asyncio.create_task(a.run()) for a in self.agents]
        deadline = time.monotonic() + 10
        while not all(a.source is not None and a.source.connected.is_set() for a in self.agents):
            if time.monotonic() > deadline:
                raise TimeoutError("edge agents did not connect to the broker")
            await asyncio.sleep(0.05)

    async def deliver(self, tasks: Sequence[Sequence[Task]], counts: np.ndarray, report_time: int) -> int:
        """Publish one detector message per approach; the agents report to their district's tasks at window close."""
        async with aiomqtt.Client(self.host, self.port) as client:
            for i in range(self.grid.intersections):
                d = int(self.grid.district_of[i])
                for a in range(2):
                    msg = {"ts": report_time, "slot": a, "count": int(counts[i, a]), "plate": "M-000"}
                    await client.publish(f"twin/d{d}/i{i}/detector", json.dumps(msg), qos=1)
        return 0

    async def wait_uploaded(self, window_end: int, timeout: float = 10.0) -> bool:
        """True once every agent has closed the window and emptied its outbox."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if time.time() >= window_end and all(not any(s.open for s in a.streams) and a.outbox.pending() == 0 for a in self.agents):
                return True
            await asyncio.sleep(0.01)
        return False

    async def close(self) -> None:
        for a in self.agents:
            a.stop()
        await asyncio.gather(*self._runs, return_exceptions=True)
