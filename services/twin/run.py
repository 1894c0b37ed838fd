"""`twinmpc twin run`: the closed loop through K aggregator processes on loopback, with embedded defaults.

Like `twinmpc demo` it needs nothing else: it creates a CA and certificates,
starts the aggregators as child processes (mTLS, SQLite in a temp dir), runs
the loop (`loop.TwinLoop`) and prints the controller table.  ``--dashboard``
also serves the operator page (`dashboard`) while the loop runs and keeps it
up until Ctrl-C once the run is over; ``--mqtt`` feeds the detector messages
through a real broker and one edge agent per district.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from twinmpc.services.twin.decision_log import DecisionLog, verify_decisions
from twinmpc.services.twin.local_cluster import LocalCluster
from twinmpc.services.twin.loop import TwinConfig, TwinLoop


def render_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Signal control on private aggregates: same seeded traffic, three kinds of controller")
    for col in ("controller", "mean delay (s/veh)", "mean queue (veh/approach)", "delay vs fixed", "share of oracle's gain",
                "close -> plan p50 / p99 (ms)"):
        table.add_column(col)
    for r in rows:
        share = "-" if r["share_of_oracle_gain_pct"] is None or r["controller"] == "fixed-time" else f"{r['share_of_oracle_gain_pct']:.0f} %"
        lat = "-" if r["close_to_plan_p50_ms"] is None else f"{r['close_to_plan_p50_ms']:.0f} / {r['close_to_plan_p99_ms']:.0f}"
        table.add_row(r["controller"], f"{r['mean_delay_s']:.1f}", f"{r['mean_queue_veh']:.2f}", f"{-r['reduction_vs_fixed_pct']:+.1f} %",
                      share, lat)
    return table


async def run_twin(
    config: TwinConfig,
    *,
    workdir: Path | None = None,
    dashboard: int | None = None,
    json_out: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the loop; returns the table rows, budgets and the decision-log verdict (also printed)."""
    console = console or Console(width=150)
    with tempfile.TemporaryDirectory(prefix="twinmpc-twin-") as tmp:
        root = Path(workdir) if workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        feed = f"MQTT broker {config.mqtt}, one edge agent per district" if config.mqtt else "district gateways, in process"
        if not json_out:
            console.print(f"[bold]twinmpc twin[/]: {config.intersections} intersections in {config.districts} districts, "
                          f"{config.windows} windows of {config.window_seconds} s ({config.period_seconds} s of traffic each), "
                          f"mode {config.mode}, K={config.aggregators} aggregator processes over mTLS, {feed}")
        cluster = LocalCluster(root, k=config.aggregators, processes=True, metrics=True)
        await cluster.start()
        decisions = DecisionLog.open(root / "twin")
        loop = TwinLoop(config, cluster, root, decisions)
        server = None
        try:
            await loop.start()
            if dashboard is not None:
                from twinmpc.services.twin.dashboard import DashboardState, start_dashboard

                server = await start_dashboard(DashboardState(loop, cluster, decisions), port=dashboard)
                console.print(f"dashboard: {server.url}")
            await loop.run()
            verdict = verify_decisions(decisions.path, decisions.public_key)
            result = {"config": asdict(config), "table": loop.rows(), "budget": loop.budget(),
                      "decision_log": {"ok": verdict.ok, "detail": verdict.describe(), "path": str(decisions.path)},
                      "reports_refused": loop.refused, "last_error": loop.last_error}
            if json_out:
                console.print_json(json.dumps(result))
            else:
                console.print(render_table(result["table"]))
                console.print(f"decision log: {verdict.describe()}")
                if loop.last_error:
                    console.print(f"[red]{loop.last_error}[/]")
            if server is not None:
                console.print(f"run finished; dashboard still at {server.url} (Ctrl-C to stop)")
                await server.serve_until_cancelled()
            return result
        finally:
            if server is not None:
                await server.stop()
            await loop.close()
            decisions.close()
            await cluster.stop()
