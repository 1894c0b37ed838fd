"""Masks mode through a real aggregator process over mTLS: dropouts, aborts, refusals, SIGKILL."""

from __future__ import annotations

import asyncio
import os
import time

import grpc
import numpy as np
import pytest

from twinmpc.mpc.masks import messages as m
from twinmpc.mpc.masks.directory import ClientKeys
from twinmpc.mpc.masks.server import Phase
from twinmpc.mpc.masks.session import Session
from twinmpc.mpc.task import Task, b64encode
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2 as pb
from twinmpc.protos.twinmpc.v1 import twinmpc_pb2_grpc as pb_grpc
from twinmpc.services.aggregator.config import load_aggregator_config
from twinmpc.services.aggregator.masks_journal import RoundJournal
from twinmpc.services.aggregator.state import open_datastore
from twinmpc.services.masks_client import MasksRoundClient
from twinmpc.services.masks_credentials import CertificateDirectory, load_client_keys
from twinmpc.services.twin.local_cluster import LocalCluster

WINDOW = 60
ROUND_SECONDS = 2


@pytest.fixture(scope="module")
def cluster(loop_thread, tmp_path_factory):
    """One aggregator as a real child process (SIGKILL-able), mTLS on loopback."""
    c = LocalCluster(tmp_path_factory.mktemp("masks"), k=1, processes=True)
    loop_thread.run(c.start())
    yield c
    loop_thread.run(c.stop())


def _store(cluster: LocalCluster):
    return open_datastore(load_aggregator_config(cluster.nodes[0].config_path))


def _task(loop_thread, cluster: LocalCluster, clients: int, *, min_batch_size: int = 1, dropout: str = "3/10",
          measurement: dict | None = None) -> Task:
    """A masks task provisioned through TaskAdmin (PutTask) like any other."""
    return loop_thread.run(cluster.provision({
        "measurement": measurement or {"type": "sumvec", "length": 4, "bits": 16},
        "mode": "masks",
        "masks": {"dropout": dropout, "max_clients": clients, "round_seconds": ROUND_SECONDS},
        "window_seconds": WINDOW,
        "min_batch_size": min_batch_size,
    }))


def _window(offset: int = 2) -> int:
    now = int(time.time())
    return now - now % WINDOW - offset * WINDOW


def _clients(cluster: LocalCluster, count: int) -> list[MasksRoundClient]:
    directory = CertificateDirectory((cluster.pki_dir / "ca.crt").read_bytes())
    out = []
    for i in range(count):
        ident = f"edge-m{i:02d}"
        creds = cluster.credentials("edge", ident)
        keys = load_client_keys(cluster.pki_dir / f"{ident}.crt", cluster.pki_dir / f"{ident}.key", cluster.workdir / "edge-state" / ident)
        out.append(MasksRoundClient(cluster.endpoints[0], creds, keys, directory, slack_seconds=5))
    return out


def _run(loop_thread, cluster, task, window, values, drops: dict[int, Phase]):
    async def go():
        clients = _clients(cluster, len(values))
        outcomes = await asyncio.gather(*(
            c.run(task, window, values[i].tolist(), drop_before=drops.get(i)) for i, c in enumerate(clients)
        ))
        for c in clients:
            await c.close()
        return outcomes

    return loop_thread.run(go(), timeout=90)


def _collect(loop_thread, cluster: LocalCluster, task: Task, window: int):
    """(report count, result) through the controller's Collect, as for every mode."""
    async def go():
        async with cluster.collector() as collector:
            res = await collector.collect(task, window)
        return res.report_count, res.result

    return loop_thread.run(go(), timeout=60)


@pytest.mark.parametrize(
    ("drops", "label"),
    [
        ({}, "0%"),
        ({3: Phase.MASKED_INPUT, 11: Phase.UNMASK}, "10%"),
        ({1: Phase.SHARE_KEYS, 4: Phase.MASKED_INPUT, 7: Phase.MASKED_INPUT, 9: Phase.CONFIRM, 13: Phase.CONFIRM,
          16: Phase.UNMASK}, "30%"),
    ],
)
def test_exact_sum_with_dropouts_at_every_round(loop_thread, cluster, drops, label) -> None:
    n = 20
    task = _task(loop_thread, cluster, n)
    window = _window()
    values = np.random.default_rng(len(drops)).integers(0, 1 << 16, size=(n, 4))
    outcomes = _run(loop_thread, cluster, task, window, values, drops)
    summed = [i for i in range(n) if drops.get(i, Phase.DONE) > Phase.MASKED_INPUT]
    assert [o.status for o in outcomes] == ["dropped" if i in drops else "summed" for i in range(n)], outcomes
    count, result = _collect(loop_thread, cluster, task, window)
    assert count == len(summed)
    assert result == values[summed].sum(axis=0).tolist()


