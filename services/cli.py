"""`twinmpc` command line: PKI, aggregator, tasks, upload, collect, demo.

Exit codes: 0 success, 1 operation refused or failed (message on stderr),
2 bad usage or invalid input file.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from twinmpc.mpc.errors import TwinMpcError
from twinmpc.services.cli_aggregator import agg_app
from twinmpc.services.cli_base import creds as _creds
from twinmpc.services.cli_base import fail, load_task, utc
from twinmpc.services.cli_base import run_rpc as _run
from twinmpc.services.cli_keys import hpke_key_app, task_amend

app = typer.Typer(help="twinmpc: secure multi-party aggregation for smart-city digital twins.", no_args_is_help=True, add_completion=False)
pki_app = typer.Typer(help="Create a CA and issue role certificates for mTLS.", no_args_is_help=True)
task_app = typer.Typer(help="Create and list tasks on aggregators.", no_args_is_help=True)
key_app = typer.Typer(help="Collector HPKE keys.", no_args_is_help=True)
he_key_app = typer.Typer(help="Collector keys for the homomorphic modes (paillier, ckks).", no_args_is_help=True)
audit_app = typer.Typer(help="Verify an aggregator's signed audit log offline.", no_args_is_help=True)
edge_app = typer.Typer(help="Run the edge agent (MQTT -> minimise -> shard -> upload).", no_args_is_help=True)
app.add_typer(pki_app, name="pki")
app.add_typer(agg_app, name="aggregator")
app.add_typer(task_app, name="task")
app.add_typer(key_app, name="collector-key")
app.add_typer(hpke_key_app, name="key")
app.add_typer(he_key_app, name="he-key")
app.add_typer(audit_app, name="audit")
app.add_typer(edge_app, name="edge")

PkiDir = Annotated[Path, typer.Option("--pki-dir", help="Folder with ca.crt and <identity>.crt/.key")]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"twinmpc {version('twinmpc')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """twinmpc: secure multi-party aggregation for smart-city digital twins."""


# ------------------------------------------------------------------ pki ---
@pki_app.command("init")
def pki_init(directory: Annotated[Path, typer.Option("--dir")], name: str = "twinmpc CA") -> None:
    """Create a CA (ca.crt, ca.key 0600; key encrypted if $TWINMPC_CA_PASSPHRASE is set)."""
    from twinmpc.services import pki

    try:
        pki.init_ca(directory, name)
    except pki.PkiError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"CA written to {directory}")


@pki_app.command("issue")
def pki_issue(
    directory: Annotated[Path, typer.Option("--dir", help="CA folder")],
    role: Annotated[str, typer.Option(help="edge | aggregator | controller | admin")],
    identity: Annotated[str, typer.Option()],
    out: Annotated[Optional[Path], typer.Option(help="output folder (default: the CA folder)")] = None,
    host: Annotated[Optional[list[str]], typer.Option(help="SAN host names/IPs")] = None,
) -> None:
    """Issue a certificate carrying ROLE and IDENTITY."""
    from twinmpc.services import pki

    try:
        paths = pki.issue(directory, role, identity, out or directory, hosts=host or ["localhost", "127.0.0.1"])
    except (pki.PkiError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    typer.echo(f"{paths.cert}\n{paths.key}")


# --------------------------------------------------------------- keys ---
@key_app.command("generate")
def collector_key_generate(out: Annotated[Path, typer.Option()], suite: str = "x25519-hkdf-sha256-aes128gcm") -> None:
    """Create a collector HPKE key file (0600) and print its public config (base64url)."""
    from twinmpc.services.keyfiles import write_hpke_key

    try:
        kp = write_hpke_key(out, suite)
    except (ValueError, FileExistsError) as exc:
        raise fail(str(exc), 2) from None
    from twinmpc.mpc.task import b64encode

    typer.echo(b64encode(kp.config.encode()))


def _passphrase(env: str) -> bytes:
    import os

    value = os.environ.get(env)
    if not value:
        raise fail(f"set ${env} to the passphrase that protects the secret key", 2)
    return value.encode()


@he_key_app.command("generate")
def he_key_generate(
    mode: Annotated[str, typer.Option(help="paillier (2048-bit) or ckks")],
    out: Annotated[Path, typer.Option(help="secret key file (scrypt + AES-GCM sealed, 0600)")],
    passphrase_env: str = "TWINMPC_HE_PASSPHRASE",
) -> None:
    """Create a collector key; print the public key (base64url) for the task's he_public_key."""
    from twinmpc.crypto import ckks, paillier
    from twinmpc.mpc.task import b64encode

    passphrase = _passphrase(passphrase_env)
    if mode == "paillier":
        public, secret = paillier.generate_keypair(2048)
        secret.save(out, passphrase)
        typer.echo(b64encode(public.to_json()))
    elif mode == "ckks":
        context = ckks.generate_context(ckks.DEFAULT_PARAMS)
        context.save(out, passphrase)
        typer.echo(b64encode(context.public.to_bytes()))
    else:
        raise fail("mode must be paillier or ckks", 2)


