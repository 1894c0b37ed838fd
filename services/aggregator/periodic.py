"""A background step run every few seconds on the aggregator's event loop, started and stopped with it.

The garbage collector and the upload admission both need one; a step that fails is
logged and tried again at the next tick (a database hiccup must not stop either).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("twinmpc.aggregator")


class Periodic:
    def __init__(self, name: str, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.interval = interval
        self._step = step
        self._runner: asyncio.Task | None = None

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run_forever(), name=self.name)

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except (asyncio.CancelledError, Exception):
                pass
            self._runner = None

    async def _run_forever(self) -> None:
        while True:
            try:
                await self._step()
            except Exception:  # noqa: BLE001 - logged; the next tick tries again
                log.exception("%s failed; retrying in %.2f s", self.name, self.interval)
            await asyncio.sleep(self.interval)
