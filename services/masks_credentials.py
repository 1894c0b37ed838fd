"""Masks-mode identities of edge nodes, anchored in the deployment's PKI.

An edge node keeps a long-term X25519 *channel* key (file ``masks_channel.key``,
0600, created on first use) and proves it is its own with its edge
certificate: the credential it advertises is::

    version (u8, = 1) || certificate DER (u16 length) || channel public key (32)
    || ECDSA-P256-SHA256 signature (u16 length, DER) by the certificate's key over
       "twinmpc/v1/masks/channel-key" 0x00 || identity || 0x00 || channel public key

`CertificateDirectory` is the `mpc.masks.directory.PeerDirectory` edge nodes
use: a peer's credential is accepted only if its certificate was issued by the
deployment CA, is valid now, carries role ``edge`` and the identity the server
named, and signs the channel key.  Verified credentials are cached by digest,
so a node pays the checks once per peer, not once per window.

The channel key never leaves the node: the shares sealed under it are what an
active server would like to read (mpc/masks/directory.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import struct
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from twinmpc.mpc.masks.channel import public_bytes
from twinmpc.mpc.masks.directory import ClientKeys
from twinmpc.mpc.masks.errors import UntrustedPeer
from twinmpc.services.pki import InvalidCertificate, Role, principal_from_certificate

CHANNEL_KEY_FILE = "masks_channel.key"
_VERSION = 1
_LABEL = b"twinmpc/v1/masks/channel-key\x00"


def _binding(identity: str, channel_public: bytes) -> bytes:
    return _LABEL + identity.encode() + b"\x00" + channel_public


def load_channel_key(state_dir: Path) -> X25519PrivateKey:
    """The node's channel key: read, or created with 0600 permissions (never world-readable)."""
    path = Path(state_dir) / CHANNEL_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raw = path.read_bytes()
        if len(raw) != 32:
            raise UntrustedPeer(f"{path} does not hold a 32-byte X25519 key") from None
        return X25519PrivateKey.from_private_bytes(raw)
    key = X25519PrivateKey.generate()
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes_raw())
    return key


def client_keys(cert_pem: bytes, key_pem: bytes, channel_key: X25519PrivateKey) -> ClientKeys:
    """This node's masks identity: its certificate identity, channel key and signed credential."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    identity = principal_from_certificate(cert).identity
    signer = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(signer, ec.EllipticCurvePrivateKey):
        raise UntrustedPeer("the edge certificate key is not an EC key")
    channel_public = public_bytes(channel_key)
    signature = signer.sign(_binding(identity, channel_public), ec.ECDSA(hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    credential = struct.pack(">BH", _VERSION, len(der)) + der + channel_public + struct.pack(">H", len(signature)) + signature
    return ClientKeys(identity, channel_key, credential)


def load_client_keys(cert_file: Path, key_file: Path, state_dir: Path) -> ClientKeys:
    return client_keys(Path(cert_file).read_bytes(), Path(key_file).read_bytes(), load_channel_key(state_dir))


class CertificateDirectory:
    """Peers' channel keys, accepted through certificates of the deployment CA."""

    def __init__(self, ca_pem: bytes, *, clock=lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        self._ca = x509.load_pem_x509_certificate(ca_pem)
        self._clock = clock
        self._verified: dict[bytes, tuple[str, bytes, dt.datetime]] = {}

    def channel_key(self, identity: str, credential: bytes) -> bytes:
        digest = hashlib.sha256(credential).digest()
        hit = self._verified.get(digest)
        if hit is None:
            hit = self._verify(credential)
            self._verified[digest] = hit
        name, channel_public, not_after = hit
        if name != identity:
            raise UntrustedPeer(f"credential belongs to {name!r}, not to {identity!r}")
        if self._clock() > not_after:
            raise UntrustedPeer(f"certificate of {identity!r} expired")
        return channel_public

    def _verify(self, credential: bytes) -> tuple[str, bytes, dt.datetime]:
        try:
            version, length = struct.unpack_from(">BH", credential, 0)
            der = credential[3 : 3 + length]
            channel_public = credential[3 + length : 35 + length]
            (sig_len,) = struct.unpack_from(">H", credential, 35 + length)
            signature = credential[37 + length :]
        except struct.error:
            raise UntrustedPeer("credential is truncated") from None
        if version != _VERSION or len(channel_public) != 32 or len(signature) != sig_len:
            raise UntrustedPeer("credential has the wrong version or length")
        try:
            cert = x509.load_der_x509_certificate(der)
            cert.verify_directly_issued_by(self._ca)
            principal = principal_from_certificate(cert)
        except (ValueError, TypeError, InvalidSignature, InvalidCertificate) as exc:
            raise UntrustedPeer(f"credential certificate is not one of this deployment's: {exc}") from None
        now = self._clock()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise UntrustedPeer(f"certificate of {principal.identity!r} is not valid now")
        if principal.role != Role.EDGE:
            raise UntrustedPeer(f"{principal.identity!r} holds a {principal.role.value} certificate, not an edge one")
        public = cert.public_key()
        try:
            if not isinstance(public, ec.EllipticCurvePublicKey):
                raise InvalidSignature
            public.verify(signature, _binding(principal.identity, channel_public), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise UntrustedPeer(f"channel key of {principal.identity!r} is not signed by its certificate") from None
        return principal.identity, channel_public, cert.not_valid_after_utc


__all__ = ["CHANNEL_KEY_FILE", "CertificateDirectory", "client_keys", "load_channel_key", "load_client_keys"]