def _load_he_secret(mode: str, path: Path, passphrase_env: str):
    from twinmpc.crypto import ckks, paillier

    passphrase = _passphrase(passphrase_env)
    try:
        return paillier.PaillierSecretKey.load(path, passphrase) if mode == "paillier" else ckks.CkksSecretContext.load(path, passphrase)
    except (TwinMpcError, OSError, ValueError) as exc:
        raise fail(f"{path}: {exc}", 2) from None


# --------------------------------------------------------------- tasks ---
@task_app.command("create")
def task_create(
    endpoint: Annotated[list[str], typer.Option(help="aggregator endpoints, leader first")],
    measurement: Annotated[str, typer.Option(help='JSON, e.g. {"type": "sum", "bits": 16}')],
    pki_dir: PkiDir,
    collector_key: Annotated[Optional[Path], typer.Option(help="collector HPKE key file (mode 'shares': its public config goes into the task)")] = None,
    mode: Annotated[str, typer.Option(help="shares | paillier | ckks")] = "shares",
    he_public_key: Annotated[Optional[str], typer.Option(help="base64url public key from `twinmpc he-key generate` (paillier)")] = None,
    he_public_key_file: Annotated[Optional[Path], typer.Option(help="file holding that public key (ckks keys are ~0.5 MB: too long for an argument)")] = None,
    identity: str = "admin",
    window_seconds: Annotated[int, typer.Option(help="window length in seconds: reports are summed per window")] = 60,
    min_batch_size: Annotated[int, typer.Option(help="a window is released only with at least this many reports")] = 100,
    vdaf: Annotated[Optional[str], typer.Option(help="prio3 (validity proofs, the default) or twinring64")] = None,
    dp: Annotated[str, typer.Option(help='JSON DP block, e.g. {"algo": "discrete-gaussian", "epsilon": 1.0, "delta": 1e-9}')] = '{"algo": "none"}',
    out: Annotated[Optional[Path], typer.Option(help="write the task document here")] = None,
) -> None:
    """Provision a task on every aggregator and print its document."""
    from twinmpc.mpc.task import b64encode
    from twinmpc.services.client import TaskAdminClient
    from twinmpc.services.keyfiles import KeyFileError, load_hpke_key

    try:
        doc = {
            "measurement": json.loads(measurement),
            "dp": json.loads(dp),
            "mode": mode,
            **({"vdaf": vdaf} if vdaf else {}),
            "window_seconds": window_seconds,
            "min_batch_size": min_batch_size,
        }
        if collector_key is not None:
            doc["collector_hpke_config"] = b64encode(load_hpke_key(collector_key).config.encode())
        if he_public_key is not None and he_public_key_file is not None:
            raise ValueError("give --he-public-key or --he-public-key-file, not both")
        if he_public_key_file is not None:
            he_public_key = he_public_key_file.read_text().strip()
        if he_public_key is not None:
            doc["he_public_key"] = he_public_key
    except OSError as exc:
        raise fail(f"{exc.filename}: {exc.strerror}", 2) from None
    except (json.JSONDecodeError, ValueError, KeyFileError) as exc:
        raise fail(str(exc), 2) from None
    task = _run(TaskAdminClient(_creds(pki_dir, identity)).provision_task(endpoint, doc))
    text = json.dumps(task.to_dict(), indent=2, sort_keys=True)
    if out:
        out.write_text(text + "\n")
    typer.echo(text)


