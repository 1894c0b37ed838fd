"""`twinmpc key ...` (an aggregator's HPKE keys) and `twinmpc task amend` (pin rotated keys in a task).

Rotating an aggregator's key, as docs/operations.md ("Rotating keys") lays out:
`key rotate` makes a new key current, `task amend --rotate-aggregator-key J`
pins it in the task on every aggregator and rewrites task.json for the edge
nodes, and once no report sealed to the old key can still arrive, `key retire`
ends the overlap. `task amend --set-collector-key` replaces the collector's key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from twinmpc.services.cli_base import creds, fail, load_task, run_rpc, utc

hpke_key_app = typer.Typer(help="Rotate, retire and list an aggregator's HPKE keys (admin).", no_args_is_help=True)

Endpoint = Annotated[str, typer.Option(help="the aggregator, HOST:PORT")]
PkiDir = Annotated[Path, typer.Option("--pki-dir", help="Folder with ca.crt and <identity>.crt/.key")]
Identity = Annotated[str, typer.Option(help="an admin certificate's identity in --pki-dir")]


def _client(pki_dir: Path, identity: str):
    from twinmpc.services.client import TaskAdminClient

    return TaskAdminClient(creds(pki_dir, identity))


@hpke_key_app.command("rotate")
def key_rotate(endpoint: Endpoint, pki_dir: PkiDir, identity: Identity = "admin") -> None:
    """Make a new HPKE key the aggregator's current one and print its config (base64url); older keys keep opening."""
    from twinmpc.mpc.task import b64encode

    config = run_rpc(_client(pki_dir, identity).rotate_hpke_key(endpoint))
    typer.echo(f"{endpoint}: HPKE config id {config.config_id} is current; older keys open reports until retired. "
               "Next: twinmpc task amend --task task.json --rotate-aggregator-key <its index>", err=True)
    typer.echo(b64encode(config.encode()))


@hpke_key_app.command("retire")
def key_retire(
    endpoint: Endpoint,
    config_id: Annotated[int, typer.Option(help="the key to retire (`twinmpc key list`)")],
    pki_dir: PkiDir,
    identity: Identity = "admin",
    force: Annotated[bool, typer.Option("--force", help="retire even though tasks still pin it (a compromised key): their uploads are refused")] = False,
) -> None:
    """Retire a non-current key: reports sealed to it are refused from now on and its private key is destroyed."""
    if not 0 <= config_id <= 255:
        raise fail(f"--config-id must be in 0..255, got {config_id}", 2)

    key = run_rpc(_client(pki_dir, identity).retire_hpke_key(endpoint, config_id, force=force))
    typer.echo(f"{endpoint}: HPKE config id {config_id} retired at {utc(key.retired)}")


@hpke_key_app.command("list")
def key_list(endpoint: Endpoint, pki_dir: PkiDir, identity: Identity = "admin") -> None:
    """One line per key, oldest first: config id, state (current marked *), suite, created and retired times."""
    from twinmpc.crypto.seal import HpkeConfig

    for key in run_rpc(_client(pki_dir, identity).list_hpke_keys(endpoint)):
        config = HpkeConfig.decode(key.hpke_config)
        retired = f"  retired {utc(key.retired)}" if key.retired else ""
        typer.echo(f"{'*' if key.current else ' '} {config.config_id:3d}  {key.state:7s}  {config.suite.name}  created {utc(key.created)}{retired}")


def task_amend(
    task_file: Annotated[Path, typer.Option("--task", help="the task document (JSON) to amend")],
    pki_dir: PkiDir,
    rotate_aggregator_key: Annotated[Optional[list[int]], typer.Option(help="pin this aggregator's current HPKE config (its index in the task; repeatable)")] = None,
    set_collector_key: Annotated[Optional[Path], typer.Option(help="the collector's new HPKE key file: collections from now on are sealed to it")] = None,
    identity: Identity = "admin",
    out: Annotated[Optional[Path], typer.Option(help="write the amended task here (default: over --task)")] = None,
) -> None:
    """Pin rotated keys in a task on every aggregator, write the amended task.json and print it."""
    from twinmpc.mpc.task import b64encode
    from twinmpc.services.keyfiles import KeyFileError, load_hpke_key

    task = load_task(task_file)
    indices = rotate_aggregator_key or []
    if not indices and set_collector_key is None:
        raise fail("nothing to amend: give --rotate-aggregator-key INDEX and/or --set-collector-key FILE", 2)
    if any(not 0 <= j < task.num_aggregators for j in indices):
        raise fail(f"--rotate-aggregator-key must be an aggregator index of the task (0..{task.num_aggregators - 1})", 2)
    collector = None
    if set_collector_key is not None:
        try:
            collector = b64encode(load_hpke_key(set_collector_key).config.encode())
        except KeyFileError as exc:
            raise fail(str(exc), 2) from None
    client = _client(pki_dir, identity)
    endpoints = [a.endpoint for a in task.aggregators]

    async def amend_everywhere():
        amended = task
        for j in indices:
            config, _ = await client.hpke_config(endpoints[j])
            change = {"aggregator_hpke_config": {"index": j, "hpke_config": b64encode(config.encode())}}
            # aggregator j first: it refuses a config that is not its own before the others record it
            amended = await client.amend_task([endpoints[j], *endpoints[:j], *endpoints[j + 1:]], amended, change)
            typer.echo(f"aggregator {j} ({endpoints[j]}): the task pins HPKE config id {config.config_id}", err=True)
        if collector is not None:
            amended = await client.amend_task(endpoints, amended, {"collector_hpke_config": collector})
            typer.echo("collector key replaced: collections from now on are sealed to it", err=True)
        return amended

    amended = run_rpc(amend_everywhere())
    text = json.dumps(amended.to_dict(), indent=2, sort_keys=True)
    target = out or task_file
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.write_text(text + "\n")
        os.replace(tmp, target)
    except OSError as exc:
        raise fail(f"{target}: {exc.strerror}") from None
    typer.echo(text)
