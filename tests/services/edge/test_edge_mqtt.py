"""Edge agent end to end: real mosquitto -> agent -> outbox -> real aggregators (mTLS) -> collector.

The agent runs on the shared test event loop (tests/loop_thread.py) with a
settable clock, so windows close when a test says so; the aggregators run on
their own wall clock, which is why readings are placed in windows that are
already closed in real time (as tests/service_utils.past_window does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
from tests.paths import REPO, OUR_VECTORS, VDAF_VECTORS  # noqa: F401
import pytest

from twinmpc.mpc.report import Report
from twinmpc.services.client import UploadOutcome
from twinmpc.services.edge.agent import EdgeAgent
from twinmpc.services.edge.config import parse_edge_config
from twinmpc.services.twin.local_cluster import LocalCluster
from tests.fixtures.mosquitto import Broker
from tests.helpers import make_task
from tests.service_utils import collect, provision
from tests.services.edge.test_edge_outbox import FakeClock, InProcessAggregators

WINDOW = 60
PII = ["M-XY 4711", "de:ad:be:ef:00:01", "0.8812,-0.1234,0.5567", "SECRET-OWNER-NAME"]


def past_window(back: int) -> int:
    now = int(time.time())
    return now - now % WINDOW - back * WINDOW


def edge_toml(
    broker: Broker, outbox: Path, task_file: Path, *, extra_mqtt: str = "", max_reports: int = 1000, k: int = 2
) -> str:
    return f"""
node_id = "cabinet-7"

[mqtt]
host = "{broker.host}"
port = {broker.port}
qos = 1
max_payload_bytes = 4096
reconnect_initial_seconds = 0.1
reconnect_max_seconds = 0.5
{extra_mqtt}

[outbox]
dir = "{outbox}"
max_reports = {max_reports}
batch_size = 16
retry_initial_seconds = 0.1
retry_max_seconds = 0.4
tick_seconds = 0.05

[[streams]]
name = "traffic"
topics = ["city/traffic/+/count"]
task = "{task_file}"
grace_seconds = 1

[[streams.rules]]
rule = "drop"
fields = ["plate", "mac", "face_embedding"]

[[streams.rules]]
rule = "clip"
field = "count"
min = 0
max = 50

[[streams.rules]]
rule = "suppress_below_k"
zone = "zone"
contributor = "sensor_id"
k = {k}

[[streams.rules]]
rule = "keep"
fields = ["ts", "zone", "count"]

[streams.measurement]
field = "count"
combine = "sum"
"""


class RecordingUploader:
    """Delegates to a real uploader and keeps the exact bytes that left the node."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.sent: list[bytes] = []

    async def upload_batch(self, task_id: bytes, reports: list[Report]) -> list[UploadOutcome]:
        self.sent.extend(r.encode() for r in reports)
        return await self.inner.upload_batch(task_id, reports)


