"""What every `twinmpc` command shares: the one-line error exit and mTLS credentials from files.

A user mistake ends a command with ``error: <one line>`` on stderr and exit
code 2 (bad usage or input file) or 1 (refused or failed), never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
import typer

from twinmpc.mpc.errors import TwinMpcError

T = TypeVar("T")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print the one error line; the caller raises the returned Exit (``raise fail(...) from None``)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def creds(pki_dir: Path, identity: str) -> grpc.ChannelCredentials:
    """mTLS credentials of `identity` from a `twinmpc pki` folder (ca.crt, <identity>.crt/.key)."""
    return creds_from(pki_dir / f"{identity}.crt", pki_dir / f"{identity}.key", pki_dir / "ca.crt")


def creds_from(cert: Path, key: Path, ca: Path) -> grpc.ChannelCredentials:
    """mTLS credentials from three PEM files; a missing or bad file exits 2 with its name."""
    from twinmpc.services import pki

    try:
        return pki.channel_credentials(cert, key, ca)
    except pki.PkiError as exc:
        raise fail(str(exc), 2) from None


def run_rpc(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning RPC and domain errors into exit code 1 with a message."""
    try:
        return asyncio.run(coro)
    except grpc.aio.AioRpcError as exc:
        raise fail(f"{exc.code().name}: {exc.details()}") from None
    except TwinMpcError as exc:
        raise fail(str(exc)) from None


def load_task(path: Path):
    """A task document from a JSON file; an unreadable or invalid file exits 2 naming it."""
    from twinmpc.mpc.task import Task

    try:
        return Task.from_json(path.read_text())
    except OSError as exc:
        raise fail(str(exc), 2) from None
    except TwinMpcError as exc:
        raise fail(f"{path}: {exc}", 2) from None


def utc(unix: int) -> str:
    """Unix seconds as an ISO-8601 UTC timestamp, the way every command prints times."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
