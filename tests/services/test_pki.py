"""services.pki: CA and leaf issuance, role encoding, files on disk, gRPC credentials."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from twinmpc.mpc.errors import TwinMpcError
from twinmpc.services import pki
from twinmpc.services.pki import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    TWINMPC_ROLE_OID,
    InvalidCertificate,
    PkiError,
    Principal,
    Role,
)

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.timezone.utc)
ENV = "TWINMPC_TEST_CA_PASSPHRASE"


@pytest.fixture(scope="module")
def ca() -> pki.CertificateAuthority:
    return pki.create_ca("test CA", now=NOW)


@pytest.fixture(scope="module")
def leaf_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def forge(
    ca: pki.CertificateAuthority,
    key: ec.EllipticCurvePrivateKey,
    *,
    cns: tuple[str, ...] = ("edge-1",),
    ous: tuple[str, ...] = ("edge",),
    role_ext: bytes | None = b"\x0c\x04edge",
) -> x509.Certificate:
    """A CA-signed certificate with hand-picked (possibly malformed) role fields."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, o) for o in ous]
    attrs += [x509.NameAttribute(NameOID.COMMON_NAME, c) for c in cns]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
    )
    if role_ext is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(TWINMPC_ROLE_OID, role_ext), critical=False
        )
    return builder.sign(ca.private_key, hashes.SHA256())


# --- issuance ------------------------------------------------------------------------


def test_role_enum_values() -> None:
    assert [r.value for r in Role] == ["edge", "aggregator", "controller", "admin"]


@pytest.mark.parametrize("role", list(Role))
def test_issued_leaf_round_trips_principal(ca: pki.CertificateAuthority, role: Role) -> None:
    leaf = ca.issue(role.value, f"{role.value}-7", now=NOW)
    assert leaf.principal == Principal(f"{role.value}-7", role)
    assert pki.principal_from_certificate(leaf.cert_pem) == leaf.principal
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    cert.verify_directly_issued_by(ca.certificate)
    assert leaf.ca_pem == ca.cert_pem


def test_leaf_fields(ca: pki.CertificateAuthority) -> None:
    leaf = ca.issue(Role.EDGE, "cabinet-12", hosts=["edge.example", "::1"], days=30, now=NOW)
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    assert cert.subject.rfc4514_string() == "CN=cabinet-12,OU=edge"
    # Known answer: DER UTF8String "edge" = tag 0c, length 04, 'e' 'd' 'g' 'e'.
    ext = cert.extensions.get_extension_for_oid(TWINMPC_ROLE_OID)
    assert not ext.critical
    assert ext.value.value == bytes.fromhex("0c04" "65646765")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["edge.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]
    assert cert.not_valid_before_utc == NOW - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=30)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"