def wait_for(pred: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class RunningAgent:
    """An EdgeAgent running on the shared loop thread until stop()."""

    def __init__(self, loop_thread, agent: EdgeAgent) -> None:
        self.lt = loop_thread
        self.agent = agent
        self.future = asyncio.run_coroutine_threadsafe(agent.run(), loop_thread.loop)
        wait_for(lambda: agent.source is not None and agent.source.connected.is_set() or self.future.done(), what="MQTT subscribe")
        if self.future.done():
            self.future.result()

    def stop(self) -> None:
        self.lt.loop.call_soon_threadsafe(self.agent.stop)
        self.future.result(30)


def publish(loop_thread, broker: Broker, messages: list[tuple[str, bytes]], **kwargs) -> None:
    async def go():
        async with aiomqtt.Client(broker.host, broker.port, **kwargs) as client:
            for topic, payload in messages:
                await client.publish(topic, payload, qos=1)

    loop_thread.run(go())


def reading(sensor: str, zone: int, count, ts: int, **extra) -> tuple[str, bytes]:
    body = {"sensor_id": sensor, "zone": zone, "count": count, "ts": ts, **extra}
    return f"city/traffic/{sensor}/count", json.dumps(body).encode()


def with_pii(sensor: str, zone: int, count, ts: int) -> tuple[str, bytes]:
    return reading(sensor, zone, count, ts, plate=PII[0], mac=PII[1], face_embedding=PII[2], owner=PII[3])


def upload_client(loop_thread, cluster: LocalCluster):
    """A real mTLS UploadClient, created on the loop that will use its channel."""

    async def make():
        return cluster.upload_client("edge-cabinet-7")

    return loop_thread.run(make())


def write_task(tmp_path: Path, task) -> Path:
    path = tmp_path / "task.json"
    path.write_text(task.to_json())
    return path


# --------------------------------------------------------------------------- through real aggregators


def test_readings_minimised_windowed_and_summed_by_real_aggregators(loop_thread, cluster2, mosquitto_broker, tmp_path, caplog):
    task = provision(loop_thread, cluster2, {"type": "sum", "bits": 16})
    w1, w2 = past_window(3), past_window(2)
    cfg = parse_edge_config(edge_toml(mosquitto_broker, tmp_path / "ob", write_task(tmp_path, task)))
    clock = FakeClock(w1 + 1)
    client = upload_client(loop_thread, cluster2)
    uploader = RecordingUploader(client)
    caplog.set_level(logging.DEBUG)
    running = RunningAgent(loop_thread, EdgeAgent(cfg, uploader=uploader, clock=clock))
    agent = running.agent
    try:
        msgs = [
            # window 1, zone 3: three sensors (k=2 met); 75 is clipped to 50
            with_pii("s1", 3, 10, w1 + 1), with_pii("s2", 3, 75, w1 + 5), with_pii("s3", 3, 4, w1 + 9),
            # window 1, zone 8: a single sensor twice -> suppressed (1 contributor < k)
            with_pii("s4", 8, 30, w1 + 2), with_pii("s4", 8, 30, w1 + 3),
            # window 2, zone 3: two sensors
            with_pii("s1", 3, 7, w2 + 1), with_pii("s2", 3, 8, w2 + 30),
        ]
        publish(loop_thread, mosquitto_broker, msgs)
        wait_for(lambda: agent.metrics.messages == len(msgs), what="all messages")
        assert agent.metrics.readings_accepted == 7
        clock.now = w2 + WINDOW + 1  # both windows closed (grace 1 s)
        wait_for(lambda: agent.metrics.reports_acked == 2, what="two acknowledged reports")
        m = agent.metrics
        assert (m.windows_reported, m.readings_reported, m.suppressed_zones, m.suppressed_readings) == (2, 5, 1, 2)
        assert agent.outbox.pending() == 0
        assert [(ws, status, n) for _, ws, status, n in agent.outbox.windows()] == [(w1, "acked", 3), (w2, "acked", 2)]
    finally:
        running.stop()
        loop_thread.run(client.close())
    r1, r2 = collect(loop_thread, cluster2, task, w1), collect(loop_thread, cluster2, task, w2)
    assert (r1.result, r1.report_count) == (10 + 50 + 4, 1)  # one report per (task, window, node)
    assert (r2.result, r2.report_count) == (15, 1)

    # Raw PII never leaves the agent: not in what was uploaded, not in the outbox files, not in logs.
    assert len(uploader.sent) == 2
    # the report time is coarse: the window's last second, nothing finer
    assert sorted(Report.decode(b).time for b in uploader.sent) == [w1 + WINDOW - 1, w2 + WINDOW - 1]
    stored = b"".join(p.read_bytes() for p in (tmp_path / "ob").iterdir() if p.is_file())
    for secret in PII + ["sensor_id"]:  # long needles: a 2-byte one ("s1") occurs in random ciphertext by chance
        needle = secret.encode()
        assert all(needle not in sent for sent in uploader.sent)
        assert needle not in stored
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "twinmpc.edge.mqtt.client")
    for secret in PII:
        assert secret not in ours


