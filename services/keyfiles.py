"""Secret key files: HPKE keypairs (aggregators, collectors) and the datastore key.

Written atomically with 0600 permissions; refused at load if group/other can
read them, so a key left world-readable is noticed rather than used.

An aggregator holds a *set* of HPKE keys (`HpkeKeySet`: each with its config id,
state and times) so it can rotate them with an overlap period. The set's bytes
are kept sealed in the aggregator's database, where replicas share them
(`services.aggregator.key_rotator`); a single-key ``hpke_key.json`` (as
``twinmpc aggregator init-keys`` writes it) becomes the set's first key.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinmpc.crypto.seal import HpkeConfig, HpkeKeypair
from twinmpc.mpc.errors import TwinMpcError
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


# --- an aggregator's HPKE key set ------------------------------------------------------------
ACTIVE = "active"
RETIRED = "retired"
KEY_SET_VERSION = 1


@dataclass(frozen=True)
class HpkeKeyEntry:
    """One key of an aggregator's set: public config, state, times; the private key while active.

    Retiring a key destroys its private key: a report sealed to it can never be opened
    again, not even by a process that still has an old copy of the set.
    """

    config: HpkeConfig
    state: str
    created: int
    retired: int | None = None
    keypair: HpkeKeypair | None = None

    def __post_init__(self) -> None:
        if self.state == ACTIVE:
            if self.keypair is None or self.keypair.config != self.config or self.retired is not None:
                raise ValueError(f"active HPKE key {self.config.config_id} needs its private key and no retirement time")
        elif self.state == RETIRED:
            if self.keypair is not None or self.retired is None:
                raise ValueError(f"retired HPKE key {self.config.config_id} keeps no private key and needs its retirement time")
        else:
            raise ValueError(f"HPKE key state must be {ACTIVE!r} or {RETIRED!r}, got {self.state!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hpke_config": b64encode(self.config.encode()), "state": self.state, "created": self.created}
        if self.keypair is not None:
            out["private_key"] = b64encode(self.keypair.private_bytes())
        if self.retired is not None:
            out["retired"] = self.retired
        return out

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> HpkeKeyEntry:
        config = HpkeConfig.decode(b64decode(doc["hpke_config"], "hpke_config"))
        keypair = None
        if "private_key" in doc:
            keypair = HpkeKeypair.from_private_bytes(config.config_id, config.suite.name, b64decode(doc["private_key"], "private_key"))
        return cls(config, doc["state"], int(doc["created"]), doc.get("retired"), keypair)


@dataclass(frozen=True)
class HpkeKeySet:
    """All HPKE keys an aggregator ever used, oldest first, with distinct config ids.

    The *current* key (the one `GetHpkeConfig` hands out and new tasks pin) is the
    active key added last; every active key opens reports, so reports sealed to an
    older key still open until that key is retired (the overlap period).
    """

    entries: tuple[HpkeKeyEntry, ...]

    def __post_init__(self) -> None:
        ids = [e.config.config_id for e in self.entries]
        if len(set(ids)) != len(ids):
            raise ValueError("HPKE key set holds a config id twice")
        if not any(e.state == ACTIVE for e in self.entries):
            raise ValueError("HPKE key set has no active key")

    def __repr__(self) -> str:
        return f"HpkeKeySet(current={self.current.config.config_id}, active={[k.config.config_id for k in self.active]}, retired={sorted(self.retired_ids)})"

    @classmethod
    def first(cls, keypair: HpkeKeypair, now: int) -> HpkeKeySet:
        return cls((HpkeKeyEntry(keypair.config, ACTIVE, now, keypair=keypair),))

    @property
    def current(self) -> HpkeKeypair:
        return next(e.keypair for e in reversed(self.entries) if e.keypair is not None)

    @property
    def active(self) -> list[HpkeKeypair]:
        """Every key that opens reports, the current one first."""
        return [e.keypair for e in reversed(self.entries) if e.keypair is not None]

    @property
    def retired_ids(self) -> frozenset[int]:
        return frozenset(e.config.config_id for e in self.entries if e.state == RETIRED)

    def get(self, config_id: int) -> HpkeKeyEntry | None:
        return next((e for e in self.entries if e.config.config_id == config_id), None)

    def rotated(self, suite: str, now: int) -> HpkeKeySet:
        """The set with a new current key under a config id no other entry uses.

        Ids count up from the current key's, wrapping at 255; when all 256 are taken,
        the oldest retired entry gives its id up (a config id is one byte on the wire).
        """
        entries = list(self.entries)
        used = {e.config.config_id for e in entries}
        start = self.current.config.config_id
        free = [i % 256 for i in range(start + 1, start + 257) if i % 256 not in used]
        if not free:
            oldest = next((e for e in entries if e.state == RETIRED), None)
            if oldest is None:
                raise ValueError("all 256 HPKE config ids are active keys; retire some first")
            entries.remove(oldest)
            free = [oldest.config.config_id]
        keypair = HpkeKeypair.generate(free[0], suite)
        return HpkeKeySet((*entries, HpkeKeyEntry(keypair.config, ACTIVE, now, keypair=keypair)))

    def retired_key(self, config_id: int, now: int) -> HpkeKeySet:
        """The set with key `config_id` retired and its private key dropped (never the current key)."""
        entry = self.get(config_id)
        if entry is None or entry.state != ACTIVE or entry.keypair is self.current:
            raise ValueError(f"HPKE key {config_id} is not an active, non-current key of this set")
        retired = HpkeKeyEntry(entry.config, RETIRED, entry.created, retired=now)
        return HpkeKeySet(tuple(retired if e is entry else e for e in self.entries))

    def to_json(self) -> bytes:
        return json.dumps({"version": KEY_SET_VERSION, "keys": [e.to_dict() for e in self.entries]}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> HpkeKeySet:
        try:
            doc = json.loads(data)
            if doc.get("version") != KEY_SET_VERSION:
                raise ValueError(f"unsupported key set version {doc.get('version')!r}")
            return cls(tuple(HpkeKeyEntry.from_dict(e) for e in doc["keys"]))
        except (KeyError, ValueError, TypeError, AttributeError, TwinMpcError) as exc:
            raise KeyFileError(f"malformed HPKE key set: {exc}") from None
