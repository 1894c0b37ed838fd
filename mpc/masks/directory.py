"""Who a peer is: credentials that bind an identity to its long-term X25519 channel key.

The server relays each neighbour's (identity, credential); a client trusts a
channel key only through its `PeerDirectory`, so an active server cannot
substitute keys and read the shares a client seals to its neighbours
(Bonawitz et al. 2017, Sec. 4: the active-server variant needs authenticated
key agreement).  `PinnedDirectory` is the simplest directory: enrolled
identities and their raw channel keys, pinned in advance; the service layer
provides one that verifies certificates of the deployment CA.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from twinmpc.mpc.masks.channel import public_bytes
from twinmpc.mpc.masks.errors import UntrustedPeer


class PeerDirectory(Protocol):
    def channel_key(self, identity: str, credential: bytes) -> bytes:
        """The peer's 32-byte X25519 channel public key; `UntrustedPeer` if the credential does not verify."""
        ...


@dataclass(frozen=True)
class PinnedDirectory:
    """Enrolled identities with pinned raw channel keys; the credential is the raw key itself."""

    keys: Mapping[str, bytes]

    def channel_key(self, identity: str, credential: bytes) -> bytes:
        pinned = self.keys.get(identity)
        if pinned is None:
            raise UntrustedPeer(f"peer {identity!r} is not enrolled")
        if not hmac.compare_digest(pinned, credential):
            raise UntrustedPeer(f"peer {identity!r} presented a channel key that is not the enrolled one")
        return pinned


@dataclass(frozen=True)
class ClientKeys:
    """One client's long-term identity: its name, its X25519 channel key and the credential peers check."""

    identity: str
    channel_key: X25519PrivateKey = field(repr=False)
    credential: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"ClientKeys({self.identity!r}, channel_key=<redacted>)"

    @classmethod
    def pinned(cls, identity: str, channel_key: X25519PrivateKey | None = None) -> ClientKeys:
        """Keys for a `PinnedDirectory` deployment (credential = raw public key)."""
        key = channel_key or X25519PrivateKey.generate()
        return cls(identity, key, public_bytes(key))


__all__ = ["ClientKeys", "PeerDirectory", "PinnedDirectory"]