def test_aggregator_killed_mid_stream_and_restarted_counts_every_reading_once(loop_thread, mosquitto_broker, tmp_path_factory, tmp_path):
    cluster = LocalCluster(tmp_path_factory.mktemp("edge-kill-cluster"), k=2, processes=True)
    loop_thread.run(cluster.start())
    try:
        task = loop_thread.run(
            cluster.provision({"measurement": {"type": "sum", "bits": 16}, "window_seconds": WINDOW, "min_batch_size": 1, "max_skew_seconds": 3600})
        )
        w = [past_window(b) for b in (4, 3, 2)]
        cfg = parse_edge_config(edge_toml(mosquitto_broker, tmp_path / "ob", write_task(tmp_path, task)))
        clock = FakeClock(w[0] + 1)
        client = upload_client(loop_thread, cluster)
        running = RunningAgent(loop_thread, EdgeAgent(cfg, uploader=client, clock=clock))
        agent = running.agent
        expected = {}
        for i, ws in enumerate(w):
            counts = [i + 1, 2 * i + 3]
            expected[ws] = sum(counts)
            msgs = [reading("a", 1, counts[0], ws + 1), reading("b", 1, counts[1], ws + 2)]
            publish(loop_thread, mosquitto_broker, msgs)
            wait_for(lambda n=2 * (i + 1): agent.metrics.messages == n, what="messages")
            if i == 1:
                cluster.kill(0)  # SIGKILL the leader mid-stream
            clock.now = ws + WINDOW + 1
            if i == 0:
                wait_for(lambda: agent.metrics.reports_acked == 1, what="first window acknowledged")
        wait_for(lambda: agent.metrics.upload_retries >= 2, what="retries while the leader is down")
        assert agent.outbox.pending() == 2  # stored, not lost, while the leader is down
        running.stop()  # the agent restarts too: its outbox must drain after restart
        loop_thread.run(client.close())

        loop_thread.run(cluster.restart(0))
        client = upload_client(loop_thread, cluster)
        running = RunningAgent(loop_thread, EdgeAgent(cfg, uploader=client, clock=clock))
        agent = running.agent
        assert agent.outbox.pending() == 2
        clock.now += 1  # past the (fake-time) backoff
        wait_for(lambda: agent.outbox.pending() == 0, timeout=40, what="outbox drained after restart")
        running.stop()
        loop_thread.run(client.close())

        async def collect_all():
            async with cluster.collector() as c:
                return [await c.collect(task, ws) for ws in w]

        results = loop_thread.run(collect_all())
        assert [(r.result, r.report_count) for r in results] == [(expected[ws], 1) for ws in w]
    finally:
        loop_thread.run(cluster.stop())


# --------------------------------------------------------------------------- agent behaviour (in-process protocol aggregator)


@pytest.fixture(scope="module")
def sum_kit():
    return make_task({"type": "sum", "bits": 16}, window_seconds=WINDOW, max_skew_seconds=3600)


