"""Masks-mode windows at the edge: a closed window's value joins the aggregator's round.

In masks mode there is no report to store and forward: the window's measurement
(after the stream's rules) is masked inside a SecAgg+ round with the other
nodes of the window's cohort (`services.masks_client`).  Each closed window
starts one round in the background; the agent's counters record it as
reported when it starts and acknowledged when the aggregator summed it, or as
a dead letter when the round aborted.  A window whose round is lost cannot be
resent later: its cohort has moved on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from twinmpc.mpc.task import Task
from twinmpc.services.masks_client import MasksRoundClient
from twinmpc.services.masks_credentials import CertificateDirectory, load_client_keys
from twinmpc.services.pki import channel_credentials

from .config import EdgeConfig, EdgeConfigError

log = logging.getLogger("twinmpc.edge")


class MasksWindows:
    """The rounds an edge agent runs, one per closed masks-mode window."""

    def __init__(self, client: MasksRoundClient, metrics: Any) -> None:
        self.client = client
        self.metrics = metrics
        self._running: set[asyncio.Task] = set()

    def start(self, task: Task, window_start: int, measurement: Any, readings: int) -> None:
        self.metrics.windows_reported += 1
        self.metrics.readings_reported += readings
        run = asyncio.get_running_loop().create_task(self._run(task, window_start, measurement, readings), name=f"masks-{window_start}")
        self._running.add(run)
        run.add_done_callback(self._running.discard)

    async def _run(self, task: Task, window_start: int, measurement: Any, readings: int) -> None:
        outcome = await self.client.run(task, window_start, measurement)
        if outcome.status == "summed":
            self.metrics.reports_acked += 1
            self.metrics.readings_acked += readings
            log.info("masks window %d summed by the aggregator (attempt %d)", window_start, outcome.attempt)
        else:
            self.metrics.dead_letters += 1
            log.warning("masks window %d not summed: %s", window_start, outcome.detail)

    async def drain(self) -> None:
        """Wait for every running round (a graceful stop lets them finish)."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self.client.close()


def masks_client(cfg: EdgeConfig) -> MasksRoundClient:
    """This node's masks client: the ``[upload]`` endpoint and certificate, channel key in the outbox directory."""
    if cfg.upload is None:
        raise EdgeConfigError("an [upload] table is needed to run masks-mode streams")
    up = cfg.upload
    keys = load_client_keys(cfg.path(up.cert_file), cfg.path(up.key_file), cfg.path(cfg.outbox.dir))
    creds = channel_credentials(cfg.path(up.cert_file), cfg.path(up.key_file), cfg.path(up.ca_file))
    directory = CertificateDirectory(cfg.path(up.ca_file).read_bytes())
    return MasksRoundClient(up.leader, creds, keys, directory, state_dir=cfg.path(cfg.outbox.dir))


__all__ = ["MasksWindows", "masks_client"]