task_app.command("amend")(task_amend)


@task_app.command("list")
def task_list(endpoint: Annotated[str, typer.Option()], pki_dir: PkiDir, identity: str = "admin") -> None:
    """List the tasks an aggregator knows."""
    from twinmpc.services.client import TaskAdminClient

    for task in _run(TaskAdminClient(_creds(pki_dir, identity)).list_tasks(endpoint)):
        typer.echo(f"{task.task_id_b64}  {task.measurement.params()}  window={task.window_seconds}s  min_batch={task.min_batch_size}")


@task_app.command("card")
def task_card(
    task_file: Annotated[Path, typer.Option("--task", help="task document (JSON)")],
    config: Annotated[Optional[Path], typer.Option(help="an aggregator's config (agg.toml), to show the budget spent there")] = None,
) -> None:
    """Print what a task computes, its privacy parameters, budget spent/remaining and its aggregators."""
    from twinmpc.mpc.modes import mode_of

    task = load_task(task_file)
    card = {
        "task_id": task.task_id_b64,
        "description": task.description,
        "computes": task.measurement.params(),
        "scheme": task.vdaf,
        "mode": task.mode,
        "window_seconds": task.window_seconds,
        "min_batch_size": task.min_batch_size,
        "dp": task.dp,
        **mode_of(task).privacy_card(task),
        "aggregators": [a.endpoint for a in task.aggregators],
    }
    if config is not None:
        from twinmpc.services.aggregator.config import ConfigError, load_aggregator_config
        from twinmpc.services.aggregator.state import open_datastore
        from twinmpc.services.aggregator.privacy import budget_report

        try:
            store = open_datastore(load_aggregator_config(config))
        except ConfigError as exc:
            raise fail(str(exc), 2) from None
        try:
            card["budget"] = budget_report(store, task) or "no budget configured or nothing spent"
        finally:
            store.close()
    typer.echo(json.dumps(card, indent=2, default=str))


# --------------------------------------------------------------- audit ---
@audit_app.command("verify")
def audit_verify(
    log: Annotated[Path, typer.Argument(help="audit.log of an aggregator")],
    key: Annotated[Path, typer.Option(help="the aggregator's audit_signing.pub")],
    head: Annotated[Optional[Path], typer.Option(help="a signed head saved earlier (`audit head`): the log must still extend it")] = None,
) -> None:
    """Check the hash chain, every signature and the signed head; name the first bad line."""
    from twinmpc.crypto.audit_verify import audit_verify_main

    code, message = audit_verify_main(str(log), str(key), str(head) if head else None)
    typer.echo(message, err=code != 0)
    raise typer.Exit(code)


@audit_app.command("head")
def audit_head(
    log: Annotated[Path, typer.Argument(help="audit.log of an aggregator")],
    key: Annotated[Path, typer.Option(help="the aggregator's audit_signing.pub")],
) -> None:
    """Print the log's signed head (entry count and last hash), after checking it, for a third party to keep."""
    from twinmpc.crypto.audit_log import AuditLogCorrupt
    from twinmpc.crypto.audit_verify import read_signed_head
    from twinmpc.crypto.signing import VerifyKey

    head_file = log.with_name(log.name + ".head")
    try:
        public_key = VerifyKey.load(key)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read public key {key}: {exc}", 2) from None
    try:
        read_signed_head(head_file, public_key)
    except AuditLogCorrupt as exc:
        raise fail(str(exc)) from None
    typer.echo(head_file.read_text(), nl=False)


