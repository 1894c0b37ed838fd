"""The leader clients' shared channel lifecycle: `async with` closes the one channel.

Uploads and collections through a real leader run in tests/e2e; here only what
`UploadClient` and `Collector` share: leaving the block (normally or by an
exception) closes the channel, after which a call is a usage error, not a hang
or a silent reconnect.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from twinmpc.mpc.client import shard_report
from twinmpc.services.client import Collector, UploadClient
from tests.helpers import make_task

UNUSED = "127.0.0.1:1"  # never dialled: a closed channel refuses before connecting


def _upload_call(kit):
    report = shard_report(kit.task, 1)
    return lambda client: client.upload(kit.task.task_id, report)


def _collect_call(kit):
    return lambda client: client.collect(kit.task, 0)


@pytest.mark.parametrize(
    ("make", "call"),
    [
        (lambda kit: UploadClient(UNUSED, grpc.ssl_channel_credentials()), _upload_call),
        (lambda kit: Collector(UNUSED, grpc.ssl_channel_credentials(), kit.collector_key), _collect_call),
    ],
    ids=["upload", "collector"],
)
@pytest.mark.parametrize("leave_by_error", [False, True], ids=["normally", "by-error"])
def test_leaving_async_with_closes_the_channel(make, call, leave_by_error: bool) -> None:
    kit = make_task({"type": "count"})

    async def run() -> None:
        client = make(kit)
        try:
            async with client as entered:
                assert entered is client
                if leave_by_error:
                    raise KeyError("left early")
        except KeyError:
            pass
        with pytest.raises(grpc.aio.UsageError, match="closed"):
            await call(kit)(client)

    asyncio.run(run())
