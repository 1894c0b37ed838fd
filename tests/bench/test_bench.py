"""Fast tests of the benchmark suite's parts (no timing assertions; the runs live in bench/)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.bench import chaos, loadgen, peers, report, runner
from twinmpc.bench.scenario import (
    SCENARIO_DIR,
    STAGES,
    KillRestart,
    Peers,
    ScenarioError,
    load_scenario,
    parse_scenario,
)

MINIMAL = """
name = "t"
[workload]
edge_nodes = 2
reports_per_window = 4
windows = 1
window_seconds = 2
measurement = { type = "sum", bits = 8 }
[budgets]
edge = { p99_ms = 1 }
upload = { p99_ms = 1 }
aggregate = { p99_ms = 1 }
collect = { p99_ms = 1 }
unshard = { p99_ms = 1 }
end_to_end = { p50_ms = 1, p99_ms = 2 }
"""


# ---------------------------------------------------------------- scenarios ---
@pytest.mark.parametrize("path", sorted(SCENARIO_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_scenarios_parse(path: Path) -> None:
    scn = load_scenario(path)
    assert scn.workload.reports_per_window >= 1
    assert all(getattr(scn.budgets, s).p99_ms > 0 for s in STAGES)


def test_quick_and_full_profiles_exist() -> None:
    assert load_scenario(SCENARIO_DIR / "quick.toml").name == "quick"
    full = load_scenario(SCENARIO_DIR / "full.toml")
    assert {c.action for c in full.chaos} == {"kill_restart", "drop_edges", "link_fault", "replay_storm", "malformed_storm"}


def test_city_profile_offers_2500_reports_per_second_one_rpc_each() -> None:
    w = load_scenario(SCENARIO_DIR / "city.toml").workload
    assert w.upload_batch == 1 and w.leader_workers == 2
    assert w.reports_per_window / (w.window_seconds * w.send_fraction) == 2500


def test_minimal_scenario_defaults() -> None:
    scn = parse_scenario(MINIMAL)
    assert scn.workload.vdaf == "twinring64" and scn.workload.aggregators == 2 and scn.workload.leader_workers == 1
    assert scn.network.link == "none" and scn.chaos == [] and not scn.peers.enabled


@pytest.mark.parametrize(
    "patch, where",
    [
        ('surprise = 1\n', "surprise"),
        ('[workload]\nedge_nodes = 2\n', None),  # duplicate table: TOML error
    ],
)
def test_top_level_errors(patch: str, where: str | None) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(patch + MINIMAL)
    if where:
        assert where in str(exc.value)


@pytest.mark.parametrize(
    "old, new, where",
    [
        ("windows = 1", "windows = 1\nwindowz = 3", "workload.windowz"),
        ("edge = { p99_ms = 1 }", "edge = { p99_ms = 1, p95_ms = 1 }", "budgets.edge.p95_ms"),
        ("edge = { p99_ms = 1 }", "edge = { p99_ms = -1 }", "budgets.edge.p99_ms"),
        ('{ type = "sum", bits = 8 }', '{ type = "sum", bits = 8, colour = 1 }', "workload.measurement"),
        ('{ type = "sum", bits = 8 }', '{ type = "fixedpointvec", length = 2, frac_bits = 8, clip = 1.0 }', "workload.measurement"),
        ("window_seconds = 2", "window_seconds = 1", "workload.window_seconds"),
        ("windows = 1", "windows = 1\nleader_workers = 0", "workload.leader_workers"),
        ("windows = 1", 'windows = 1\ndp = { algo = "discrete-gaussian", epsilon = 1, delta = 1e-9, sigma = 3 }', "workload.dp"),
        ("windows = 1", 'windows = 1\ndp = { algo = "gaussian", epsilon = 1 }', "workload.dp"),
    ],
)
def test_unknown_or_bad_keys_rejected(old: str, new: str, where: str) -> None:
    with pytest.raises(ScenarioError, match=where.replace(".", r"\.")):
        parse_scenario(MINIMAL.replace(old, new))


@pytest.mark.parametrize(
    "chaos_toml, where",
    [
        ('[[chaos]]\naction = "meteor"\n', "chaos.0"),
        ('[[chaos]]\naction = "kill_restart"\ntarget = 1\nsignal = 9\n', "chaos.0.kill_restart.signal"),
        ('[[chaos]]\naction = "drop_edges"\nfraction = 1.5\n', "chaos.0.drop_edges.fraction"),
        ('[[chaos]]\naction = "link_fault"\nfaults = { link = "edge-leader", jitter_ms = 3 }\n', "chaos.0.link_fault.faults.jitter_ms"),
        ('[[chaos]]\naction = "kill_restart"\ntarget = 2\n', "target 2 outside"),
    ],
)
def test_bad_chaos_rejected(chaos_toml: str, where: str) -> None:
    with pytest.raises(ScenarioError, match=where):
        parse_scenario(MINIMAL + chaos_toml)


def test_missing_file_is_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError):
        load_scenario(tmp_path / "absent.toml")


# -------------------------------------------------------------------- proxy ---
class _Recorder:
    """Sleep seam: records the waits asked for, yields without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