def test_malformed_payloads_are_counted_logged_without_content_and_skipped(loop_thread, mosquitto_broker, sum_kit, tmp_path, caplog):
    ws = past_window(2)
    cfg = parse_edge_config(edge_toml(mosquitto_broker, tmp_path / "ob", write_task(tmp_path, sum_kit.task)))
    clock = FakeClock(ws + 1)
    up = InProcessAggregators({sum_kit.task.task_id: sum_kit})
    caplog.set_level(logging.DEBUG, logger="twinmpc.edge")
    running = RunningAgent(loop_thread, EdgeAgent(cfg, uploader=up, clock=clock))
    agent = running.agent
    topic = "city/traffic/x/count"
    bad = [
        (topic, b'{"count": 3, "plate": "SECRET-OWNER-NAME"'),  # truncated JSON
        (topic, b"\xff\xfe\x00garbage"),  # not UTF-8
        (topic, b"[1, 2, 3]"),  # not an object
        (topic, b'{"count": NaN, "sensor_id": "a", "zone": 1}'),  # NaN
        (topic, b"[" * 3000 + b"]" * 1000),  # deeply nested (and invalid)
        (topic, b'{"pad": "' + b"x" * 5000 + b'"}'),  # over max_payload_bytes
        (topic, json.dumps({"sensor_id": "a", "zone": 1, "count": "SECRET-OWNER-NAME", "ts": ws + 1}).encode()),
        (topic, json.dumps({"sensor_id": "a", "zone": 1, "ts": ws + 1}).encode()),  # no count
        (topic, json.dumps({"sensor_id": "a", "zone": 1, "count": 2.5, "ts": ws + 1}).encode()),
        (topic, json.dumps({"sensor_id": "a", "zone": 1, "count": 1, "ts": ws - 10 * WINDOW}).encode()),  # stale
        (topic, json.dumps({"zone": 1, "count": 1, "ts": ws + 1}).encode()),  # no contributor
        (topic, b""),
    ]
    good = [reading("a", 1, 4, ws + 3), reading("b", 1, 5, ws + 4)]
    try:
        publish(loop_thread, mosquitto_broker, bad + good)
        wait_for(lambda: agent.metrics.messages == len(bad) + len(good), what="all messages")
        assert not running.future.done()  # still running
        rejected = agent.metrics.rejected
        assert rejected["bad_json"] == 5 and rejected["not_object"] == 1 and rejected["too_large"] == 1
        assert rejected["bad_type"] == 1 and rejected["missing_field"] == 2 and rejected["non_integer"] == 1
        assert rejected["stale"] == 1 and sum(rejected.values()) == len(bad)
        assert agent.metrics.readings_accepted == 2
        clock.now = ws + WINDOW + 1
        wait_for(lambda: agent.metrics.reports_acked == 1, what="the good window acknowledged")
    finally:
        running.stop()
    assert up.collect(sum_kit.task.task_id, ws).result == 9
    # paho's own protocol trace (DEBUG, logger twinmpc.edge.mqtt.client) names topics; ours never does.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "twinmpc.edge.mqtt.client")
    assert "SECRET-OWNER-NAME" not in caplog.text and "garbage" not in caplog.text
    assert "stream traffic: message rejected: bad_json" in ours
    assert "city/traffic/x" not in ours  # concrete topics may carry device ids


def test_full_outbox_refuses_new_windows_with_an_alarm_then_recovers(loop_thread, mosquitto_broker, sum_kit, tmp_path, caplog):
    w = [past_window(b) for b in (4, 3, 2)]
    cfg = parse_edge_config(edge_toml(mosquitto_broker, tmp_path / "ob", write_task(tmp_path, sum_kit.task), max_reports=1))
    clock = FakeClock(w[0] + 1)
    up = InProcessAggregators({sum_kit.task.task_id: sum_kit}, down=True)
    running = RunningAgent(loop_thread, EdgeAgent(cfg, uploader=up, clock=clock))
    agent = running.agent
    try:
        for i, ws in enumerate(w):
            publish(loop_thread, mosquitto_broker, [reading("a", 1, 1, ws + 1), reading("b", 1, 2, ws + 1)])
            wait_for(lambda n=2 * (i + 1): agent.metrics.messages == n, what="messages")
            clock.now = ws + WINDOW + 1
            wait_for(lambda n=i: agent.metrics.windows_reported + agent.metrics.windows_refused == n + 1, what="window closed")
        m = agent.metrics
        assert (m.windows_reported, m.windows_refused, m.readings_refused, m.outbox_full) == (1, 2, 4, True)
        assert "ALARM outbox full" in caplog.text
        assert [status for _, _, status, _ in agent.outbox.windows()] == ["pending", "refused", "refused"]
        up.down = False
        clock.now += 1  # past the (fake-time) backoff
        wait_for(lambda: agent.metrics.reports_acked == 1, what="queued report delivered")
        assert agent.metrics.outbox_full is False
    finally:
        running.stop()
    assert up.windows(sum_kit.task.task_id) == [w[0]] and up.collect(sum_kit.task.task_id, w[0]).result == 3


