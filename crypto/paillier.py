"""Paillier encryption of signed integers (phe keys, gmpy2 arithmetic), sharp layer.

Paillier (Eurocrypt '99) with g = n + 1: Enc(m; r) = (1 + m*n) * r^n mod n^2, and
Enc(a) * Enc(b) = Enc(a + b mod n).  Plaintexts are signed integers with the
exponent fixed at 0 (no phe float encoding): m in [-(n-1)/2, (n-1)/2] is stored
as m mod n and decoded as negative when the residue exceeds (n-1)/2.

Key ids are the first 8 bytes of SHA-256(DST || n), written as 16 hex chars;
they route reports to the right key during rotation.

Ciphertext wire format (one message carries a vector of d ciphertexts)::

    version (1 B, = 1) || key id (8 B) || d (4 B, big-endian) || c_1 .. c_d

each c_i big-endian in exactly ``2 * ceil(bits/8)`` bytes.  The decoder checks the
size, version, key id, length, 0 < c < n^2 and gcd(c, n) = 1.

Vectors are packed: with slot width w (from the largest honest sum), k =
floor((bits - 2) / w) signed values share one plaintext, sum_i v_i * 2^(w i), so
d entries cost ceil(d / k) encryptions instead of d.

Not for: anything but additive aggregation of integers (no IND-CCA security: a
ciphertext is malleable by design), or keys below 2048 bits outside tests.
The service layer must bound the number of summands so |sum| <= (n-1)/2.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import gmpy2
from phe import paillier as phe_paillier

from twinmpc.crypto import key_storage
from twinmpc.crypto.errors import DecodeError, WrongKey

MIN_KEY_BITS = 2048
# Smallest modulus accepted even with insecure_test_bits (keeps the arithmetic meaningful).
MIN_TEST_BITS = 256
DST_KEY_ID = b"twinmpc/v1/paillier/key-id"
CT_VERSION = 1
KEY_ID_SIZE = 8
HEADER_SIZE = 1 + KEY_ID_SIZE + 4
KEY_FILE_KIND = "paillier-sk"


def _check_bits(bits: int, insecure_test_bits: int | None) -> None:
    if insecure_test_bits is not None:
        if insecure_test_bits < MIN_TEST_BITS:
            raise ValueError(f"insecure_test_bits must be >= {MIN_TEST_BITS}")
        if bits != insecure_test_bits and bits < MIN_KEY_BITS:
            raise ValueError(f"modulus has {bits} bits, expected {insecure_test_bits} (test) or >= {MIN_KEY_BITS}")
    elif bits < MIN_KEY_BITS:
        raise ValueError(f"Paillier modulus must have >= {MIN_KEY_BITS} bits, got {bits}")


@dataclass(frozen=True)
class PaillierPublicKey:
    """Public key n (g = n + 1).  ``insecure_test_bits`` admits a small test modulus."""

    n: int
    insecure_test_bits: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or isinstance(self.n, bool):
            raise TypeError("n must be an int")
        if self.n < 3 or self.n % 2 == 0:
            raise ValueError("n must be an odd integer > 2")
        _check_bits(self.n.bit_length(), self.insecure_test_bits)
        object.__setattr__(self, "_n_mpz", gmpy2.mpz(self.n))
        object.__setattr__(self, "_n2_mpz", gmpy2.mpz(self.n) ** 2)

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    @property
    def nsquare(self) -> int:
        return int(self._n2_mpz)  # type: ignore[attr-defined]

    @property
    def ciphertext_size(self) -> int:
        """Bytes per encoded ciphertext: 2 * ceil(bits / 8)."""
        return 2 * ((self.bits + 7) // 8)

    @property
    def max_abs_plaintext(self) -> int:
        """Largest |m| that decodes unambiguously: (n - 1) / 2."""
        return (self.n - 1) // 2

    @property
    def key_id_bytes(self) -> bytes:
        n_bytes = self.n.to_bytes((self.bits + 7) // 8, "big")
        return hashlib.sha256(DST_KEY_ID + n_bytes).digest()[:KEY_ID_SIZE]

    @property
    def key_id(self) -> str:
        return self.key_id_bytes.hex()

    def to_json(self) -> bytes:
        """Canonical JSON: ``{"alg": "paillier", "key_id": ..., "n": "<hex>"}``."""
        return json.dumps({"alg": "paillier", "key_id": self.key_id, "n": format(self.n, "x")}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str, *, insecure_test_bits: int | None = None) -> PaillierPublicKey:
        """Parse and validate a public key; the stated key id must match n."""
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or set(doc) != {"alg", "key_id", "n"} or doc["alg"] != "paillier":
                raise DecodeError("public key: unexpected fields or algorithm")
            pk = cls(int(doc["n"], 16), insecure_test_bits=insecure_test_bits)
        except DecodeError:
            raise
        except (ValueError, TypeError) as exc:
            raise DecodeError(f"public key: {exc}") from exc
        if doc["key_id"] != pk.key_id:
            raise DecodeError("public key: key id does not match n")
        return pk


class PaillierSecretKey:
    """The factorisation p, q of n; redacted in repr, sealed with a passphrase at rest."""

    __slots__ = ("public_key", "_phe")

    def __init__(self, public_key: PaillierPublicKey, p: int, q: int) -> None:
        if p * q != public_key.n or p == q or min(p, q) < 2:
            raise ValueError("p, q do not factor the public modulus")
        self.public_key = public_key
        self._phe = phe_paillier.PaillierPrivateKey(phe_paillier.PaillierPublicKey(public_key.n), p, q)

    def __repr__(self) -> str:
        return f"PaillierSecretKey(key_id={self.public_key.key_id}, <redacted>)"

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    def raw_decrypt(self, c: int) -> int:
        """Residue m in [0, n) with CRT decryption (phe, gmpy2-backed)."""
        return int(self._phe.raw_decrypt(int(c)))

    def seal(self, passphrase: bytes, *, log2_n: int = key_storage.DEFAULT_LOG2_N) -> bytes:
        """Key file body: p and q sealed under the passphrase, key id as associated data."""
        secret = json.dumps({"p": format(self._phe.p, "x"), "q": format(self._phe.q, "x")}, sort_keys=True).encode()
        return key_storage.seal_secret(secret, passphrase, kind=KEY_FILE_KIND, key_id=self.key_id, log2_n=log2_n)

    @classmethod
    def unseal(cls, sealed: bytes, passphrase: bytes, *, insecure_test_bits: int | None = None) -> PaillierSecretKey:
        """Inverse of `seal`; raises `key_storage.KeyFileError` on any mismatch."""
        key_id, secret = key_storage.open_secret(sealed, passphrase, kind=KEY_FILE_KIND)
        try:
            doc = json.loads(secret)
            p, q = int(doc["p"], 16), int(doc["q"], 16)
            sk = cls(PaillierPublicKey(p * q, insecure_test_bits=insecure_test_bits), p, q)
        except (ValueError, TypeError, KeyError) as exc:
            raise key_storage.KeyFileError("key file: bad Paillier secret") from exc
        if sk.key_id != key_id:
            raise key_storage.KeyFileError("key file: key id does not match the key")
        return sk

    def save(self, path: str | os.PathLike[str], passphrase: bytes, *, log2_n: int = key_storage.DEFAULT_LOG2_N) -> None:
        """Write a new 0600 key file (refuses to overwrite)."""
        key_storage.write_private_file(path, self.seal(passphrase, log2_n=log2_n))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], passphrase: bytes, *, insecure_test_bits: int | None = None
    ) -> PaillierSecretKey:
        return cls.unseal(key_storage.read_private_file(path), passphrase, insecure_test_bits=insecure_test_bits)


def generate_keypair(
    bits: int = MIN_KEY_BITS, *, insecure_test_bits: int | None = None
) -> tuple[PaillierPublicKey, PaillierSecretKey]:
    """Fresh key pair from the OS CSPRNG (phe draws primes via SystemRandom + gmpy2)."""
    if insecure_test_bits is not None:
        bits = insecure_test_bits
    _check_bits(bits, insecure_test_bits)
    phe_pk, phe_sk = phe_paillier.generate_paillier_keypair(n_length=bits)
    pk = PaillierPublicKey(phe_pk.n, insecure_test_bits=insecure_test_bits)
    return pk, PaillierSecretKey(pk, phe_sk.p, phe_sk.q)


def _random_unit(pk: PaillierPublicKey, rand: Callable[[int], bytes]) -> gmpy2.mpz:
    """Uniform r in Z*_n: 64 extra bits make the modular reduction bias < 2^-64."""
    n = pk._n_mpz  # type: ignore[attr-defined]
    nbytes = (pk.bits + 64 + 7) // 8
    while True:
        r = gmpy2.mpz(int.from_bytes(rand(nbytes), "big")) % n
        if r != 0 and gmpy2.gcd(r, n) == 1:
            return r


def encrypt(pk: PaillierPublicKey, m: int, *, rand: Callable[[int], bytes] = os.urandom) -> int:
    """Enc(m) = (1 + (m mod n) * n) * r^n mod n^2 for a signed integer |m| <= (n-1)/2."""
    if not isinstance(m, int) or isinstance(m, bool):
        raise TypeError("Paillier plaintext must be an int (exponent fixed at 0)")
    if abs(m) > pk.max_abs_plaintext:
        raise ValueError("plaintext out of the signed range of the key")
    n, n2 = pk._n_mpz, pk._n2_mpz  # type: ignore[attr-defined]
    r = _random_unit(pk, rand)
    return int(gmpy2.f_mod((1 + gmpy2.f_mod(gmpy2.mpz(m), n) * n) * gmpy2.powmod(r, n, n2), n2))


def encrypt_vector(pk: PaillierPublicKey, values: Sequence[int], *, rand: Callable[[int], bytes] = os.urandom) -> list[int]:
    """One ciphertext per entry (one modular exponentiation each; no packing)."""
    return [encrypt(pk, int(v), rand=rand) for v in values]


def slot_bits(max_abs_sum: int) -> int:
    """Packed slot width w for sums with |sum| <= max_abs_sum: w = bitlen(max_abs_sum) + 2.

    A slot holds any signed value below 2^(w-1) in magnitude, so |sum| plus up
    to 2^(w-2) of DP noise fits.
    """
    if not isinstance(max_abs_sum, int) or max_abs_sum < 0:
        raise ValueError("max_abs_sum must be a non-negative int")
    return max_abs_sum.bit_length() + 2


def slots_per_ciphertext(pk: PaillierPublicKey, width: int) -> int:
    """k = floor((bits - 2) / w): then |packed| < 2^(w k) <= 2^(bits-2) <= (n-1)/2 decodes exactly."""
    return (pk.bits - 2) // width


def pack(values: Sequence[int], width: int, per_ciphertext: int) -> list[int]:
    """Signed packing: chunk j holds sum_i v_i * 2^(w i) over its k values (an exact integer).

    Slots are signed digits, so packed plaintexts add slot-wise without offsets as
    long as every slot sum stays below 2^(w-1) in magnitude.
    """
    if width < 2 or per_ciphertext < 1:
        raise ValueError("slot width must be >= 2 and at least one slot per ciphertext")
    bound = 1 << (width - 1)
    out = []
    for start in range(0, len(values), per_ciphertext):
        packed = 0
        for v in reversed(values[start : start + per_ciphertext]):
            if not -bound < v < bound:
                raise ValueError(f"value {v} does not fit a {width}-bit signed slot")
            packed = (packed << width) + v
        out.append(packed)
    return out


def unpack(packed: Sequence[int], width: int, per_ciphertext: int, length: int) -> list[int]:
    """Inverse of `pack` on (summed) plaintexts: balanced base-2^w digits.

    Raises `DecodeError` if a plaintext has digits beyond its k slots (overflow).
    """
    if len(packed) != -(-length // per_ciphertext):
        raise ValueError("packed plaintext count does not match the length")
    base, half = 1 << width, 1 << (width - 1)
    out: list[int] = []
    for j, m in enumerate(packed):
        for _ in range(min(per_ciphertext, length - j * per_ciphertext)):
            digit = m & (base - 1)
            if digit >= half:
                digit -= base
            out.append(digit)
            m = (m - digit) >> width
        if m != 0:
            raise DecodeError("packed Paillier plaintext overflows its slots")
    return out


def decrypt(sk: PaillierSecretKey, c: int) -> int:
    """Signed plaintext: residues above (n-1)/2 are negative."""
    m = sk.raw_decrypt(c)
    return m - sk.public_key.n if m > sk.public_key.max_abs_plaintext else m


def add(pk: PaillierPublicKey, ciphertexts: Iterable[int]) -> int:
    """Homomorphic sum of many ciphertexts: their product mod n^2 (gmpy2 mul/mod)."""
    n2 = pk._n2_mpz  # type: ignore[attr-defined]
    acc = gmpy2.mpz(1)
    for c in ciphertexts:
        acc = gmpy2.f_mod(acc * c, n2)
    return int(acc)


def add_vectors(pk: PaillierPublicKey, vectors: Sequence[Sequence[int]]) -> list[int]:
    """Coordinate-wise homomorphic sum of equal-length ciphertext vectors."""
    if not vectors:
        raise ValueError("no vectors to add")
    d = len(vectors[0])
    if any(len(v) != d for v in vectors):
        raise ValueError("ciphertext vectors differ in length")
    return [add(pk, column) for column in zip(*vectors)]


def validate_ciphertext(pk: PaillierPublicKey, c: int) -> None:
    """Reject c outside Z*_{n^2}: 0 < c < n^2 and gcd(c, n) = 1 (else it is no encryption)."""
    if not 0 < c < pk.nsquare:
        raise DecodeError("Paillier ciphertext out of range (0, n^2)")
    if gmpy2.gcd(gmpy2.mpz(c), pk._n_mpz) != 1:  # type: ignore[attr-defined]
        raise DecodeError("Paillier ciphertext not a unit mod n")


def encode_ciphertexts(pk: PaillierPublicKey, ciphertexts: Sequence[int]) -> bytes:
    """Wire encoding (see module docstring)."""
    size = pk.ciphertext_size
    parts = [bytes([CT_VERSION]), pk.key_id_bytes, struct.pack(">I", len(ciphertexts))]
    parts.extend(int(c).to_bytes(size, "big") for c in ciphertexts)
    return b"".join(parts)


def peek_key_id(data: bytes) -> str:
    """Key id of an encoded ciphertext vector, for routing before full validation."""
    if len(data) < HEADER_SIZE or data[0] != CT_VERSION:
        raise DecodeError("Paillier ciphertext: short header or unknown version")
    return data[1 : 1 + KEY_ID_SIZE].hex()


def decode_ciphertexts(pk: PaillierPublicKey, data: bytes, length: int) -> list[int]:
    """Decode and validate exactly ``length`` ciphertexts under ``pk``.

    Raises `DecodeError` for size/version/range failures and `WrongKey`
    for a ciphertext under another key.
    """
    if peek_key_id(data) != pk.key_id:
        raise WrongKey("Paillier ciphertext under another key id")
    (d,) = struct.unpack(">I", data[1 + KEY_ID_SIZE : HEADER_SIZE])
    size = pk.ciphertext_size
    if d != length:
        raise DecodeError(f"Paillier ciphertext vector has {d} entries, expected {length}")
    if len(data) != HEADER_SIZE + d * size:
        raise DecodeError(f"Paillier ciphertext vector has {len(data)} bytes, expected {HEADER_SIZE + d * size}")
    out = [int.from_bytes(data[HEADER_SIZE + i * size : HEADER_SIZE + (i + 1) * size], "big") for i in range(d)]
    for c in out:
        validate_ciphertext(pk, c)
    return out