async def _echo_server() -> tuple[asyncio.base_events.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _roundtrip(proxy: chaos.FaultProxy, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(payload)
    await writer.drain()
    got = b""
    try:
        while len(got) < len(payload):
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            got += chunk
    except ConnectionError:
        pass
    writer.close()
    return got


def _with_proxy(faults: chaos.FaultSettings, payload: bytes, seed: int = 0):
    async def go():
        server, port = await _echo_server()
        sleeper = _Recorder()
        # the fake clock stands still, so every release time is exactly the injected extra delay
        proxy = chaos.FaultProxy(f"127.0.0.1:{port}", faults, rng=random.Random(seed), sleep=sleeper, clock=lambda: 0.0)
        async with proxy:
            got = await _roundtrip(proxy, payload)
        server.close()
        await server.wait_closed()
        return got, proxy.stats, sleeper.waits

    return asyncio.run(go())


def test_proxy_forwards_bytes_unchanged() -> None:
    payload = bytes(range(256)) * 1000
    got, stats, waits = _with_proxy(chaos.FaultSettings(), payload)
    assert got == payload
    assert stats.connections == 1 and stats.bytes == 2 * len(payload)
    assert waits == [] and stats.delayed_chunks == 0 and stats.lost_chunks == 0 and stats.resets == 0


def test_proxy_delays_every_chunk_in_order() -> None:
    payload = b"x" * 200_000
    got, stats, waits = _with_proxy(chaos.FaultSettings(delay_ms=250), payload)
    assert got == payload
    assert stats.delayed_chunks == stats.chunks > 0
    assert waits and all(w == pytest.approx(0.25) for w in waits)


def test_proxy_loss_stalls_for_the_retransmission_timeout() -> None:
    payload = b"y" * 50_000
    got, stats, waits = _with_proxy(chaos.FaultSettings(loss=0.99, rto_ms=300), payload)
    assert got == payload  # TCP loss costs time, not bytes
    assert stats.lost_chunks >= 1
    assert any(w == pytest.approx(0.3) for w in waits)


def test_proxy_reset_cuts_the_connection() -> None:
    got, stats, _ = _with_proxy(chaos.FaultSettings(reset=0.99), b"hello")
    assert got == b""
    assert stats.resets == 1


def test_proxy_refuses_non_loopback_targets() -> None:
    with pytest.raises(ValueError, match="127.0.0.1"):
        chaos.FaultProxy("10.0.0.1:443")
    with pytest.raises(ValueError):
        chaos.FaultProxy("localhost:443")


@pytest.mark.parametrize("kwargs", [{"delay_ms": -1}, {"loss": 1.0}, {"reset": -0.1}, {"rto_ms": -5}])
def test_fault_settings_validate(kwargs) -> None:
    with pytest.raises(ValueError):
        chaos.FaultSettings(**kwargs)


# --------------------------------------------------------- malformed reports ---
def test_malformed_reports_break_one_field_each() -> None:
    rid, sealed = bytes(16), [b"a" * 40, b"b" * 40]
    rng = random.Random(1)
    for kind in chaos.MALFORMED_KINDS:
        f = chaos.malformed_report(kind, rid, 100, b"", sealed, rng)
        changed = {k for k, v in f.items() if v != {"report_id": rid, "time": 100, "public_share": b"", "sealed_shares": sealed}[k]}
        assert len(changed) == 1, kind
    assert len(chaos.malformed_report("short_report_id", rid, 100, b"", sealed, rng)["report_id"]) == 15
    with pytest.raises(ValueError):
        chaos.malformed_report("nonsense", rid, 100, b"", sealed, rng)


# ------------------------------------------------------------ load generator ---
def test_node_schedule_covers_the_window() -> None:
    offsets = loadgen.node_schedule(7, 100, 3.2, np.random.default_rng(0))
    assert sum(len(o) for o in offsets) == 100
    assert all(((o >= 0) & (o < 3.2)).all() and (np.diff(o) > 0).all() for o in offsets)
    assert sum(len(o) for o in loadgen.node_schedule(10, 3, 1.0, np.random.default_rng(0))) == 3


@pytest.mark.parametrize(
    "params, length",
    [({"type": "count"}, 1), ({"type": "sum", "bits": 4}, 1), ({"type": "histogram", "buckets": 5}, 5), ({"type": "sumvec", "length": 3, "bits": 4}, 3)],
)
def test_measurement_sampler_contributions(params, length) -> None:
    draw, contribution, n = loadgen.measurement_sampler(params)
    rng = np.random.default_rng(3)
    total = sum(contribution(draw(rng)) for _ in range(50))
    assert n == length and total.shape == (length,) and total.sum() > 0
    with pytest.raises(ValueError):
        loadgen.measurement_sampler({"type": "mean", "bits": 4})


# ----------------------------------------------------------- runner helpers ---
def test_aggregation_latencies_known_answer() -> None:
    acks = np.array([10.0, 10.1, 10.2])
    samples = [(10.05, 0), (10.15, 1), (10.25, 3), (10.3, 2)]  # a late poll dip is ignored (monotone)
    np.testing.assert_allclose(runner.aggregation_latencies(acks, samples), [150.0, 150.0, 50.0])
    assert runner.aggregation_latencies(acks, [(10.5, 1)]).size == 1  # never-seen reports are left out


def test_results_match_exact_or_within_bound() -> None:
    assert runner._results_match(7, [7], 0.0) and runner._results_match([1, 2], [1, 2], 0.0)
    assert not runner._results_match(8, [7], 0.0)
    assert not runner._results_match([1, 2], [1, 2, 3], 0.0)
    assert runner._results_match([-3, 12], [0, 10], 3.0) and not runner._results_match([-4, 12], [0, 10], 3.0)


def test_scenario_dp_block_parses() -> None:
    scn = parse_scenario(MINIMAL.replace("windows = 1", 'windows = 1\ndp = { algo = "discrete-gaussian", epsilon = 1, delta = 1e-9 }'))
    assert scn.workload.dp["algo"] == "discrete-gaussian"


def _synthetic_result(tmp_ok: bool = True) -> dict:
    scn = parse_scenario(MINIMAL)
    rng = np.random.default_rng(0)
    samples = {s: list(np.round(rng.gamma(2.0, 1.0, 40), 3)) for s in STAGES}
    run = {
        "label": "main", "chaos": None, "windows": [], "reports": {"sent": 40, "acked": 40, "refused": {}}, "ingest_per_s": 20.0,
        "stages": {s: runner.summarize(v) for s, v in samples.items()}, "samples_ms": samples,
        "timeline": {"bin_seconds": 0.25, "origin": 0.0, "acked_per_s": [4.0, 8.0, 0.0], "aggregated_per_s": [0.0, 8.0, 4.0]},
        "storms": {}, "proxy": None, "checks": [{"check": "window 0: exact", "ok": True, "detail": "ok"}],
    }
    peer_rows = {"ours twinring64 (K=2)": {"client_ms": 0.2, "aggregate_ms": 0.2, "finish_ms": 0.3, "total_ms_per_report": 0.5,
                                           "bytes_per_report": 178, "correct": True, "ratios": {"total": 1.0, "client": 1.0, "aggregate": 1.0}},
                 "mpyc": {"skipped": "not installed"}}
    result = {"command": "python -m twinmpc.bench.runner --quick", "scenario": scn.model_dump(), "machine": {"cpus": 2, "python": "3.11", "platform": "x", "loadavg_1min_before": 0.5, "loadavg_1min_after": 1.0}, "started": 0.0, "wall_seconds": 1.0,
              "main": run, "chaos": [], "peers": {"workload": {"reports": 2, "dimension": 1, "bits": 8}, "ours_label": "twinring64",
                                                  "systems": peer_rows, "notes": ["n"]}}
    result["budgets"] = runner.check_budgets(scn, run)
    result["checks"] = run["checks"]
    result["ok"] = all(b["ok"] for b in result["budgets"])
    return result


def test_check_budgets_flags_a_miss() -> None:
    result = _synthetic_result()
    by_name = {b["budget"]: b for b in result["budgets"]}
    assert set(by_name) == {f"{s} p99" for s in STAGES} | {"end_to_end p50"}
    assert not by_name["edge p99"]["ok"]  # gamma(2,1) p99 is far above 1 ms
    assert not result["ok"]


def test_report_writes_json_markdown_and_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # the 'bench' extra
    result = _synthetic_result()
    files = report.write_report(result, tmp_path / "out")
    assert [f.name for f in files] == ["result.json", "report.md", "latency_stages.png", "throughput.png"]
    assert json.loads(files[0].read_text())["main"]["samples_ms"]["edge"] == result["main"]["samples_ms"]["edge"]
    md = files[1].read_text()
    assert "| edge encode+shard+seal | 40 |" in md and "**NO**" in md and "skipped: not installed" in md
    table = report.readme_table(result)
    assert table[0].startswith("| what |") and any("ingest" in row for row in table) and "`python -m twinmpc.bench.runner --quick`" in table[-1]
    for png in files[2:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "samples_ms" not in report.without_samples(result)["main"]
    assert "samples_ms" in result["main"]


# ------------------------------------------------------------ pairwise masks ---
def _counter_rand(seed: int):
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 12), d=st.integers(1, 6), k=st.integers(1, 8), seed=st.integers(0, 2**32))
def test_pairwise_masks_cancel(n: int, d: int, k: int, seed: int) -> None:
    inputs = np.random.default_rng(seed).integers(0, 2**64, size=(n, d), dtype=np.uint64)
    total, masked = peers.secagg_round(inputs, k, rand=_counter_rand(seed), seed=seed)
    np.testing.assert_array_equal(total, np.sum(inputs, axis=0, dtype=np.uint64))
    assert all(not np.array_equal(m, x) for m, x in zip(masked, inputs))  # every client has a neighbour


def test_neighbour_graph_is_symmetric_and_regular() -> None:
    for n, k in [(2, 1), (5, 2), (9, 4), (10, 3), (16, 8), (6, 100)]:
        g = peers.neighbour_graph(n, k, random.Random(n))
        assert all(i not in g[i] for i in range(n))
        assert all(i in g[j] for i in range(n) for j in g[i])
        assert len({len(s) for s in g}) == 1, (n, k)
    with pytest.raises(ValueError):
        peers.neighbour_graph(1, 2, random.Random(0))


def test_pair_mask_depends_on_secret_pair_and_round() -> None:
    base = peers.pair_mask(b"s" * 32, 1, 2, b"r" * 16, 4)
    assert base.dtype == np.uint64 and base.shape == (4,)
    np.testing.assert_array_equal(base, peers.pair_mask(b"s" * 32, 1, 2, b"r" * 16, 4))
    for other in (peers.pair_mask(b"t" * 32, 1, 2, b"r" * 16, 4), peers.pair_mask(b"s" * 32, 1, 3, b"r" * 16, 4),
                  peers.pair_mask(b"s" * 32, 1, 2, b"q" * 16, 4)):
        assert not np.array_equal(base, other)


def test_masking_client_rejects_bad_input() -> None:
    c = peers.MaskingClient(0, _counter_rand(1))
    assert "redacted" in repr(c)
    with pytest.raises(TypeError):
        c.mask(np.zeros(3, dtype=np.int64), {}, bytes(16))
    with pytest.raises(ValueError):
        c.mask(np.zeros(3, dtype=np.uint64), {0: c.public_bytes}, bytes(16))


def test_peers_small_run_is_correct() -> None:
    result = peers.run_peers(Peers(reports=3, dimension=2, bits=8, paillier_bits=1024, mpyc_parties=1, repeats=2))
    systems = result["systems"]
    ran = {name: row for name, row in systems.items() if not row.get("skipped")}
    assert all(row["correct"] for row in ran.values())
    assert all(row["passes"] == 2 for row in ran.values())
    assert ran["ours twinring64 (K=2)"]["ratios"]["total"] == pytest.approx(1.0)
    assert len(ran) >= 5


def test_a_failed_run_is_reported_not_raised(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = _synthetic_result()
    failed = runner._failed_phase("chaos0:kill_restart", KillRestart(action="kill_restart"), parse_scenario(MINIMAL).network, TimeoutError("no done line"))
    result["chaos"] = [failed]
    result["checks"] = result["checks"] + failed["checks"]
    md = report.write_report(result, tmp_path)[1].read_text()
    assert "| chaos0:kill_restart | run completed | **NO** | TimeoutError: no done line" in md
    assert "0 of 1 exact" in "\n".join(report.readme_table(result))


def test_chaos_titles_are_compact() -> None:
    kill = {"label": "chaos1:kill_restart", "chaos": {"action": "kill_restart", "target": 0, "at": 0.3, "down_seconds": 1.0}}
    assert report._chaos_title(kill) == "chaos1:kill_restart target=0 at=0.3 down_seconds=1"
    link = {"label": "c", "chaos": {"action": "link_fault", "faults": {"link": "edge-leader", "delay_ms": 5.0, "loss": 0.0, "rto_ms": 200.0, "reset": 0.0}}}
    assert report._chaos_title(link) == "c link=edge-leader delay_ms=5 rto_ms=200"
    assert report._chaos_title({"label": "main", "chaos": None}) == "main"


def test_prio3_bench_case_and_budgets_on_a_tiny_run(monkeypatch) -> None:
    """bench_prio3's plumbing (not its speed): every view is filled, the batches and the draft
    transcription reproduce the single-report bytes, and a missed budget is reported as missed."""
    from twinmpc.bench import bench_prio3

    cases = {c["name"]: c for c in bench_prio3._cases(quick=True)}
    rows = [bench_prio3.run_case(cases[name], repeats=1, batch_size=4)
            for name in ("Count", "Histogram(10,chunk=3)", "SumVec(100,max=1,chunk=10)")]
    for row in rows:
        assert row["deployed"]["bytes_identical_to_single"] is True
        assert row["draft_transcription"]["bytes_identical"] is True
        assert row["single"]["total_ms"] > 0 and row["deployed"]["shard_us"] > 0
    assert rows[0]["libprio_rs"]["quoted_shard_us"] == 14.0
    assert "| Count |" in bench_prio3.markdown(rows)
    # budgets need the two headline cases; feed fake rows so one budget fails and one passes
    hist = {**rows[1], "case": "Histogram(100,chunk=10)", "deployed": {**rows[1]["deployed"], "total_ms": 1.5}}
    sumvec = {**rows[2], "case": "SumVec(1000,max=255,chunk=89)", "single": {**rows[2]["single"], "total_ms": 12.0}}
    checks = {c["budget"]: c["ok"] for c in bench_prio3.budgets([hist, sumvec])}
    assert checks["Histogram(100) shard + verification < 1 ms (deployed)"] is False
    assert checks["SumVec(1000) shard + verification < 40 ms (single report)"] is True
