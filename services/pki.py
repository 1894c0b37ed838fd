"""A small X.509 PKI for the mutually authenticated gRPC links of twinmpc.

Every party (edge node, aggregator, controller, operator) holds a leaf certificate
issued by its deployment's CA. The certificate carries *who* (subject CN = identity)
and *what role* (subject OU = role, repeated in a dedicated non-critical extension
``TWINMPC_ROLE_OID`` holding a DER UTF8String). The authorisation layer
(`services.auth`) reads the role from the extension and requires the OU to agree, so
a certificate issued by a foreign tool with a look-alike OU only is rejected.

Keys are ECDSA P-256: accepted by grpcio's BoringSSL for both server and client
certificates, and by every TLS 1.2/1.3 peer. (Ed25519 leaves were tried with grpcio
1.85: the handshake fails, so Ed25519 is not offered.) The CA key is written with mode 0600
and encrypted (PKCS#8, best available) when the passphrase environment variable is
set; leaf keys stay unencrypted at 0600 because gRPC needs the plain PEM.

Roles restrict the extended key usage as well: only aggregators may act as TLS
servers (serverAuth + clientAuth); edge, controller and admin certificates are
client-only (clientAuth), so a stolen edge key cannot impersonate an aggregator.

Errors::

    TwinMpcError (mpc.errors)
    └── PkiError                 CA/leaf files missing, unreadable, too permissive, bad passphrase
        └── InvalidCertificate   a certificate does not carry a well-formed, consistent role

This module is not a general-purpose CA: no revocation lists, no intermediate CAs,
no renewal. Short validity periods and re-issuance are the revocation story.
"""

from __future__ import annotations

import datetime as _dt
import enum
import ipaddress
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from twinmpc.mpc.errors import TwinMpcError

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CA_PASSPHRASE_ENV",
    "TWINMPC_ROLE_OID",
    "CertificateAuthority",
    "InvalidCertificate",
    "IssuedCertificate",
    "IssuedPaths",
    "PkiError",
    "Principal",
    "Role",
    "channel_credentials",
    "create_ca",
    "init_ca",
    "issue",
    "load_ca",
    "principal_from_certificate",
    "server_credentials",
]

#: Role extension OID, a UUID-derived arc (ITU-T X.667 / RFC 4122 §4.1 "2.25.<uuid>"),
#: which needs no registration and cannot collide with an assigned OID.
TWINMPC_ROLE_OID = x509.ObjectIdentifier("2.25.135797915461606894482770826313601697664")

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
#: Environment variable holding the CA key passphrase; unset means "key unencrypted".
CA_PASSPHRASE_ENV = "TWINMPC_CA_PASSPHRASE"

_CA_DAYS = 3650
_LEAF_DAYS = 90
_MAX_LEAF_DAYS = 825  # CA/Browser Forum's historic ceiling; longer leaves are a mistake here
_BACKDATE = _dt.timedelta(minutes=5)  # tolerate small clock skew between peers
_IDENTITY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DNS_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_UTF8STRING_TAG = 0x0C


class PkiError(TwinMpcError):
    """PKI material is missing, unreadable or stored unsafely."""


class InvalidCertificate(PkiError):
    """A certificate lacks a well-formed role, or its role fields disagree."""


class Role(str, enum.Enum):
    """The four kinds of party in a twinmpc deployment (DESIGN.md, "Roles and flows")."""

    EDGE = "edge"
    AGGREGATOR = "aggregator"
    CONTROLLER = "controller"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the certificate's CN and its role."""

    identity: str
    role: Role

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise TypeError(f"role must be a Role, got {type(self.role).__name__}")
        _check_identity(self.identity)


def _check_identity(identity: str) -> str:
    # The identity doubles as a file name in `issue`, so path separators and
    # leading dots are refused rather than escaped.
    if not isinstance(identity, str) or _IDENTITY_RE.fullmatch(identity) is None:
        raise ValueError(
            "identity must be 1-64 characters of [A-Za-z0-9._-], starting alphanumeric"
        )
    return identity