def test_round_below_threshold_aborts_and_releases_nothing(loop_thread, cluster) -> None:
    n = 6
    task = _task(loop_thread, cluster, n, min_batch_size=5, dropout="1/5")
    window = _window(3)
    values = np.ones((n, 4), dtype=np.int64)
    outcomes = _run(loop_thread, cluster, task, window, values, {0: Phase.MASKED_INPUT, 1: Phase.MASKED_INPUT})
    for o in outcomes[2:]:
        assert o.status == "aborted" and o.detail.startswith("ABORTED:") and "fewer than the release floor 5" in o.detail, o
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        _collect(loop_thread, cluster, task, window)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()


def _stub(cluster: LocalCluster, role: str, ident: str):
    channel = grpc.aio.secure_channel(cluster.endpoints[0], cluster.credentials(role, ident))
    return channel, pb_grpc.SecureAggregationStub(channel)


async def _status(call) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_replayed_forged_and_misplaced_messages_get_precise_statuses(loop_thread, cluster) -> None:
    task = _task(loop_thread, cluster, 2, min_batch_size=2)
    window = _window(4)
    keys = {}
    for ident in ("edge-m00", "edge-m01"):
        cluster.credentials("edge", ident)
        keys[ident] = load_client_keys(cluster.pki_dir / f"{ident}.crt", cluster.pki_dir / f"{ident}.key", cluster.workdir / "edge-state" / ident)

    def advert(session: Session, identity: str = "edge-m00", mask: bytes = b"\x09" * 32) -> bytes:
        return m.Advertise(session, identity, keys[identity].credential, mask, bytes(32)).encode()

    def req(msg: bytes, w: int = window, attempt: int = 0) -> pb.MasksRoundRequest:
        return pb.MasksRoundRequest(task_id=task.task_id, window_start=w, attempt=attempt, message=msg)

    session = Session(task.task_id, window, 0)

    async def go():
        channel, stub = _stub(cluster, "edge", "edge-m00")
        other_channel, other = _stub(cluster, "edge", "edge-m01")
        ctl_channel, controller = _stub(cluster, "controller", "controller-1")
        open_window = _window(-1)
        results = {
            "controller": await _status(controller.Advertise(req(advert(session)), timeout=5)),
            "garbage": await _status(stub.Advertise(req(b"\x01\x01junk"), timeout=5)),
            "wrong kind": await _status(stub.ShareKeys(req(advert(session)), timeout=5)),
            "open window": await _status(stub.Advertise(req(advert(Session(task.task_id, open_window, 0)), open_window), timeout=5)),
            "not running": await _status(stub.ShareKeys(req(m.ShareKeys(session, 1, ()).encode()), timeout=5)),
            "replayed into another window": await _status(stub.Advertise(req(advert(Session(task.task_id, window - WINDOW, 0))), timeout=5)),
            "impostor": await _status(other.Advertise(req(advert(session, "edge-m00")), timeout=5)),
        }
        first = asyncio.ensure_future(stub.Advertise(req(advert(session)), timeout=ROUND_SECONDS + 5))
        await asyncio.sleep(0.5)
        results["conflicting repeat"] = await _status(stub.Advertise(req(advert(session, mask=b"\x0a" * 32)), timeout=5))
        second = await other.Advertise(req(advert(session, "edge-m01")), timeout=ROUND_SECONDS + 5)  # the cohort is full: closes
        results["roster"] = (grpc.StatusCode.OK, str(m.Roster.decode(second.message).n))
        await first
        results["forged shares"] = await _status(stub.ShareKeys(req(m.ShareKeys(session, 1, ()).encode()), timeout=5))
        results["shares claimed for another client"] = await _status(stub.ShareKeys(req(m.ShareKeys(session, 2, ()).encode()), timeout=5))
        results["threshold missed"] = await _status(other.ShareKeys(req(
            m.ShareKeys(session, 2, ((1, bytes(m.SEALED_SHARE_SIZE)),)).encode()), timeout=ROUND_SECONDS + 5))
        results["after the abort"] = await _status(stub.Advertise(req(advert(session)), timeout=5))
        for ch in (channel, other_channel, ctl_channel):
            await ch.close()
        return results

    results = loop_thread.run(go(), timeout=60)
    expected = {
        "controller": (grpc.StatusCode.PERMISSION_DENIED, "requires role edge"),
        "garbage": (grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
        "wrong kind": (grpc.StatusCode.INVALID_ARGUMENT, "SHARE_KEYS call carries a ShareKeys message"),
        "open window": (grpc.StatusCode.FAILED_PRECONDITION, "closes at"),
        "not running": (grpc.StatusCode.FAILED_PRECONDITION, "start with Advertise"),
        "replayed into another window": (grpc.StatusCode.INVALID_ARGUMENT, "bound to round"),
        "impostor": (grpc.StatusCode.PERMISSION_DENIED, "advertisement names 'edge-m00', the caller is 'edge-m01'"),
        "conflicting repeat": (grpc.StatusCode.ALREADY_EXISTS, "different advertise message"),
        "roster": (grpc.StatusCode.OK, "2"),
        "forged shares": (grpc.StatusCode.INVALID_ARGUMENT, "exactly the sender's neighbours"),
        "shares claimed for another client": (grpc.StatusCode.PERMISSION_DENIED, "claims client 2, the caller is client 1"),
        "threshold missed": (grpc.StatusCode.ABORTED, "1 clients shared keys, fewer than the release floor 2"),
        "after the abort": (grpc.StatusCode.ABORTED, "fewer than the release floor 2"),
    }
    for name, (code, text) in expected.items():
        got_code, got_text = results[name]
        assert got_code == code and text in got_text, (name, results[name])


def test_aggregator_sigkill_mid_round_never_yields_a_wrong_result(loop_thread, cluster) -> None:
    n = 8
    task = _task(loop_thread, cluster, n, dropout="1/4")
    window = _window(5)
    values = np.random.default_rng(5).integers(0, 1 << 16, size=(n, 4))
    session = Session(task.task_id, window, 0)

    async def kill_after_masked_inputs() -> None:
        store = _store(cluster)
        try:
            while True:  # the confirm round waits for client 0 (dropped) until its deadline: kill then
                status = await asyncio.to_thread(RoundJournal(store, session).status)
                if status is not None and len(status.closes) >= 3:
                    break
                await asyncio.sleep(0.05)
        finally:
            store.close()
        cluster.kill(0)
        await asyncio.sleep(0.5)
        await cluster.restart(0)

    async def go():
        clients = _clients(cluster, n)
        killer = asyncio.ensure_future(kill_after_masked_inputs())
        outcomes = await asyncio.gather(*(
            c.run(task, window, values[i].tolist(), drop_before=Phase.CONFIRM if i == 0 else None) for i, c in enumerate(clients)
        ))
        await killer
        for c in clients:
            await c.close()
        return outcomes

    outcomes = loop_thread.run(go(), timeout=90)
    try:
        count, result = _collect(loop_thread, cluster, task, window)
    except grpc.aio.AioRpcError as exc:  # an abort is acceptable (nothing to collect); a wrong sum never is
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and all(o.status != "summed" for o in outcomes[1:]), outcomes
        return
    assert count == n and result == values.sum(axis=0).tolist(), (outcomes, count, result)
    assert all(o.status == "summed" for o in outcomes[1:]), [(o.status, o.attempt, o.detail) for o in outcomes]


def test_a_retry_after_the_round_ended_learns_whether_its_input_was_summed(loop_thread, cluster) -> None:
    """A node whose confirmation arrives after the round finished (a retry delayed past its end)
    is told its input was summed; a node that never sent a masked input, retrying an earlier
    message, gets FAILED_PRECONDITION, never a second chance at the window."""
    n = 8
    task = _task(loop_thread, cluster, n, dropout="1/4")
    window = _window(6)
    values = np.random.default_rng(6).integers(0, 1 << 16, size=(n, 4))
    session = Session(task.task_id, window, 0)
    sent: dict[int, list[pb.MasksRoundRequest]] = {}

    async def round_done() -> None:
        store = _store(cluster)
        try:
            while True:
                status = await asyncio.to_thread(RoundJournal(store, session).status)
                if status is not None and status.outcome != 0:
                    return
                await asyncio.sleep(0.05)
        finally:
            store.close()

    async def go():
        clients = _clients(cluster, n)
        for i, client in enumerate(clients):
            original = client._call

            async def call(rpc, request, round_seconds, i=i, original=original):  # type: ignore[no-untyped-def]
                sent.setdefault(i, []).append(request)
                if i == 1 and len(sent[i]) == 4:  # client 1's confirmation: held back until the round ended
                    await round_done()
                return await original(rpc, request, round_seconds)

            client._call = call
        outcomes = await asyncio.gather(*(
            c.run(task, window, values[i].tolist(), drop_before=Phase.MASKED_INPUT if i == 0 else None)
            for i, c in enumerate(clients)
        ))
        for c in clients:
            await c.close()
        channel, stub = _stub(cluster, "edge", "edge-m00")
        late = await _status(stub.ShareKeys(sent[0][1], timeout=5))
        await channel.close()
        return outcomes, late

    outcomes, late = loop_thread.run(go(), timeout=90)
    assert outcomes[0].status == "dropped"
    assert outcomes[1].status == "summed" and "ended while this node retried CONFIRM" in outcomes[1].detail, outcomes[1]
    assert all(o.status == "summed" and not o.detail for o in outcomes[2:]), outcomes
    assert late[0] == grpc.StatusCode.FAILED_PRECONDITION and "finished without 'edge-m00'" in late[1], late
    count, result = _collect(loop_thread, cluster, task, window)
    assert count == n - 1 and result == values[1:].sum(axis=0).tolist()


def test_edge_agents_in_masks_mode_sum_their_windows(loop_thread, cluster, tmp_path) -> None:
    """Three edge agents (config with a masks-mode task) close a window into one round; MQTT input replaced by handle_message."""
    from twinmpc.services.edge.agent import EdgeAgent
    from twinmpc.services.edge.config import parse_edge_config
    from twinmpc.services.edge.masks import MasksWindows, masks_client

    task = _task(loop_thread, cluster, 3, measurement={"type": "sum", "bits": 8})
    window = _window(6)
    (tmp_path / "task.json").write_text(task.to_json())
    pki = cluster.pki_dir
    counts = [3, 5, 11]

    now = [window + 30.0]  # inside the window while readings arrive, then past its end and grace

    async def go():
        agents = []
        for i, count in enumerate(counts):
            ident = f"edge-a{i}"
            cluster.credentials("edge", ident)
            cfg = parse_edge_config(f"""
node_id = "{ident}"
[mqtt]
host = "127.0.0.1"
[outbox]
dir = "state-{ident}"
[upload]
leader = "{cluster.endpoints[0]}"
ca_file = "{pki / 'ca.crt'}"
cert_file = "{pki / f'{ident}.crt'}"
key_file = "{pki / f'{ident}.key'}"
[[streams]]
name = "counts"
topics = ["city/+/count"]
task = "task.json"
grace_seconds = 1
[streams.measurement]
field = "count"
combine = "sum"
""", base_dir=tmp_path)
            agent = EdgeAgent(cfg, uploader=None, clock=lambda: now[0])
            agent.masks = MasksWindows(masks_client(cfg), agent.metrics)
            agent.handle_message("city/s1/count", f'{{"ts": {window + 5}, "count": {count}}}'.encode())
            agents.append(agent)
        now[0] = window + WINDOW + 2
        for agent in agents:
            assert agent.close_due_windows() == 1
        for agent in agents:
            await agent.masks.close()
            agent.outbox.close()
        return [a.metrics.reports_acked for a in agents]

    assert loop_thread.run(go(), timeout=60) == [1, 1, 1]
    assert _collect(loop_thread, cluster, task, window) == (3, sum(counts))


def test_task_card_and_demo_in_masks_mode(loop_thread, tmp_path) -> None:
    """`twinmpc task card` states the mode's terms; `twinmpc demo --mode masks` runs a small city exactly."""
    import json
    import subprocess
    import sys

    from twinmpc.crypto.seal import HpkeKeypair

    task = Task.from_dict({
        "task_id": b64encode(os.urandom(32)), "measurement": {"type": "sum", "bits": 8}, "mode": "masks",
        "aggregators": [{"endpoint": "127.0.0.1:1"}], "collector_hpke_config": b64encode(HpkeKeypair.generate(0).config.encode()),
        "window_seconds": 60, "min_batch_size": 10, "dp": {"algo": "discrete-gaussian", "epsilon": 1, "delta": 1e-9},
    })
    (tmp_path / "task.json").write_text(task.to_json())
    run = subprocess.run([sys.executable, "-m", "twinmpc.services.cli", "task", "card", "--task", str(tmp_path / "task.json")],
                         capture_output=True, text=True, timeout=60, check=True)
    card = json.loads(run.stdout)["masks"]
    assert card["validity_proofs"] == "none in this mode" and "prio3" in card["poisoning"] and "accuracy_cost" in card["noise"]
    demo = subprocess.run([sys.executable, "-m", "twinmpc.services.cli", "demo", "--mode", "masks", "--intersections", "10",
                           "--windows", "1", "--workdir", str(tmp_path / "demo")], capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0 and "all results exact" in demo.stdout, demo.stdout + demo.stderr