def test_default_sans(ca: pki.CertificateAuthority) -> None:
    cert = x509.load_pem_x509_certificate(ca.issue("aggregator", "agg-1", now=NOW).cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


@pytest.mark.parametrize(
    ("role", "usages"),
    [
        (Role.AGGREGATOR, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
        (Role.EDGE, [ExtendedKeyUsageOID.CLIENT_AUTH]),
        (Role.CONTROLLER, [ExtendedKeyUsageOID.CLIENT_AUTH]),
        (Role.ADMIN, [ExtendedKeyUsageOID.CLIENT_AUTH]),
    ],
)
def test_only_aggregators_may_serve(ca: pki.CertificateAuthority, role: Role, usages: list) -> None:
    cert = x509.load_pem_x509_certificate(ca.issue(role, "p-1", now=NOW).cert_pem)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == usages


def test_ca_fields(ca: pki.CertificateAuthority) -> None:
    bc = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    assert ca.certificate.subject == ca.certificate.issuer
    assert "PRIVATE" not in repr(ca) and "redacted" in repr(ca)


def test_repr_redacts_key(ca: pki.CertificateAuthority) -> None:
    leaf = ca.issue("edge", "edge-1", now=NOW)
    assert b"PRIVATE KEY" in leaf.key_pem
    assert "PRIVATE" not in repr(leaf) and "redacted" in repr(leaf)


@pytest.mark.parametrize("identity", ["", "../etc", "a/b", ".hidden", "x" * 65, "ümlaut", "a b"])
def test_bad_identity_rejected(ca: pki.CertificateAuthority, identity: str) -> None:
    with pytest.raises(ValueError, match="identity"):
        ca.issue("edge", identity, now=NOW)


def test_issue_rejects_bad_parameters(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        ca.issue("operator", "x-1", now=NOW)
    with pytest.raises(ValueError, match="days"):
        ca.issue("edge", "x-1", days=0, now=NOW)
    with pytest.raises(ValueError, match="days"):
        ca.issue("edge", "x-1", days=826, now=NOW)
    with pytest.raises(ValueError, match="neither an IP"):
        ca.issue("edge", "x-1", hosts=["bad_host!"], now=NOW)
    with pytest.raises(ValueError, match="timezone"):
        ca.issue("edge", "x-1", now=dt.datetime(2026, 11, 25))
    with pytest.raises(TypeError):
        Principal("x-1", "edge")  # type: ignore[arg-type]


def test_leaf_cannot_outlast_ca() -> None:
    short = pki.create_ca("short CA", days=10, now=NOW)
    with pytest.raises(PkiError, match="outlast"):
        short.issue("edge", "e-1", days=30, now=NOW)


def test_ca_constructor_validates(ca: pki.CertificateAuthority) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(PkiError, match="does not match"):
        pki.CertificateAuthority(certificate=ca.certificate, private_key=other)
    leaf = ca.issue("edge", "e-1", now=NOW)
    leaf_key = serialization.load_pem_private_key(leaf.key_pem, None)
    with pytest.raises(PkiError, match="cA=TRUE"):
        pki.CertificateAuthority(x509.load_pem_x509_certificate(leaf.cert_pem), leaf_key)
    with pytest.raises(PkiError, match="basicConstraints"):
        pki.CertificateAuthority(_self_signed_without_bc(other), other)


def _self_signed_without_bc(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no-bc")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


# --- role parsing: every rejection path ----------------------------------------------


def test_forged_but_well_formed_certificate_parses(ca, leaf_key) -> None:
    assert pki.principal_from_certificate(forge(ca, leaf_key)) == Principal("edge-1", Role.EDGE)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"role_ext": None}, "no twinmpc role extension"),
        ({"ous": ("controller",)}, "OU disagrees"),
        ({"ous": ()}, "exactly one OU"),
        ({"ous": ("edge", "edge")}, "exactly one OU"),
        ({"cns": ()}, "exactly one CN"),
        ({"cns": ("a", "b")}, "exactly one CN"),
        ({"cns": ("../x",)}, "CN is not a valid"),
        ({"role_ext": b"\x13\x04edge"}, "not a short DER UTF8String"),  # PrintableString tag
        ({"role_ext": b"\x0c"}, "not a short DER UTF8String"),
        ({"role_ext": b"\x0c\x81\x04edge"}, "not a short DER UTF8String"),  # long-form length
        ({"role_ext": b"\x0c\x04edge\x00"}, "trailing"),
        ({"role_ext": b"\x0c\x05edge"}, "wrong length"),
        ({"role_ext": b"\x0c\x04root"}, "no known role"),
        ({"role_ext": b"\x0c\x02\xff\xfe"}, "no known role"),  # invalid UTF-8
        ({"role_ext": b"\x0c\x04EDGE", "ous": ("EDGE",)}, "no known role"),
    ],
)
def test_malformed_role_rejected(ca, leaf_key, kwargs: dict, match: str) -> None:
    cert = forge(ca, leaf_key, **kwargs)
    with pytest.raises(InvalidCertificate, match=match):
        pki.principal_from_certificate(cert)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InvalidCertificate, match=match):
        pki.principal_from_certificate(pem)


