"""The key rotator role: this aggregator's HPKE key set, shared by its replicas, rotated online.

The set (`services.keyfiles.HpkeKeySet`) lives in the aggregator's database as
one blob sealed under the datastore key, not in ``data_dir``: replicas of one
aggregator have a data folder each but share the database and the datastore
key, so a rotation or retirement made through any replica reaches all of them
(each re-reads the blob every `REFRESH_SECONDS`, and before every admin call
that depends on it). A file in ``data_dir`` would split replicas: a key rotated
through one of them would be unknown to the others, and lost with the pod.

* start: the set in the database, or, the first time, a set holding the key of
  ``data_dir/hpke_key.json`` (created as before if absent; what ``twinmpc
  aggregator init-keys`` writes for replicas): existing deployments migrate;
* `rotate`: a new key with a fresh config id becomes current; the previous keys
  stay active, so reports already sealed to them still open (the overlap);
* `retire`: a non-current key stops opening anything and its private key is
  destroyed; refused while a task still pins it, unless forced.

Every change is a `key_event` in the audit log. `opener` opens shares with all
active keys and names a retired key precisely when a report still uses one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag

from twinmpc.crypto.seal import HpkeConfig, HpkeKeypair
from twinmpc.mpc.errors import InvalidTask, TwinMpcError
from twinmpc.mpc.task import b64encode
from twinmpc.services.aggregator.privacy import CollectionGuard
from twinmpc.services.aggregator.share_opener import ShareOpener
from twinmpc.services.keyfiles import HpkeKeyEntry, HpkeKeySet, KeyFileError, load_or_create_hpke
from twinmpc.services.storage import Datastore, NotFound
from twinmpc.services.storage.sealing import ColumnSealer

log = logging.getLogger("twinmpc.aggregator")

KEY_SET_BLOB = "hpke-keys"
# A rotation or retirement made through another replica is seen here within this time.
REFRESH_SECONDS = 1.0


class KeyRefused(TwinMpcError):
    """A key change that would break uploads: retiring the current key, or a key tasks still pin."""


def _digest(config: HpkeConfig) -> str:
    return hashlib.sha256(config.encode()).hexdigest()[:16]


class KeyRotator:
    """This aggregator's HPKE keys: current, active, retired; kept in step with the database."""

    def __init__(self, store: Datastore, datastore_key: bytes, data_dir: Path, suite: str, guard: CollectionGuard,
                 clock: Callable[[], float] = time.time, workers: int | None = None) -> None:
        self._store = store
        self._sealer = ColumnSealer(datastore_key)
        self._suite = suite
        self._guard = guard
        self._clock = clock
        self._lock = threading.Lock()  # guards the loaded set and the opener's keys
        # Reads of the database and their application happen in database order: a refresh that
        # read the set before a rotation committed must not apply it after the rotation did.
        self._sync = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._raw, self._set = self._load_or_migrate(data_dir)
        self.opener = ShareOpener(self._set.active, workers, retired=self._set.retired_ids)

    def __repr__(self) -> str:
        return f"KeyRotator({self._set!r})"

    # --- what the other roles read ------------------------------------------------------
    @property
    def current(self) -> HpkeKeypair:
        return self._set.current

    @property
    def active(self) -> list[HpkeKeypair]:
        return self._set.active

    @property
    def key_set(self) -> HpkeKeySet:
        return self._set

    def check_own(self, config: HpkeConfig | None, what: str) -> None:
        """`InvalidTask` unless `config` is one of this aggregator's active keys (read fresh from the database)."""
        self.refresh()
        if config is not None and any(k.config == config for k in self._set.active):
            return
        entry = self._set.get(config.config_id) if config is not None else None
        why = "a key this aggregator retired" if entry is not None and entry.config == config else "not one of this aggregator's HPKE configs"
        ids = ", ".join(str(k.config.config_id) for k in self._set.active)
        raise InvalidTask(f"{what} is {why} (its active config ids: {ids})")

    # --- storage ------------------------------------------------------------------------
    def _seal(self, key_set: HpkeKeySet) -> bytes:
        return self._sealer.seal("blobs", KEY_SET_BLOB.encode(), "value", key_set.to_json())

    def _open(self, raw: bytes) -> HpkeKeySet:
        try:
            return HpkeKeySet.from_json(self._sealer.open("blobs", KEY_SET_BLOB.encode(), "value", raw))
        except InvalidTag:
            raise KeyFileError("the HPKE key set in the database does not open under this datastore.key "
                               "(replicas of one aggregator must share datastore.key)") from None

    def _load_or_migrate(self, data_dir: Path) -> tuple[bytes, HpkeKeySet]:
        raw = self._store.get_blob(KEY_SET_BLOB)
        if raw:
            return bytes(raw), self._open(bytes(raw))
        seed = load_or_create_hpke(data_dir / "hpke_key.json", self._suite)
        created = []

        def init(current: bytes | None) -> bytes:
            created.clear()
            if current:
                return bytes(current)  # another replica initialised the set meanwhile
            created.append(True)
            return self._seal(HpkeKeySet.first(seed, int(self._clock())))

        raw = bytes(self._store.update_blob(KEY_SET_BLOB, init))
        key_set = self._open(raw)
        if created:
            self._guard.record("key_event", "local", action="import", config_id=seed.config.config_id,
                               suite=seed.config.suite.name, key_sha256=_digest(seed.config), source="hpke_key.json")
            log.debug("HPKE key set created from hpke_key.json (config id %d)", seed.config.config_id)  # audited; start-up stays quiet
        elif all(k.config != seed.config for k in key_set.active):
            log.warning("hpke_key.json is not an active key of the set in the database; the set is authoritative")
        return raw, key_set

    def refresh(self) -> bool:
        """Re-read the set from the database; True if it changed (another replica rotated or retired)."""
        with self._sync:
            raw = self._store.get_blob(KEY_SET_BLOB)
            if not raw or bytes(raw) == self._raw:
                return False
            self._apply(bytes(raw), self._open(bytes(raw)))
            return True

    def _apply(self, raw: bytes, key_set: HpkeKeySet) -> None:
        with self._lock:
            changed = ([k.config for k in key_set.active], key_set.retired_ids) != ([k.config for k in self._set.active], self._set.retired_ids)
            self._raw, self._set = raw, key_set
            if changed:
                self.opener.replace_keys(key_set.active, key_set.retired_ids)
        if changed:
            log.info("HPKE keys: current %d, active %s, retired %s", key_set.current.config.config_id,
                     [k.config.config_id for k in key_set.active], sorted(key_set.retired_ids))

    # --- admin operations ---------------------------------------------------------------
    def rotate(self, actor: str) -> HpkeKeypair:
        """Add a new key with a fresh config id and make it current; the others stay active. Audited."""
        previous = []

        def update(current: bytes | None) -> bytes:
            old = self._open(bytes(current))
            previous[:] = [old.current.config.config_id]
            return self._seal(old.rotated(self._suite, int(self._clock())))

        with self._sync:
            raw = bytes(self._store.update_blob(KEY_SET_BLOB, update))
            key_set = self._open(raw)
            self._apply(raw, key_set)
        new = key_set.current.config
        self._guard.record("key_event", actor, action="rotate", config_id=new.config_id, suite=new.suite.name,
                           key_sha256=_digest(new), previous_config_id=previous[0])
        log.info("HPKE key rotated: config id %d is current (was %d)", new.config_id, previous[0])
        return key_set.current

    def retire(self, config_id: int, actor: str, *, force: bool = False) -> HpkeKeyEntry:
        """Stop opening reports sealed to key `config_id` and destroy it. Audited.

        Refused for the current key, and while a task still pins the key (its uploads
        would all be refused) unless `force` (a compromised key).
        """
        self.refresh()
        entry = self._set.get(config_id)
        if entry is None:
            raise NotFound(f"this aggregator has no HPKE key with config id {config_id}")
        if entry.keypair is None:
            return entry  # already retired: a repeated call changes nothing
        if entry.keypair is self._set.current:
            raise KeyRefused(f"HPKE key {config_id} is this aggregator's current key; rotate first (twinmpc key rotate), "
                             "then retire the old key")
        pinned = self._pinned_by(entry.config)
        if pinned and not force:
            names = ", ".join(t[:8] for t in pinned[:5]) + (" ..." if len(pinned) > 5 else "")
            raise KeyRefused(f"HPKE key {config_id} is still pinned by {len(pinned)} task(s) ({names}): amend them first "
                             "(twinmpc task amend --rotate-aggregator-key), or force it (their uploads are then refused)")
        retired_here = []

        def update(current: bytes | None) -> bytes:
            retired_here.clear()
            key_set = self._open(bytes(current))
            found = key_set.get(config_id)
            if found is not None and found.keypair is None:
                return bytes(current)  # retired through another replica meanwhile
            retired_here.append(True)
            # never the current key: only a newer key can become current, and the newest is never retired
            return self._seal(key_set.retired_key(config_id, int(self._clock())))

        with self._sync:
            raw = bytes(self._store.update_blob(KEY_SET_BLOB, update))
            self._apply(raw, self._open(raw))
        if retired_here:
            self._guard.record("key_event", actor, action="retire", config_id=config_id, suite=entry.config.suite.name,
                               key_sha256=_digest(entry.config), forced=force, pinned_tasks=len(pinned))
            log.info("HPKE key %d retired", config_id)
        return self._set.get(config_id)

    def _pinned_by(self, config: HpkeConfig) -> list[str]:
        """Ids (base64url) of this aggregator's tasks whose own aggregator entry pins `config`."""
        pinned = b64encode(config.encode())
        out = []
        for record in self._store.list_tasks():
            doc = json.loads(record.task_json)
            aggregators = doc.get("aggregators", [])
            if record.agg_index < len(aggregators) and aggregators[record.agg_index].get("hpke_config") == pinned:
                out.append(doc["task_id"])
        return out

    # --- following the other replicas ---------------------------------------------------
    def start(self) -> None:
        """Re-read the set every `REFRESH_SECONDS` on a daemon thread (no event loop needed)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="hpke-key-refresh", daemon=True)
            self._thread.start()

    def _follow(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            try:
                self.refresh()
            except (TwinMpcError, OSError) as exc:  # database briefly away: keep the keys loaded
                log.warning("HPKE key set refresh failed, keeping the loaded keys: %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.opener.close()
