"""`twinmpc aggregator ...`: write a config and keys, serve, check health.

`init-config` writes a ready-to-serve TOML per operator; `init-keys` the keys
replicas share; `serve` runs one
aggregator until SIGTERM; `health` asks grpc.health.v1 with the aggregator's
own certificate, for scripts and container probes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Optional

import grpc
import typer

from twinmpc.mpc.errors import TwinMpcError
from twinmpc.services.cli_base import creds_from, fail

agg_app = typer.Typer(help="Run an aggregator server.", no_args_is_help=True)


@agg_app.command("serve")
def aggregator_serve(
    config: Annotated[Path, typer.Option(help="aggregator TOML")],
    port_file: Annotated[Optional[str], typer.Option(help="write the bound port here once listening")] = None,
) -> None:
    """Serve until SIGTERM/SIGINT."""
    from twinmpc.services.aggregator.config import ConfigError, load_aggregator_config
    from twinmpc.services.aggregator.workers import serve

    try:
        cfg = load_aggregator_config(config)
        cfg.database_password()  # an unset password variable is a config mistake: say so before anything starts
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    from twinmpc.services.logs import configure_json_logging

    configure_json_logging(cfg.log_level)
    from twinmpc.services.keyfiles import KeyFileError

    try:
        asyncio.run(serve(cfg, port_file=port_file))
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    except (TwinMpcError, KeyFileError, OSError) as exc:  # certificates, key files, database, occupied port
        raise fail(f"aggregator could not start: {exc}") from None


@agg_app.command("init-config")
def aggregator_init_config(
    identity: Annotated[str, typer.Option(help="the aggregator's identity (its certificate: twinmpc pki issue --identity)")],
    listen: Annotated[str, typer.Option(help="HOST:PORT the gRPC server binds")],
    out: Annotated[Path, typer.Option(help="the TOML file to write (refused if it exists)")],
    pki_dir: Annotated[str, typer.Option("--pki-dir", help="folder with ca.crt and <identity>.crt/.key, relative to --out's folder")] = "pki",
    data_dir: Annotated[Optional[str], typer.Option(help="store folder, relative to --out's folder (default: <identity>-data)")] = None,
    metrics_listen: Annotated[Optional[str], typer.Option(help="HOST:PORT for Prometheus GET /metrics")] = None,
    database_url: Annotated[Optional[str], typer.Option(help="postgresql://user@host:port/db shared by replicas (default: SQLite)")] = None,
    database_password_env: Annotated[Optional[str], typer.Option(help="environment variable holding the database password")] = None,
) -> None:
    """Write a ready-to-serve aggregator config (one per operator; see examples/aggregator.toml for every key)."""
    from twinmpc.services.aggregator.config import ConfigError, render_aggregator_config

    try:
        text = render_aggregator_config(identity=identity, listen=listen, pki_dir=pki_dir, data_dir=data_dir or f"{identity}-data",
                                        metrics_listen=metrics_listen, database_url=database_url,
                                        database_password_env=database_password_env)
        with open(out, "x") as f:
            f.write(text)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    except OSError as exc:
        raise fail(f"{out}: {exc.strerror}", 2) from None
    typer.echo(str(out))


@agg_app.command("init-keys")
def aggregator_init_keys(
    directory: Annotated[Path, typer.Option("--dir", help="where to write hpke_key.json and datastore.key (0600)")],
    hpke_suite: Annotated[str, typer.Option(help="the config's hpke_suite")] = "x25519-hkdf-sha256-aes128gcm",
) -> None:
    """Create the keys replicas must share, as a first start would (existing files are kept), and print the HPKE config.

    Replicas on one database open the same uploads and the same sealed columns, so
    they need one HPKE key and one datastore key: create them once here and hand them
    to every replica (e.g. a Kubernetes Secret, docs/deployment.md). The HPKE key is
    the first of the aggregator's key set; the first start stores the set, sealed, in
    the database, where `twinmpc key rotate` adds keys every replica sees.
    """
    from twinmpc.mpc.task import b64encode
    from twinmpc.services.keyfiles import KeyFileError, load_or_create_datastore_key, load_or_create_hpke

    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        hpke = load_or_create_hpke(directory / "hpke_key.json", hpke_suite)
        load_or_create_datastore_key(directory / "datastore.key")
    except (KeyFileError, ValueError) as exc:
        raise fail(str(exc), 2) from None
    except OSError as exc:
        raise fail(f"{exc.filename or directory}: {exc.strerror}", 2) from None
    typer.echo(b64encode(hpke.config.encode()))


def _own_name_override(cert_path: Path, host: str) -> str | None:
    """The TLS name to expect when checking our own server at `host` (its cert may not name loopback)."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound) as exc:
        raise fail(f"{cert_path}: {exc}", 2) from None
    dns = names.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    return None if host in dns or host in ips or not dns else dns[0]


@agg_app.command("health")
def aggregator_health(
    config: Annotated[Path, typer.Option(help="the aggregator's TOML: its certificate authenticates the check")],
    endpoint: Annotated[Optional[str], typer.Option(help="HOST:PORT to check (default: the config's listen address, on this host)")] = None,
    wait: Annotated[float, typer.Option(help="keep trying this many seconds until it serves")] = 0.0,
    timeout: Annotated[float, typer.Option(help="seconds allowed per check")] = 5.0,
) -> None:
    """Exit 0 once the aggregator answers grpc.health.v1 with SERVING: for scripts and container probes."""
    from twinmpc.services.aggregator.config import ConfigError, load_aggregator_config

    try:
        cfg = load_aggregator_config(config)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    if endpoint is None:
        host, _, port = cfg.listen.rpartition(":")
        endpoint = f"{'127.0.0.1' if host.strip('[]') in ('0.0.0.0', '::', '') else host}:{port}"
    override = _own_name_override(cfg.tls.cert, endpoint.rpartition(":")[0].strip("[]"))
    try:
        creds = creds_from(cfg.tls.cert, cfg.tls.key, cfg.tls.ca)
    except TwinMpcError as exc:
        raise fail(str(exc), 2) from None
    status = asyncio.run(_check_health(endpoint, creds, override, wait, timeout))
    if status != "SERVING":
        raise fail(f"{endpoint}: {status}")
    typer.echo(f"{endpoint}: SERVING")


async def _check_health(endpoint: str, creds: grpc.ChannelCredentials, name_override: str | None, wait: float, timeout: float) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    options = [("grpc.ssl_target_name_override", name_override)] if name_override else []
    async with grpc.aio.secure_channel(endpoint, creds, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            remaining = deadline - loop.time()
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=max(0.1, min(timeout, remaining) if wait else timeout),
                                         wait_for_ready=wait > 0)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                status = f"{exc.code().name}: {exc.details()}"
            if status == "SERVING" or loop.time() >= deadline:
                return status
            await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