def test_non_pem_rejected() -> None:
    with pytest.raises(InvalidCertificate, match="not a PEM"):
        pki.principal_from_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert issubclass(InvalidCertificate, TwinMpcError)


@settings(max_examples=60, deadline=None)
@given(value=st.binary(max_size=24))
def test_random_role_extension_never_crashes(ca, leaf_key, value: bytes) -> None:
    cert = forge(ca, leaf_key, role_ext=value)
    try:
        principal = pki.principal_from_certificate(cert)
    except InvalidCertificate:
        return
    # Only the exact encoding of "edge" (the OU) is accepted.
    assert value == b"\x0c\x04edge" and principal.role is Role.EDGE


# --- files -------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_and_issue_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    old = os.umask(0)  # permissions must not depend on the caller's umask
    try:
        ca = pki.init_ca(tmp_path / "ca", "city CA", passphrase_env=ENV, now=NOW)
        paths = pki.issue(tmp_path / "ca", "edge", "cabinet-3", tmp_path / "out", passphrase_env=ENV, now=NOW)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "ca" / CA_KEY_FILE) == 0o600
    assert _mode(tmp_path / "ca" / CA_CERT_FILE) == 0o644
    assert paths.key == tmp_path / "out" / "cabinet-3.key" and _mode(paths.key) == 0o600
    assert paths.cert == tmp_path / "out" / "cabinet-3.crt" and _mode(paths.cert) == 0o644
    assert paths.ca.read_bytes() == ca.cert_pem
    assert b"BEGIN PRIVATE KEY" in (tmp_path / "ca" / CA_KEY_FILE).read_bytes()
    assert pki.principal_from_certificate(paths.cert.read_bytes()) == Principal("cabinet-3", Role.EDGE)
    assert not list((tmp_path / "out").glob(".*tmp"))
    # A second leaf into the same directory reuses the identical ca.crt.
    pki.issue(tmp_path / "ca", "controller", "planner", tmp_path / "out", passphrase_env=ENV, now=NOW)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    pki.init_ca(tmp_path, passphrase_env=None, now=NOW)
    with pytest.raises(PkiError, match="refusing to overwrite"):
        pki.init_ca(tmp_path, passphrase_env=None, now=NOW)
    pki.issue(tmp_path, "edge", "e-1", tmp_path / "o", passphrase_env=None, now=NOW)
    with pytest.raises(PkiError, match="refusing to overwrite"):
        pki.issue(tmp_path, "edge", "e-1", tmp_path / "o", passphrase_env=None, now=NOW)
    first = (tmp_path / "o" / "e-1.crt").read_bytes()
    pki.issue(tmp_path, "edge", "e-1", tmp_path / "o", passphrase_env=None, overwrite=True, now=NOW)
    assert (tmp_path / "o" / "e-1.crt").read_bytes() != first


def test_foreign_ca_file_in_out_dir_rejected(tmp_path: Path) -> None:
    pki.init_ca(tmp_path / "a", passphrase_env=None, now=NOW)
    pki.init_ca(tmp_path / "b", passphrase_env=None, now=NOW)
    pki.issue(tmp_path / "a", "edge", "e-1", tmp_path / "o", passphrase_env=None, now=NOW)
    with pytest.raises(PkiError, match="different CA"):
        pki.issue(tmp_path / "b", "edge", "e-2", tmp_path / "o", passphrase_env=None, now=NOW)


def test_encrypted_ca_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "correct horse battery staple")
    ca = pki.init_ca(tmp_path, passphrase_env=ENV, now=NOW)
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / CA_KEY_FILE).read_bytes()
    assert pki.load_ca(tmp_path, passphrase_env=ENV).certificate == ca.certificate
    monkeypatch.setenv(ENV, "wrong")
    with pytest.raises(PkiError, match="wrong passphrase"):
        pki.load_ca(tmp_path, passphrase_env=ENV)
    monkeypatch.delenv(ENV)
    with pytest.raises(PkiError, match="encryption does not match"):
        pki.issue(tmp_path, "edge", "e-1", tmp_path / "o", passphrase_env=ENV, now=NOW)