def _coerce_role(role: Role | str) -> Role:
    if isinstance(role, Role):
        return role
    try:
        return Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {role!r}; expected one of: {allowed}") from None


# --- role extension: DER UTF8String (X.690 §8.23), short form length only ---------------


def _encode_role_extension(role: Role) -> bytes:
    body = role.value.encode("utf-8")
    return bytes([_UTF8STRING_TAG, len(body)]) + body  # role names are < 128 bytes


def _decode_role_extension(value: bytes) -> Role:
    if len(value) < 2 or value[0] != _UTF8STRING_TAG or value[1] >= 0x80:
        raise InvalidCertificate("role extension is not a short DER UTF8String")
    if len(value) != 2 + value[1]:
        raise InvalidCertificate("role extension has a wrong length or trailing bytes")
    try:
        return Role(value[2:].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidCertificate("role extension names no known role") from None


def principal_from_certificate(cert: x509.Certificate | bytes) -> Principal:
    """Read (identity, role) from a leaf certificate (PEM bytes or parsed).

    The certificate chain must already have been verified (the TLS handshake does
    that); this only interprets the subject and the role extension and requires
    exactly one CN, exactly one OU, and an OU equal to the extension's role.
    """
    if isinstance(cert, bytes):
        try:
            cert = x509.load_pem_x509_certificate(cert)
        except ValueError:
            raise InvalidCertificate("peer certificate is not a PEM X.509 certificate") from None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(cns) != 1:
        raise InvalidCertificate("certificate subject must carry exactly one CN")
    if len(ous) != 1:
        raise InvalidCertificate("certificate subject must carry exactly one OU (the role)")
    try:
        ext = cert.extensions.get_extension_for_oid(TWINMPC_ROLE_OID)
    except x509.ExtensionNotFound:
        raise InvalidCertificate("certificate has no twinmpc role extension") from None
    except ValueError:  # duplicate or malformed extensions
        raise InvalidCertificate("certificate extensions do not parse") from None
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise InvalidCertificate("role extension has an unexpected type")
    role = _decode_role_extension(ext.value.value)
    if ous[0].value != role.value:
        raise InvalidCertificate("certificate OU disagrees with its role extension")
    identity = cns[0].value
    if not isinstance(identity, str) or _IDENTITY_RE.fullmatch(identity) is None:
        raise InvalidCertificate("certificate CN is not a valid twinmpc identity")
    return Principal(identity=identity, role=role)


# --- in-memory CA and leaves ---------------------------------------------------------


def _now(now: _dt.datetime | None) -> _dt.datetime:
    if now is None:
        return _dt.datetime.now(_dt.timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def _san_entries(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        labels = host.split(".")
        if host.startswith("*."):
            labels = labels[1:]
        if len(host) > 253 or not labels or not all(_DNS_LABEL_RE.fullmatch(x) for x in labels):
            raise ValueError(f"host {host!r} is neither an IP address nor a DNS name")
        names.append(x509.DNSName(host))
    return names


def _pem_key(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


@dataclass(frozen=True)
class IssuedCertificate:
    """A leaf certificate, its private key and the CA certificate, all PEM."""

    principal: Principal
    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    ca_pem: bytes

    def __repr__(self) -> str:
        return (
            f"IssuedCertificate(identity={self.principal.identity!r}, "
            f"role={self.principal.role.value!r}, key=<redacted>)"
        )


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate with its signing key (kept out of repr)."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            raise TypeError("CA private key must be an ECDSA key")
        if self.private_key.public_key() != self.certificate.public_key():
            raise PkiError("CA private key does not match the CA certificate")
        try:
            bc = self.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            raise PkiError("CA certificate lacks basicConstraints") from None
        if not bc.value.ca:
            raise PkiError("CA certificate is not marked cA=TRUE")

    def __repr__(self) -> str:
        return f"CertificateAuthority(subject={self.certificate.subject.rfc4514_string()!r}, key=<redacted>)"

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        role: Role | str,
        identity: str,
        hosts: Sequence[str] = ("localhost", "127.0.0.1"),
        days: int = _LEAF_DAYS,
        *,
        now: _dt.datetime | None = None,
    ) -> IssuedCertificate:
        """Issue a fresh P-256 leaf for `identity` in `role` (see module docstring)."""
        role = _coerce_role(role)
        _check_identity(identity)
        if not isinstance(days, int) or not 1 <= days <= _MAX_LEAF_DAYS:
            raise ValueError(f"days must be an integer in [1, {_MAX_LEAF_DAYS}]")
        sans = _san_entries(hosts)
        start = _now(now) - _BACKDATE
        end = start + _BACKDATE + _dt.timedelta(days=days)
        if end > self.certificate.not_valid_after_utc:
            raise PkiError("leaf validity would outlast the CA certificate")
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if role is Role.AGGREGATOR:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
                        x509.NameAttribute(NameOID.COMMON_NAME, identity),
                    ]
                )
            )
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
            # Non-critical: a critical unknown extension would make BoringSSL reject the chain.
            .add_extension(
                x509.UnrecognizedExtension(TWINMPC_ROLE_OID, _encode_role_extension(role)),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.private_key, hashes.SHA256())
        return IssuedCertificate(
            principal=Principal(identity=identity, role=role),
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_pem_key(key),
            ca_pem=self.cert_pem,
        )


