"""Benchmark report: result.json, report.md and PNG plots in one output folder.

* ``result.json``: the whole result document, raw per-report samples included
  (milliseconds, 3 decimals), so every number in the Markdown can be recomputed;
* ``report.md``: budgets, checks, stage latencies, chaos runs, peer ratios;
* ``latency_stages.png``: latency distribution per stage (main run, log scale);
* ``throughput.png``: acknowledged and aggregated reports per second over time.

matplotlib runs with the non-interactive Agg backend, chosen at call time.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from twinmpc.bench.scenario import STAGES

STAGE_TITLES = {
    "edge": "edge encode+shard+seal",
    "upload": "upload (sealed -> acknowledged)",
    "aggregate": "aggregate (acknowledged -> counted)",
    "collect": "window close -> collection",
    "unshard": "unshard",
    "end_to_end": "end to end (reading at close -> result)",
}


def without_samples(result: dict[str, Any]) -> dict[str, Any]:
    """The result document minus the raw per-report samples (for printing)."""
    slim = copy.deepcopy(result)
    for run in [slim.get("main")] + list(slim.get("chaos") or []):
        if run:
            run.pop("samples_ms", None)
    return slim


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v.is_integer() and abs(v) >= 1:
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}"
    return str(v)


def stage_table(run: dict[str, Any], budgets: dict[str, Any] | None = None) -> list[str]:
    lines = ["| stage | n | p50 ms | p99 ms | max ms | budget p50 / p99 ms |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for stage in STAGES:
        s = run["stages"][stage]
        b = (budgets or {}).get(stage)
        btext = f"{_fmt(b.get('p50_ms'))} / {_fmt(b['p99_ms'])}" if b else "-"
        lines.append(f"| {STAGE_TITLES[stage]} | {s['n']} | {_fmt(s['p50'])} | {_fmt(s['p99'])} | {_fmt(s['max'])} | {btext} |")
    return lines


def peer_table(peers: dict[str, Any]) -> list[str]:
    w = peers["workload"]
    lines = [
        f"Workload: {w['reports']} reports, vectors of {w['dimension']} entries of {w['bits']} bits, summed exactly "
        f"(CKKS approximately). Times per report; ratio = peer / ours (shares mode, {peers['ours_label']}).",
        "",
        "| system | client ms/report | aggregate ms/report | finish ms | bytes/report | total ratio | client ratio | aggregate ratio | result |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, p in peers["systems"].items():
        if p.get("skipped"):
            lines.append(f"| {name} | skipped: {p['skipped']} | | | | | | | |")
            continue
        r = p.get("ratios", {})
        lines.append(
            f"| {name} | {_fmt(p['client_ms'])} | {_fmt(p['aggregate_ms'])} | {_fmt(p['finish_ms'])} | {_fmt(p['bytes_per_report'])} | "
            f"{_fmt(r.get('total'))} | {_fmt(r.get('client'))} | {_fmt(r.get('aggregate'))} | {p['correct']} |"
        )
    return lines


def readme_table(result: dict[str, Any]) -> list[str]:
    """The README's performance table (stages, throughput, chaos, peer ratios), with the command."""
    scn, main = result["scenario"], result["main"]
    w = scn["workload"]
    cmd = f"`{result.get('command', 'python -m twinmpc.bench.runner')}`"
    b = scn["budgets"]
    rows = ["| what | result (p50 / p99) | budget (p99) | command |", "| --- | --- | --- | --- |"]
    for stage in STAGES:
        s = main["stages"][stage]
        rows.append(f"| {STAGE_TITLES[stage]} | {_fmt(s['p50'])} / {_fmt(s['p99'])} ms | {_fmt(b[stage]['p99_ms'])} ms | {cmd} |")
    rpc = "one upload RPC per report" if w["upload_batch"] == 1 else f"{w['upload_batch']} reports per upload RPC"
    dp = w.get("dp", {"algo": "none"})
    dp_text = "no DP" if dp.get("algo") == "none" else f"DP {dp['algo']} epsilon {dp.get('epsilon')}"
    checks_ok = all(c["ok"] for c in main["checks"])
    rows.append(
        f"| ingest: {w['edge_nodes']:,} edge nodes, {w['vdaf']}, K = {w['aggregators']}, {rpc}, mTLS, {dp_text} | "
        f"{_fmt(main['ingest_per_s'])} reports/s; {main['reports']['acked']:,} acknowledged, "
        f"{'every window collected with the exact count' if checks_ok else 'A WINDOW CHECK FAILED'} | "
        f">= {_fmt(b['min_ingest_per_s'])} reports/s | {cmd} |"
    )
    chaos = result.get("chaos") or []
    if chaos:
        ok = sum(all(c["ok"] for c in run["checks"]) for run in chaos)
        kinds = ", ".join(sorted({run["chaos"]["action"] for run in chaos}))
        rows.append(f"| chaos runs ({kinds}) | {ok} of {len(chaos)} exact, no acknowledged report lost | all | {cmd} |")
    peers = result.get("peers")
    if peers:
        ratios = [f"{name.split(' (')[0]} {_fmt(p['ratios']['total'])}x" for name, p in peers["systems"].items()
                  if "ratios" in p and not name.startswith("ours twinring64")]
        pw = peers["workload"]
        rows.append(f"| peers: time per report / ours TwinRing64 ({pw['reports']} x {pw['dimension']}-entry vectors, in process) | {'; '.join(ratios)} | - | {cmd} |")
    return rows