def test_unencrypted_key_with_passphrase_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    pki.init_ca(tmp_path, passphrase_env=ENV, now=NOW)
    monkeypatch.setenv(ENV, "unexpected")
    with pytest.raises(PkiError, match="encryption does not match"):
        pki.load_ca(tmp_path, passphrase_env=ENV)


def test_loose_key_permissions_refused(tmp_path: Path) -> None:
    pki.init_ca(tmp_path / "ca", passphrase_env=None, now=NOW)
    paths = pki.issue(tmp_path / "ca", "aggregator", "agg-1", tmp_path / "o", passphrase_env=None, now=NOW)
    os.chmod(tmp_path / "ca" / CA_KEY_FILE, 0o640)
    with pytest.raises(PkiError, match="group/others"):
        pki.load_ca(tmp_path / "ca", passphrase_env=None)
    os.chmod(paths.key, 0o604)
    with pytest.raises(PkiError, match="group/others"):
        pki.server_credentials(paths.cert, paths.key, paths.ca)
    with pytest.raises(PkiError, match="group/others"):
        pki.channel_credentials(paths.cert, paths.key, paths.ca)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="not found"):
        pki.load_ca(tmp_path, passphrase_env=None)
    pki.init_ca(tmp_path, passphrase_env=None, now=NOW)
    (tmp_path / CA_CERT_FILE).write_bytes(b"garbage")
    with pytest.raises(PkiError, match="not a PEM"):
        pki.load_ca(tmp_path, passphrase_env=None)
    (tmp_path / CA_CERT_FILE).unlink()
    with pytest.raises(PkiError, match="not found"):
        pki.load_ca(tmp_path, passphrase_env=None)
    (tmp_path / CA_KEY_FILE).write_bytes(b"garbage")
    with pytest.raises(PkiError, match="not found"):
        pki.server_credentials(tmp_path / "x.crt", tmp_path / CA_KEY_FILE, tmp_path / "ca.crt")


# --- credentials: a real TLS handshake with material loaded from disk -----------------


def _echo_call(server_creds: grpc.ServerCredentials, channel_creds: grpc.ChannelCredentials) -> bytes:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def main() -> bytes:
        handler = grpc.method_handlers_generic_handler(
            "twinmpc.test.v1.Echo",
            {"Echo": grpc.unary_unary_rpc_method_handler(echo, bytes, bytes)},
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_secure_port("127.0.0.1:0", server_creds)
        await server.start()
        try:
            async with grpc.aio.secure_channel(f"localhost:{port}", channel_creds) as channel:
                return await channel.unary_unary("/twinmpc.test.v1.Echo/Echo")(b"ping", timeout=10)
        finally:
            await server.stop(None)

    return asyncio.run(main())


def test_credentials_from_files_handshake(tmp_path: Path) -> None:
    pki.init_ca(tmp_path / "ca", passphrase_env=None)
    s = pki.issue(tmp_path / "ca", "aggregator", "agg-1", tmp_path / "srv", passphrase_env=None)
    c = pki.issue(tmp_path / "ca", "edge", "edge-1", tmp_path / "cli", passphrase_env=None)
    # Paths as Path and as str; PEM bytes for the CA.
    server_creds = pki.server_credentials(s.cert, s.key, s.ca.read_bytes())
    channel_creds = pki.channel_credentials(str(c.cert), str(c.key), str(c.ca))
    assert _echo_call(server_creds, channel_creds) == b"ping"


def test_client_only_certificate_cannot_serve() -> None:
    ca = pki.create_ca()
    edge_as_server = ca.issue("edge", "rogue")  # no serverAuth usage
    client = ca.issue("edge", "edge-1")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        _echo_call(
            pki.server_credentials(edge_as_server.cert_pem, edge_as_server.key_pem, edge_as_server.ca_pem),
            pki.channel_credentials(client.cert_pem, client.key_pem, client.ca_pem),
        )
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
