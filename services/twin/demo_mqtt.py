"""`twinmpc demo --mqtt HOST:PORT`: the demo city through a real MQTT broker and edge agents.

Each district gateway runs an edge agent (`services.edge.EdgeAgent`): it
subscribes to its intersections' topics, drops the PII fields the sensors
send (plate numbers, device MACs), sums vehicles, keeps the worst congestion
level and the floor-mean speed per window, and uploads one sealed report per
(task, window, gateway) over mTLS.  The controller collects each window once
every gateway's outbox is empty.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt
import numpy as np

from twinmpc.mpc.task import Task
from twinmpc.services.edge.agent import EdgeAgent, upload_client
from twinmpc.services.edge.config import parse_edge_config
from twinmpc.services.twin.local_cluster import LocalCluster

GRACE = 1
STREAMS = {  # task name -> (reading field, combine)
    "vehicles": ("vehicles", "sum"),
    "congestion": ("congestion", "max"),
    "speed": ("speed", "mean"),
}


def gateway_config(root: Path, cluster: LocalCluster, district: int, host: str, port: int) -> str:
    """The TOML an operator would write for one district gateway."""
    ident = f"edge-d{district}"
    cluster.credentials("edge", ident)
    pki = cluster.pki_dir
    lines = [
        f'node_id = "gateway-d{district}"',
        "[mqtt]",
        f'host = "{host}"',
        f"port = {port}",
        f'client_id = "twinmpc-demo-{ident}"',
        "qos = 1",
        "[outbox]",
        f'dir = "{root / ident}"',
        "tick_seconds = 0.1",
        "retry_initial_seconds = 0.2",
        "[upload]",
        f'leader = "{cluster.endpoints[0]}"',
        f'ca_file = "{pki / "ca.crt"}"',
        f'cert_file = "{pki / (ident + ".crt")}"',
        f'key_file = "{pki / (ident + ".key")}"',
    ]
    for name, (fld, combine) in STREAMS.items():
        lines += [
            "[[streams]]",
            f'name = "{name}"',
            f'topics = ["city/d{district}/+/traffic"]',
            f'task = "{root / "tasks" / (name + ".json")}"',
            'time_field = "ts"',
            f"grace_seconds = {GRACE}",
            "[[streams.rules]]",
            'rule = "drop"',
            'fields = ["plate", "mac"]',
            "[[streams.rules]]",
            'rule = "keep"',
            f'fields = ["ts", "{fld}"]',
            "[streams.measurement]",
            f'field = "{fld}"',
            f'combine = "{combine}"',
        ]
    return "\n".join(lines) + "\n"


def district_truth(values: dict[str, np.ndarray], district: np.ndarray, districts: int, levels: int) -> dict:
    """What the gateways' window measurements add up to (computed in the clear, for checking)."""
    sums = [int(values["vehicles"][district == d].sum()) for d in range(districts)]
    worst = [int(values["congestion"][district == d].max()) for d in range(districts)]
    speeds = [int(values["speed"][district == d].sum()) // int((district == d).sum()) for d in range(districts)]
    return {
        "vehicles": sum(sums),
        "congestion": np.bincount(worst, minlength=levels).tolist(),
        "speed": sum(speeds) / districts,
    }


class MqttCity:
    """Gateway agents plus a sensor publisher on one broker."""

    def __init__(self, root: Path, cluster: LocalCluster, tasks: dict[str, Task], districts: int, host: str, port: int) -> None:
        (root / "tasks").mkdir(parents=True, exist_ok=True)
        for name, task in tasks.items():
            (root / "tasks" / f"{name}.json").write_text(task.to_json())
        self.host, self.port = host, port
        self.agents: list[EdgeAgent] = []
        for d in range(districts):
            cfg = parse_edge_config(gateway_config(root, cluster, d, host, port), source=f"gateway-d{d}", base_dir=root)
            self.agents.append(EdgeAgent(cfg, uploader=upload_client(cfg)))
        self._runs: list[asyncio.Task] = []

    async def start(self) -> None:
        self._runs = [asyncio.create_task(a.run()) for a in self.agents]
        await asyncio.sleep(0.5)  # let every agent subscribe before sensors publish

    async def publish(self, window_time: int, values: dict[str, np.ndarray], district: np.ndarray, rng) -> None:
        async with aiomqtt.Client(self.host, self.port) as client:
            for i in range(district.size):
                reading = {
                    "ts": window_time,
                    "vehicles": int(values["vehicles"][i]),
                    "congestion": int(values["congestion"][i]),
                    "speed": int(values["speed"][i]),
                    "plate": f"M-{rng.integers(100, 999)}",  # PII the gateway must drop
                    "mac": ":".join(f"{b:02x}" for b in rng.integers(0, 256, 6)),
                }
                await client.publish(f"city/d{district[i]}/i{i}/traffic", json.dumps(reading), qos=1)

    async def wait_uploaded(self, window_end: int, timeout: float = 30.0) -> bool:
        """True once every gateway has closed the window and emptied its outbox."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if time.time() > window_end + GRACE + 0.3 and all(a.outbox.pending() == 0 for a in self.agents):
                return True
            await asyncio.sleep(0.1)
        return False

    async def stop(self) -> None:
        for a in self.agents:
            a.stop()
        await asyncio.gather(*self._runs, return_exceptions=True)