def markdown(result: dict[str, Any]) -> str:
    scn = result["scenario"]
    w = scn["workload"]
    main = result["main"]
    lines = [
        f"# twinmpc bench: {scn['name']}",
        "",
        scn.get("description") or "",
        "",
        f"Result: **{'all budgets and checks met' if result['ok'] else 'BUDGET OR CHECK MISSED'}** "
        f"({result['machine']['cpus']} CPUs, Python {result['machine']['python']}, {result['wall_seconds']} s wall, "
        f"1-min load average {result['machine'].get('loadavg_1min_before')} before / {result['machine'].get('loadavg_1min_after')} after).",
        "",
        f"Workload: {w['edge_nodes']} edge nodes, {w['reports_per_window']} reports per {w['window_seconds']} s window, "
        f"{w['windows']} windows, measurement `{json.dumps(w['measurement'])}`, scheme {w['vdaf']}, K = {w['aggregators']}, "
        f"upload batch {w['upload_batch']}, DP `{json.dumps(w.get('dp', {'algo': 'none'}))}` (main run), "
        f"link faults `{json.dumps(scn['network'])}`.",
        "",
        f"Acknowledged {main['reports']['acked']} of {main['reports']['sent']} reports; ingest {_fmt(main['ingest_per_s'])} reports/s.",
        "",
        "## Stage latencies (main run)",
        "",
        *stage_table(main, scn["budgets"]),
        "",
        "![latency per stage](latency_stages.png)",
        "",
        "![throughput](throughput.png)",
        "",
        "## Budgets",
        "",
        "| budget | limit | measured | ok |",
        "| --- | ---: | ---: | --- |",
    ]
    for b in result["budgets"]:
        limit = b.get("limit_ms", b.get("min"))
        measured = b.get("measured_ms", b.get("measured"))
        lines.append(f"| {b['budget']} | {_fmt(limit)} | {_fmt(measured)} | {'yes' if b['ok'] else '**NO**'} |")
    lines += ["", "## Checks", "", "| run | check | ok | detail |", "| --- | --- | --- | --- |"]
    for run in [main] + list(result["chaos"]):
        for c in run["checks"]:
            lines.append(f"| {run['label']} | {c['check']} | {'yes' if c['ok'] else '**NO**'} | {c['detail']} |")
    if result["chaos"]:
        lines += ["", "## Chaos runs", ""]
        for run in result["chaos"]:
            lines += [f"### {run['label']}", "", f"`{json.dumps(run['chaos'])}`", "",
                      f"Acknowledged {run['reports']['acked']} of {run['reports']['sent']}; refused {json.dumps(run['reports']['refused'])}.", ""]
            if run.get("proxy"):
                lines += [f"Proxy: `{json.dumps(run['proxy'])}`", ""]
            lines += [*stage_table(run), ""]
    peers = result.get("peers")
    lines += ["", "## README table", "", *readme_table(result)]
    lines += ["", "## Peer comparison", ""]
    lines += peer_table(peers) if peers else ["Not run."]
    for note in (peers or {}).get("notes", []):
        lines += ["", f"- {note}"]
    return "\n".join(lines) + "\n"