def test_tls_and_password_broker(loop_thread, secure_mosquitto, sum_kit, tmp_path):
    ws = past_window(2)
    pw = tmp_path / "mqtt.pass"
    pw.write_text(secure_mosquitto.password + "\n")
    os.chmod(pw, 0o600)
    extra = f'username = "{secure_mosquitto.username}"\npassword_file = "{pw}"\n[mqtt.tls]\nca_file = "{secure_mosquitto.ca_file}"\n'
    text = edge_toml(secure_mosquitto, tmp_path / "ob", write_task(tmp_path, sum_kit.task), extra_mqtt=extra)
    text = text.replace(f'host = "{secure_mosquitto.host}"', 'host = "localhost"')
    cfg = parse_edge_config(text)
    clock = FakeClock(ws + 1)
    up = InProcessAggregators({sum_kit.task.task_id: sum_kit})
    running = RunningAgent(loop_thread, EdgeAgent(cfg, uploader=up, clock=clock))
    agent = running.agent
    try:
        import ssl

        tls = ssl.create_default_context(cafile=str(secure_mosquitto.ca_file))
        creds = {"username": secure_mosquitto.username, "password": secure_mosquitto.password, "tls_context": tls}
        secure = Broker("localhost", secure_mosquitto.port, secure_mosquitto.workdir, secure_mosquitto.config_file, "")
        publish(loop_thread, secure, [reading("a", 2, 6, ws + 1), reading("b", 2, 1, ws + 2)], **creds)
        wait_for(lambda: agent.metrics.readings_accepted == 2, what="readings over TLS")
    finally:
        running.stop()

    # Wrong password: the agent keeps retrying instead of crashing, and never subscribes.
    pw.write_text("wrong\n")
    bad_cfg = parse_edge_config(text.replace(str(tmp_path / "ob"), str(tmp_path / "ob2")))
    agent = EdgeAgent(bad_cfg, uploader=up, clock=clock)
    future = asyncio.run_coroutine_threadsafe(agent.run(), loop_thread.loop)
    wait_for(lambda: agent.source is not None and agent.source.disconnects >= 2, what="refused reconnect attempts")
    assert not future.done() and not agent.source.connected.is_set()
    loop_thread.loop.call_soon_threadsafe(agent.stop)
    future.result(30)


def test_graceful_restart_keeps_open_windows_and_the_broker_session(loop_thread, mosquitto_broker, sum_kit, tmp_path):
    """Stop mid-window, publish while the agent is down, restart: one report, k counted on distinct sensors."""
    ws = past_window(2)
    text = edge_toml(mosquitto_broker, tmp_path / "ob", write_task(tmp_path, sum_kit.task), k=3,
                     extra_mqtt='client_id = "edge-restart-test"')
    cfg = parse_edge_config(text)
    clock = FakeClock(ws + 1)
    up = InProcessAggregators({sum_kit.task.task_id: sum_kit})
    running = RunningAgent(loop_thread, EdgeAgent(cfg, uploader=up, clock=clock))
    before = [reading("a", 1, 1, ws + 1), reading("b", 1, 2, ws + 2), reading("a", 2, 10, ws + 1), reading("b", 2, 20, ws + 2)]
    publish(loop_thread, mosquitto_broker, before)
    wait_for(lambda: running.agent.metrics.readings_accepted == 4, what="readings before the stop")
    running.stop()
    assert up.calls == 0  # nothing reported: the window is still open
    # While the agent is down the broker keeps QoS 1 messages for its persistent session.
    after = [reading("a", 1, 4, ws + 5), reading("c", 2, 30, ws + 5)]
    publish(loop_thread, mosquitto_broker, after)
    running = RunningAgent(loop_thread, EdgeAgent(cfg, uploader=up, clock=clock))
    agent = running.agent
    try:
        wait_for(lambda: agent.metrics.readings_accepted == 2, what="messages queued while down")
        clock.now = ws + WINDOW + 1
        wait_for(lambda: agent.metrics.reports_acked == 1, what="the window's single report")
        # zone 1 saw sensors {a, b} (a twice across the restart): 2 < k=3, suppressed;
        # zone 2 saw {a, b, c}: kept.
        assert (agent.metrics.suppressed_zones, agent.metrics.suppressed_readings) == (1, 3)
        assert agent.outbox.open_windows() == []
    finally:
        running.stop()
    assert up.collect(sum_kit.task.task_id, ws).result == 60
    assert up.collect(sum_kit.task.task_id, ws).report_count == 1