# ---------------------------------------------------------------- edge ---
@edge_app.command("run")
def edge_run(config: Annotated[Path, typer.Option(help="edge.toml (see examples/edge.toml)")]) -> None:
    """Subscribe to MQTT, minimise, window, shard and upload until SIGINT/SIGTERM."""
    from twinmpc.services.edge.agent import run_edge_agent
    from twinmpc.services.edge.config import load_edge_config

    try:
        load_edge_config(config)
    except (TwinMpcError, OSError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    from twinmpc.services.logs import configure_json_logging

    configure_json_logging("INFO")
    from twinmpc.services.edge.config import EdgeConfigError

    try:
        asyncio.run(run_edge_agent(str(config)))
    except EdgeConfigError as exc:  # e.g. a task file the config names is missing or invalid
        raise fail(str(exc), 2) from None
    except (TwinMpcError, OSError) as exc:  # certificates, outbox
        raise fail(f"edge agent could not start: {exc}") from None


# -------------------------------------------------------------- upload ---
@app.command("upload")
def upload(
    task_file: Annotated[Path, typer.Option("--task", help="task document (JSON)")],
    pki_dir: PkiDir,
    identity: str = "edge-1",
    source: Annotated[Optional[Path], typer.Option("--file", help="JSON lines of measurements (default: stdin)")] = None,
    time_: Annotated[Optional[int], typer.Option("--time", help="report timestamp (default: now)")] = None,
) -> None:
    """Shard, seal and upload one report per JSON line of measurements.

    Prints the start of each window the accepted reports went into, one per
    line on stdout (what `twinmpc collect --window` takes); the summary goes
    to stderr.
    """
    from twinmpc.mpc.modes import mode_of
    from twinmpc.services.client import UploadClient

    task = load_task(task_file)
    lines = (source.read_text() if source else sys.stdin.read()).splitlines()
    numbered = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            numbered.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise fail(f"line {number}: {exc}", 2) from None
    try:
        reports = mode_of(task).make_reports(task, [m for _, m in numbered], time=time_)  # on a bad entry, name its line below
    except TwinMpcError as batch_error:
        for number, m in numbered:
            try:
                mode_of(task).make_reports(task, [m], time=time_)
            except TwinMpcError as exc:
                raise fail(f"line {number}: {exc}", 2) from None
        raise fail(str(batch_error), 2) from None

    async def go():
        async with UploadClient(task.aggregators[0].endpoint, _creds(pki_dir, identity)) as client:
            return await client.upload_batch(task.task_id, reports)

    outcomes = _run(go())
    times = {r.report_id: r.time for r in reports}
    windows: dict[int, int] = {}
    for o in outcomes:
        if o.accepted:
            start = task.window_start(times[o.report_id])
            windows[start] = windows.get(start, 0) + 1
        else:
            typer.echo(f"rejected {o.report_id.hex()}: {o.status}: {o.message}", err=True)
    accepted = sum(windows.values())
    typer.echo(f"{accepted}/{len(outcomes)} reports accepted", err=True)
    for start, count in sorted(windows.items()):
        closes = start + task.window_seconds
        typer.echo(f"  window {start}: {count} report(s); collectable from {utc(closes)} ({closes})", err=True)
        typer.echo(str(start))
    if accepted != len(outcomes):
        raise typer.Exit(1)


# ------------------------------------------------------------- collect ---
@app.command("collect")
def collect(
    task_file: Annotated[Path, typer.Option("--task")],
    window: Annotated[str, typer.Option(help="window start in unix seconds, as `twinmpc upload` prints it; or 'latest': the last window closed by now")],
    pki_dir: PkiDir,
    wait: Annotated[bool, typer.Option("--wait", help="if the window is still open, sleep until it closes, then collect")] = False,
    collector_key: Annotated[Optional[Path], typer.Option(help="collector HPKE key (modes 'shares', 'masks')")] = None,
    he_key: Annotated[Optional[Path], typer.Option(help="collector secret key (modes 'paillier', 'ckks')")] = None,
    passphrase_env: str = "TWINMPC_HE_PASSPHRASE",
    identity: str = "controller-1",
) -> None:
    """Collect a closed window's result and print it as JSON."""
    import time

    from twinmpc.mpc.modes import mode_of
    from twinmpc.services.client import Collector
    from twinmpc.services.keyfiles import KeyFileError, load_hpke_key

    task = load_task(task_file)
    if window == "latest":
        window_start = task.window_start(int(time.time())) - task.window_seconds
    else:
        try:
            window_start = int(window)
        except ValueError:
            raise fail(f"--window must be a window start (unix seconds) or 'latest', got {window!r}", 2) from None
    key = he_secret = None
    if mode_of(task).collector_holds_hpke_key:
        if collector_key is None:
            raise fail(f"mode {task.mode!r} needs --collector-key", 2)
        try:
            key = load_hpke_key(collector_key)
        except KeyFileError as exc:
            raise fail(str(exc), 2) from None
    else:
        if he_key is None:
            raise fail(f"mode {task.mode!r} needs --he-key", 2)
        he_secret = _load_he_secret(task.mode, he_key, passphrase_env)

    closes = window_start + task.window_seconds
    if wait and time.time() < closes:
        time.sleep(closes - time.time() + 0.2)  # a little past the close: the aggregators' clocks decide

    async def go():
        async with Collector(task.aggregators[0].endpoint, _creds(pki_dir, identity), key, he_secret_key=he_secret) as c:
            return await c.collect(task, window_start)

    r = _run(go())
    typer.echo(json.dumps({"task_id": task.task_id_b64, "window_start": r.window_start, "window_seconds": r.window_seconds,
                           "report_count": r.report_count, "result": r.result, "dp": r.dp, "collection_id": r.collection_id}))


# ---------------------------------------------------------------- demo ---
@app.command("demo")
def demo(
    intersections: Annotated[int, typer.Option(help="simulated edge nodes")] = 200,
    windows: Annotated[int, typer.Option(help="windows to run")] = 3,
    window_seconds: Annotated[int, typer.Option(help="window length")] = 2,
    aggregators: Annotated[int, typer.Option(help="number of aggregators (K)")] = 2,
    seed: int = 7,
    workdir: Annotated[Optional[Path], typer.Option(help="keep PKI, stores and logs here (default: temp dir)")] = None,
    epsilon: Annotated[Optional[float], typer.Option(help="add distributed DP noise (discrete Gaussian, delta 1e-9) at this epsilon per collection")] = None,
    mqtt: Annotated[Optional[str], typer.Option(help="HOST:PORT of an MQTT broker: feed the city through it and district edge agents")] = None,
    mode: Annotated[str, typer.Option(help="shares (K aggregators) or masks (one aggregator, SecAgg+ rounds with dropouts)")] = "shares",
) -> None:
    """Run a simulated city through K aggregator processes on loopback and check every result."""
    from twinmpc.services.twin.demo import run_demo

    if mode not in ("shares", "masks") or (mode == "masks" and mqtt):
        raise fail("--mode must be shares or masks (masks runs without --mqtt)", 2)
    ok = asyncio.run(run_demo(intersections=intersections, windows=windows, window_seconds=window_seconds, k=aggregators, seed=seed,
                              workdir=workdir, epsilon=epsilon, mqtt=mqtt, mode=mode))
    raise typer.Exit(0 if ok else 1)


_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command("fedavg", context_settings=_PASSTHROUGH, add_help_option=False)
def fedavg(ctx: typer.Context) -> None:
    """Train the traffic model with FedAvg through real aggregators (`twinmpc fedavg --help`)."""
    from twinmpc.services.twin.fedavg_runner import fedavg_main

    raise typer.Exit(fedavg_main(ctx.args))


@app.command("twin", context_settings=_PASSTHROUGH, add_help_option=False)
def twin(ctx: typer.Context) -> None:
    """The traffic twin: `twin run` (closed signal-control loop, `--dashboard`), `twin verify` (`twinmpc twin --help`)."""
    from twinmpc.services.twin.cli import twin_main

    raise typer.Exit(twin_main(ctx.args))


@app.command("bench", context_settings=_PASSTHROUGH, add_help_option=False)
def bench(ctx: typer.Context) -> None:
    """Run the reviewer benchmark suite: budgets, chaos, peers (`twinmpc bench --help`)."""
    from twinmpc.bench.runner import main as bench_main

    raise typer.Exit(bench_main(ctx.args))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