def plot_latencies(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["main"].get("samples_ms", {})
    stages = [s for s in STAGES if samples.get(s)]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if stages:
        data = [[max(v, 1e-3) for v in samples[s]] for s in stages]
        ax.boxplot(data, whis=(1, 99), showfliers=False)
        ax.set_xticks(range(1, len(stages) + 1), [STAGE_TITLES[s].split(" (")[0] for s in stages], rotation=15, fontsize=8)
        budgets = result["scenario"]["budgets"]
        for i, s in enumerate(stages, start=1):
            ax.hlines(budgets[s]["p99_ms"], i - 0.4, i + 0.4, colors="red", linestyles="dashed", linewidth=1)
        ax.set_yscale("log")
    ax.set_ylabel("ms (box: p25-p75, whiskers p1-p99; red: p99 budget)")
    ax.set_title(f"latency per stage - {result['scenario']['name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _chaos_title(run: dict[str, Any]) -> str:
    """Run label and its chaos parameters, compact (link faults flattened, zero faults left out)."""
    params = dict(run.get("chaos") or {})
    params.pop("action", None)
    params.update(params.pop("faults", {}))
    shown = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
             if not (k in ("delay_ms", "loss", "rto_ms", "reset") and v == 0)]
    return " ".join([run["label"], *shown])


def plot_throughput(result: dict[str, Any], path: Path) -> None:
    """Main run on top; one small panel per chaos run below (dashed line: when the chaos starts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chaos = list(result["chaos"])
    rows = 1 + (len(chaos) + 1) // 2
    fig = plt.figure(figsize=(10, 3 + 2.2 * (rows - 1)))
    grid = fig.add_gridspec(rows, 2)
    panels = [(fig.add_subplot(grid[0, :]), result["main"])]
    panels += [(fig.add_subplot(grid[1 + i // 2, i % 2]), run) for i, run in enumerate(chaos)]
    window = result["scenario"]["workload"]["window_seconds"]
    for ax, run in panels:
        tl = run["timeline"]
        step = tl["bin_seconds"]
        for key, style, name in (("acked_per_s", "-", "acknowledged"), ("aggregated_per_s", ":", "aggregated")):
            ys = tl[key]
            if ys:
                ax.plot([i * step for i in range(len(ys))], ys, style, label=name)
        at = (run.get("chaos") or {}).get("at")
        if at is not None:
            ax.axvline(at * window, color="red", linestyle="--", linewidth=1)
        ax.set_title(_chaos_title(run), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylabel("reports / s", fontsize=7)
    panels[0][0].legend(fontsize=7)
    panels[0][0].set_xlabel("seconds since the run's first window opened", fontsize=7)
    fig.suptitle(f"throughput over time - {result['scenario']['name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_text(result: dict[str, Any]) -> str:
    lines = [f"{result['scenario']['name']}: {'OK' if result['ok'] else 'FAILED'}"]
    for stage in STAGES:
        s = result["main"]["stages"][stage]
        lines.append(f"  {stage:<11} p50 {_fmt(s['p50']):>8} ms  p99 {_fmt(s['p99']):>8} ms  (n={s['n']})")
    for b in result["budgets"]:
        if not b["ok"]:
            lines.append(f"  MISSED budget {b['budget']}: {b}")
    for c in result["checks"]:
        if not c["ok"]:
            lines.append(f"  FAILED check {c['check']}: {c['detail']}")
    peers = result.get("peers")
    if peers:
        for name, p in peers["systems"].items():
            if p.get("skipped"):
                lines.append(f"  peer {name}: skipped ({p['skipped']})")
            elif "ratios" in p:
                lines.append(f"  peer {name}: total {_fmt(p['ratios']['total'])}x ours")
    return "\n".join(lines)


def write_report(result: dict[str, Any], out: Path) -> list[Path]:
    """Write result.json, report.md, latency_stages.png and throughput.png into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "result.json", out / "report.md", out / "latency_stages.png", out / "throughput.png"]
    files[0].write_text(json.dumps(result, indent=1) + "\n")
    files[1].write_text(markdown(result))
    plot_latencies(result, files[2])
    plot_throughput(result, files[3])
    return files