def test_agent_reconnects_after_a_broker_restart(loop_thread, mosquitto_broker, sum_kit, tmp_path):
    ws = past_window(2)
    cfg = parse_edge_config(edge_toml(mosquitto_broker, tmp_path / "ob", write_task(tmp_path, sum_kit.task)))
    clock = FakeClock(ws + 1)
    running = RunningAgent(loop_thread, EdgeAgent(cfg, uploader=InProcessAggregators({}), clock=clock))
    agent = running.agent
    try:
        mosquitto_broker.stop()
        wait_for(lambda: agent.source.disconnects >= 1, what="disconnect noticed")
        mosquitto_broker.start()
        wait_for(lambda: agent.source.connects >= 2 and agent.source.connected.is_set(), what="reconnect")
        publish(loop_thread, mosquitto_broker, [reading("a", 1, 1, ws + 1)])
        wait_for(lambda: agent.metrics.readings_accepted == 1, what="reading after reconnect")
    finally:
        running.stop()


# --------------------------------------------------------------------------- agent start-up and windowing without a broker


def agent_cfg(tmp_path: Path, task_ref: str, rules: str = "", measurement: str = 'field = "v"', upload: str = ""):
    text = f"""
node_id = "n"
[mqtt]
host = "127.0.0.1"
[outbox]
dir = "{tmp_path / 'ob'}"
{upload}
[[streams]]
name = "s"
topics = ["t/#"]
task = "{task_ref}"
grace_seconds = 0
{rules}
[streams.measurement]
{measurement}
"""
    return parse_edge_config(text, base_dir=tmp_path)


def test_agent_startup_rejects_unusable_tasks(tmp_path, sum_kit):
    from dataclasses import replace

    from twinmpc.services.edge.agent import run_edge_agent
    from twinmpc.services.edge.config import EdgeConfigError

    up = InProcessAggregators({})
    with pytest.raises(EdgeConfigError, match="cannot read task"):
        EdgeAgent(agent_cfg(tmp_path, "missing.json"), uploader=up)
    (tmp_path / "bad.json").write_text('{"task_id": 1}')
    with pytest.raises(EdgeConfigError, match="bad.json"):
        EdgeAgent(agent_cfg(tmp_path, "bad.json"), uploader=up)
    (tmp_path / "bad.toml").write_text("task_id = ")
    with pytest.raises(EdgeConfigError, match="bad.toml"):
        EdgeAgent(agent_cfg(tmp_path, "bad.toml"), uploader=up)
    cfg = agent_cfg(tmp_path, "x")
    paillier = replace(sum_kit.task, mode="paillier", he_public_key=b"k")
    with pytest.raises(EdgeConfigError, match="mode 'paillier'"):
        EdgeAgent(cfg, uploader=up, tasks={"s": paillier})
    fpv = make_task({"type": "fixedpointvec", "length": 2, "frac_bits": 8, "clip": 1.0}).task
    with pytest.raises(EdgeConfigError, match="fixedpointvec"):
        EdgeAgent(cfg, uploader=up, tasks={"s": fpv})
    vec = make_task({"type": "sumvec", "length": 3, "bits": 4}).task
    with pytest.raises(EdgeConfigError, match="needs measurement.index"):
        EdgeAgent(cfg, uploader=up, tasks={"s": vec})
    with pytest.raises(EdgeConfigError, match="only for sumvec"):
        EdgeAgent(agent_cfg(tmp_path, "x", measurement='field = "v"\nindex = "i"'), uploader=up, tasks={"s": sum_kit.task})
    noisy = agent_cfg(
        tmp_path, "x", rules="rules = ['{\"rule\": \"local_noise\", \"mechanism\": \"discrete_laplace\", \"sensitivity\": 1, \"epsilon\": 1}']"
    )
    hist = make_task({"type": "histogram", "buckets": 4}).task
    with pytest.raises(EdgeConfigError, match="local_noise needs"):
        EdgeAgent(noisy, uploader=up, tasks={"s": hist})
    (tmp_path / "edge.toml").write_text('node_id = "n"\n[mqtt]\nhost = "h"\n[outbox]\ndir = "ob"\n[[streams]]\nname = "s"\ntopics = ["t"]\ntask = "x"\n[streams.measurement]\nfield = "v"\n')
    with pytest.raises(EdgeConfigError, match=r"\[upload\]"):
        asyncio.run(run_edge_agent(str(tmp_path / "edge.toml")))


