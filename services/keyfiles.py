"""Secret key files: HPKE keypairs (aggregators, collectors) and the datastore key.

Written atomically with 0600 permissions; refused at load if group/other can
read them, so a key left world-readable is noticed rather than used.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from twinmpc.crypto.seal import HpkeKeypair
from twinmpc.mpc.task import b64decode, b64encode


class KeyFileError(Exception):
    """A key file is missing, malformed or too widely readable."""


def write_secret(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_secret(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{path} not found") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} is readable by group/other; chmod 600 it")
    return path.read_bytes()


def write_hpke_key(path: Path, suite: str, config_id: int = 0) -> HpkeKeypair:
    if path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite a key")
    kp = HpkeKeypair.generate(config_id, suite)
    write_secret(path, json.dumps({"config_id": config_id, "suite": suite, "private_key": b64encode(kp.private_bytes())}).encode())
    return kp


def load_hpke_key(path: Path) -> HpkeKeypair:
    try:
        doc = json.loads(read_secret(path))
        return HpkeKeypair.from_private_bytes(doc["config_id"], doc["suite"], b64decode(doc["private_key"], "private_key"))
    except (KeyError, ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: malformed HPKE key file") from exc


def load_or_create_hpke(path: Path, suite: str, config_id: int = 1) -> HpkeKeypair:
    return load_hpke_key(path) if path.exists() else write_hpke_key(path, suite, config_id)


def load_or_create_datastore_key(path: Path) -> bytes:
    if not path.exists():
        key = os.urandom(32)
        write_secret(path, key)
        return key
    key = read_secret(path)
    if len(key) != 32:
        raise KeyFileError(f"{path}: datastore key must be 32 bytes")
    return key


def load_or_create_replica_id(path: Path) -> bytes:
    """This process's name in job leases, kept in its data_dir so a restart resumes its own jobs at once.

    Not a secret; replicas sharing a database need different data_dirs (and so different ids).
    """
    if not path.exists():
        write_secret(path, os.urandom(8).hex().encode())
    return bytes.fromhex(path.read_text().strip())