def create_ca(
    name: str = "twinmpc CA", days: int = _CA_DAYS, *, now: _dt.datetime | None = None
) -> CertificateAuthority:
    """Create a self-signed P-256 CA in memory (pathLen 0: it signs leaves only)."""
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise ValueError("CA name must be 1-64 characters")
    if not isinstance(days, int) or days < 1:
        raise ValueError("days must be a positive integer")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = _now(now) - _BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _BACKDATE + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(certificate=cert, private_key=key)


# --- files ---------------------------------------------------------------------------


def _write_file(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """Write a complete file atomically, with `mode` set before any byte is written.

    The data goes to a private temp file first; it is then renamed over `path`
    (overwrite) or hard-linked to it, which fails if `path` exists (no clobbering,
    even when two `issue` calls race).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise PkiError(f"{path} exists; refusing to overwrite") from None
    finally:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)


def _read_secret_file(path: Path) -> bytes:
    """Read a private key, refusing files readable by group or others (like ssh)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise PkiError(f"{path} not found") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise PkiError(f"{path} is accessible by group/others; chmod 600 it")
    return path.read_bytes()


def _passphrase(env: str | None) -> bytes | None:
    if env is None:
        return None
    value = os.environ.get(env)
    return value.encode("utf-8") if value else None


@dataclass(frozen=True)
class IssuedPaths:
    """Where `issue` wrote a leaf: `<identity>.crt`, `<identity>.key`, `ca.crt`."""

    cert: Path
    key: Path
    ca: Path


def init_ca(
    out_dir: str | os.PathLike[str],
    name: str = "twinmpc CA",
    days: int = _CA_DAYS,
    *,
    passphrase_env: str | None = CA_PASSPHRASE_ENV,
    overwrite: bool = False,
    now: _dt.datetime | None = None,
) -> CertificateAuthority:
    """Create a CA and write `ca.crt` (0644) and `ca.key` (0600) into `out_dir`.

    If the environment variable `passphrase_env` is set and non-empty, the key is
    encrypted with it; `load_ca` then needs the same variable.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = create_ca(name, days, now=now)
    if not overwrite:
        for fname in (CA_KEY_FILE, CA_CERT_FILE):
            if (out / fname).exists():
                raise PkiError(f"{out / fname} exists; refusing to overwrite")
    _write_file(out / CA_KEY_FILE, _pem_key(ca.private_key, _passphrase(passphrase_env)), 0o600, overwrite)
    _write_file(out / CA_CERT_FILE, ca.cert_pem, 0o644, overwrite)
    return ca


def load_ca(
    ca_dir: str | os.PathLike[str], *, passphrase_env: str | None = CA_PASSPHRASE_ENV
) -> CertificateAuthority:
    """Load the CA written by `init_ca`, decrypting its key if it is encrypted."""
    d = Path(ca_dir)
    key_pem = _read_secret_file(d / CA_KEY_FILE)
    try:
        cert = x509.load_pem_x509_certificate((d / CA_CERT_FILE).read_bytes())
    except FileNotFoundError:
        raise PkiError(f"{d / CA_CERT_FILE} not found") from None
    except ValueError:
        raise PkiError(f"{d / CA_CERT_FILE} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=_passphrase(passphrase_env))
    except TypeError:
        # cryptography raises TypeError for "encrypted but no password" and the reverse.
        raise PkiError(
            f"CA key encryption does not match ${passphrase_env} (set it iff the key is encrypted)"
        ) from None
    except ValueError:
        raise PkiError("CA key could not be decrypted or parsed (wrong passphrase?)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("CA key is not an ECDSA key")
    return CertificateAuthority(certificate=cert, private_key=key)


def issue(
    ca_dir: str | os.PathLike[str],
    role: Role | str,
    identity: str,
    out_dir: str | os.PathLike[str],
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = _LEAF_DAYS,
    *,
    passphrase_env: str | None = CA_PASSPHRASE_ENV,
    overwrite: bool = False,
    now: _dt.datetime | None = None,
) -> IssuedPaths:
    """Issue a leaf with the CA in `ca_dir`; write `<identity>.crt/.key` and `ca.crt`."""
    ca = load_ca(ca_dir, passphrase_env=passphrase_env)
    leaf = ca.issue(role, identity, hosts, days, now=now)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = IssuedPaths(
        cert=out / f"{identity}.crt", key=out / f"{identity}.key", ca=out / CA_CERT_FILE
    )
    if not overwrite:
        for p in (paths.cert, paths.key):
            if p.exists():
                raise PkiError(f"{p} exists; refusing to overwrite")
    _write_file(paths.key, leaf.key_pem, 0o600, overwrite)
    _write_file(paths.cert, leaf.cert_pem, 0o644, overwrite)
    if paths.ca.exists():
        if paths.ca.read_bytes() != leaf.ca_pem:
            raise PkiError(f"{paths.ca} holds a different CA certificate")
    else:
        _write_file(paths.ca, leaf.ca_pem, 0o644, False)
    return paths


# --- gRPC credentials ----------------------------------------------------------------

PemSource = bytes | str | os.PathLike[str]


def _load(source: PemSource, *, secret: bool) -> bytes:
    """PEM bytes pass through; a str or path is read from disk (keys: 0600 enforced)."""
    if isinstance(source, bytes):
        return source
    path = Path(source)
    if secret:
        return _read_secret_file(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{path} not found") from None


def server_credentials(cert: PemSource, key: PemSource, ca: PemSource) -> grpc.ServerCredentials:
    """Server-side mTLS: present `cert`, require a client certificate chaining to `ca`."""
    return grpc.ssl_server_credentials(
        [(_load(key, secret=True), _load(cert, secret=False))],
        root_certificates=_load(ca, secret=False),
        require_client_auth=True,
    )


def channel_credentials(cert: PemSource, key: PemSource, ca: PemSource) -> grpc.ChannelCredentials:
    """Client-side mTLS: present `cert`, trust only servers chaining to `ca`."""
    return grpc.ssl_channel_credentials(
        root_certificates=_load(ca, secret=False),
        private_key=_load(key, secret=True),
        certificate_chain=_load(cert, secret=False),
    )