def _drive(agent: EdgeAgent, messages: list[dict], close_at: int) -> None:
    for body in messages:
        agent.handle_message("t/x", json.dumps(body).encode())
    agent.close_due_windows(close_at)
    asyncio.run(agent.drain())


def test_sumvec_and_histogram_windows_through_the_protocol(tmp_path):
    ws = past_window(2)
    vec_kit = make_task({"type": "sumvec", "length": 4, "bits": 8}, window_seconds=WINDOW)
    hist_kit = make_task({"type": "histogram", "buckets": 4}, window_seconds=WINDOW)
    up = InProcessAggregators({vec_kit.task.task_id: vec_kit, hist_kit.task.task_id: hist_kit})
    clock = FakeClock(ws + 1)
    vec = EdgeAgent(
        agent_cfg(tmp_path / "v", "x", measurement='field = "v"\nindex = "zone"\ncombine = "sum"'),
        uploader=up, tasks={"s": vec_kit.task}, clock=clock,
    )
    _drive(vec, [{"zone": 0, "v": 2, "ts": ws}, {"zone": 3, "v": 250, "ts": ws + 1}, {"zone": 3, "v": 10, "ts": ws + 2},
                 {"zone": 9, "v": 1, "ts": ws}], ws + WINDOW)
    assert vec.metrics.rejected["bad_index"] == 1 and vec.metrics.windows_clamped == 1
    assert up.collect(vec_kit.task.task_id, ws).result == [2, 0, 0, 255]  # 260 clamped to 2^8-1

    rules = "rules = ['{\"rule\": \"bucket\", \"field\": \"speed\", \"edges\": [20, 40, 60], \"into\": \"v\"}']"
    hist = EdgeAgent(
        agent_cfg(tmp_path / "h", "x", rules=rules, measurement='field = "v"\ncombine = "min"'),
        uploader=up, tasks={"s": hist_kit.task}, clock=clock,
    )
    _drive(hist, [{"speed": 55, "ts": ws}, {"speed": 12, "ts": ws + 3}, {"speed": 70, "ts": ws + 4}], ws + WINDOW)
    assert up.collect(hist_kit.task.task_id, ws).result == [1, 0, 0, 0]  # slowest level seen: bucket 0


