"""One aggregator process, wired: its state and one object per role; no protocol here.

==================  =========================================================
role                module
==================  =========================================================
task registry       `services.aggregator.tasks`
upload (leader)     `services.aggregator.upload`
job driver          `services.aggregator.leader_jobs`
peers (leader)      `services.aggregator.peers`, the only gRPC client
collection          `services.aggregator.collection` (leader), `release` (both)
helper              `services.aggregator.helper`
garbage collector   `services.aggregator.garbage_collector` (retention)
admission           `services.aggregator.backpressure` (leader backlog)
==================  =========================================================

The servicers (`services.aggregator.servicers`) decode protobuf, call the role
and map domain errors to gRPC status codes in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from twinmpc.services.aggregator.backpressure import Admission
from twinmpc.services.aggregator.collection import LeaderCollection
from twinmpc.services.aggregator.config import AggregatorConfig
from twinmpc.services.aggregator.garbage_collector import GarbageCollector
from twinmpc.services.aggregator.helper import HelperRole
from twinmpc.services.aggregator.leader_jobs import LeaderJobs
from twinmpc.services.aggregator.peers import HelperPeers
from twinmpc.services.aggregator.state import AggregatorState, open_datastore
from twinmpc.services.aggregator.tasks import TaskRegistry
from twinmpc.services.aggregator.upload import UploadRole


class AggregatorCore:
    def __init__(
        self,
        config: AggregatorConfig,
        *,
        peer_credentials: grpc.ChannelCredentials | None = None,
        clock: Callable[[], float] = time.time,
        worker: int = 0,
    ) -> None:
        self.state = AggregatorState.open(config, clock, worker)
        self.tasks = TaskRegistry(self.state)
        self.peers = HelperPeers(config.limits, peer_credentials)
        self.jobs = LeaderJobs(self.state, self.tasks, self.peers)
        self.admission = Admission(self.state.store, self.state.metrics, config.limits)
        self.upload = UploadRole(self.state, self.tasks, self.jobs, self.admission)
        self.gc = GarbageCollector(self.state, self.tasks)
        self.collection = LeaderCollection(self.state, self.tasks, self.jobs, self.peers)
        self.helper = HelperRole(self.state, self.tasks)
        self.metrics_server = None
        self.metrics_port = 0

    # what operators' tooling and tests read
    @property
    def config(self) -> AggregatorConfig:
        return self.state.config

    @property
    def store(self):
        return self.state.store

    @property
    def metrics(self):
        return self.state.metrics

    @property
    def hpke(self):
        return self.state.hpke

    @property
    def identity(self) -> str:
        return self.state.identity

    def start(self) -> None:
        """Start the leader's job driver (it resumes jobs a previous process left unfinished)."""
        self.jobs.start()
        self.admission.start()
        self.gc.start()

    async def stop(self) -> None:
        await self.gc.stop()
        await self.admission.stop()
        await self.upload.committer.stop()
        await self.jobs.stop()
        await self.peers.close()
        self.state.close()


__all__ = ["AggregatorCore", "open_datastore"]