def test_local_noise_is_added_before_upload(tmp_path):
    import numpy as np

    from twinmpc.crypto import dp_noise

    ws = past_window(2)
    kit = make_task({"type": "sum", "bits": 16}, window_seconds=WINDOW)
    up = InProcessAggregators({kit.task.task_id: kit})
    rules = "rules = ['{\"rule\": \"local_noise\", \"mechanism\": \"discrete_laplace\", \"sensitivity\": 10, \"epsilon\": \"0.5\"}']"
    agent = EdgeAgent(
        agent_cfg(tmp_path, "x", rules=rules), uploader=up, tasks={"s": kit.task}, clock=FakeClock(ws + 1),
        noise_rng=np.random.default_rng(11),
    )
    _drive(agent, [{"v": 1000, "ts": ws}, {"v": 234, "ts": ws + 1}], ws + WINDOW)
    noise = int(dp_noise.discrete_laplace_batch(20, 1, np.random.default_rng(11))[0])
    assert noise != 0 and up.collect(kit.task.task_id, ws).result == 1234 + noise


def test_run_edge_agent_process_uploads_over_mtls_and_stops_gracefully_on_sigterm(loop_thread, cluster2, mosquitto_broker, tmp_path):
    """The production entry point in its own process: config -> UploadClient (edge cert) -> leader; SIGTERM saves state."""
    import signal
    import sqlite3
    import subprocess
    import sys

    task = loop_thread.run(
        cluster2.provision({"measurement": {"type": "sum", "bits": 16}, "window_seconds": 2, "min_batch_size": 1, "max_skew_seconds": 3600})
    )
    cluster2.credentials("edge", "edge-proc")  # issues pki/edge-proc.crt + key
    pki = cluster2.pki_dir
    text = edge_toml(mosquitto_broker, tmp_path / "ob", write_task(tmp_path, task))
    text = text.replace("grace_seconds = 1", "grace_seconds = 1\nmax_skew_seconds = 300")
    text += f"""
[upload]
leader = "{cluster2.endpoints[0]}"
ca_file = "{pki / 'ca.crt'}"
cert_file = "{pki / 'edge-proc.crt'}"
key_file = "{pki / 'edge-proc.key'}"
"""
    (tmp_path / "edge.toml").write_text(text)
    log = tmp_path / "agent.log"
    code = (
        "import asyncio, logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr); "
        "from twinmpc.services.edge import run_edge_agent; asyncio.run(run_edge_agent(sys.argv[1]))"
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "edge.toml")], stderr=out, cwd=REPO)
    try:
        wait_for(lambda: b"subscribed to" in log.read_bytes() or proc.poll() is not None, what="agent process subscribed")
        assert proc.poll() is None, log.read_text()
        now = int(time.time())
        publish(loop_thread, mosquitto_broker, [reading("a", 1, 5, now), reading("b", 1, 6, now), reading("c", 1, 7, now)])
        db = tmp_path / "ob" / "outbox.sqlite3"

        def acked() -> list[int]:
            with sqlite3.connect(db) as c:
                return [ws for (ws,) in c.execute("SELECT window_start FROM windows WHERE status = 'acked'")]

        wait_for(lambda: len(acked()) == 1, what="report acknowledged by the leader")
        [ws] = acked()
        assert ws == now - now % 2
        future_ts = now + 60  # a window that stays open until the stop
        publish(loop_thread, mosquitto_broker, [reading("a", 1, 1, future_ts)])
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"saved 1 readings of still-open windows" in log.read_bytes()
    with sqlite3.connect(db) as c:
        assert [w for (w,) in c.execute("SELECT window_start FROM open_windows")] == [future_ts - future_ts % 2]
    time.sleep(max(0.0, ws + 2 - time.time()) + 0.05)
    result = collect(loop_thread, cluster2, task, ws)
    assert (result.result, result.report_count) == (18, 1)


def test_handle_message_never_raises_on_odd_topics(tmp_path, sum_kit):
    agent = EdgeAgent(agent_cfg(tmp_path, "x"), uploader=InProcessAggregators({}), tasks={"s": sum_kit.task})
    for topic in ("", "t/+/x", "other/topic", "t/#"):
        agent.handle_message(topic, b'{"v": 1}')
    assert agent.metrics.rejected["no_stream"] == 4 and agent.metrics.readings_accepted == 0
    agent.handle_message("t/ok", b'{"v": 1}')
    assert agent.metrics.readings_accepted == 1
