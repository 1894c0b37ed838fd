"""Prio3 as draft-irtf-cfrg-vdaf-18 writes it: a straightforward pure-Python transcription.

This is the baseline bench_prio3.py measures mpc.prio3 against.  It follows the
draft's Python code blocks one to one, with none of our optimisations:

* `Field64` / `Field128` ("Finite Fields"): one object per element, operator
  overloading over Python ints, vectors as lists of elements,
  `encode_vec` / `decode_vec` as the draft writes them;
* `Lagrange`: polynomials in the Lagrange basis, with
  `extend_values_to_power_of_2`, `double_evaluations` (an inverse NTT then a
  coset NTT) and batched evaluation at a point, all on field objects;
* gadgets `Mul`, `PolyEval`, `ParallelSum` and circuits `Count`, `Sum`,
  `Histogram`, `SumVec` (Section 7.4), proved and queried through the
  `ProveGadget` / `QueryGadget` wrappers that record the wires call by call
  on a deep copy of the circuit;
* `FlpBBCGGI19.prove` / `query` / `decide`;
* Prio3 sharding and verification with `XofTurboShake128` (pycryptodome's
  TurboSHAKE128, as in the draft's reference code) and `format_dst` with
  VERSION 18.

Source: the draft's text and its reference code (repository
cfrg/draft-irtf-cfrg-vdaf, poc/vdaf_poc/), transcribed rather than copied.
Its timings match those of the draft's own Python reference code on a 2-core
machine like ours (Count 0.57 ms, SumVec(1000, max 255, chunk 89) 761 ms for
shard + both verifications) to within about 25% (Count 0.64 ms, SumVec 0.74 s
here), so a speed-up measured against it is one against the draft's code, not
against a weaker baseline of our own.

Everything runs with one proof (num_proofs = 1).  The bench uses 2
aggregators; the transcription is general in the number of shares, as the
draft is.  Interface (the one bench_prio3.py calls)::

    vdaf = DraftPrio3(Histogram(100, 10))
    public, [leader, helper] = vdaf.shard(ctx, 42, nonce, rand)
    state_j, vshare_j = vdaf.verify_init(verify_key, ctx, j, nonce, public, share_j)
    msg = vdaf.verifier_shares_to_message(ctx, [vshare_0, vshare_1])
    out_j = vdaf.verify_next(state_j, msg)      # list of field elements

Not for production use: it is slow on purpose (that is what it measures),
not constant time, and raises bare `ValueError` like the draft.  It must not
import anything from mpc/ or crypto/: it is the independent reference.
"""

from __future__ import annotations

import math
from copy import deepcopy
from typing import Any, Generic, Self, TypeVar, cast

from Crypto.Hash import TurboSHAKE128

# Document version, used in every domain separation tag.
VERSION = 18

USAGE_MEAS_SHARE = 1
USAGE_PROOF_SHARE = 2
USAGE_JOINT_RANDOMNESS = 3
USAGE_PROVE_RANDOMNESS = 4
USAGE_QUERY_RANDOMNESS = 5
USAGE_JOINT_RAND_SEED = 6
USAGE_JOINT_RAND_PART = 7


# ------------------------------------------------------------------ common helpers
def next_power_of_2(n: int) -> int:
    """Smallest power of 2 that is at least n."""
    if n <= 0:
        raise ValueError("n must be positive")
    return 1 << int(n - 1).bit_length()


def assert_power_of_2(n: int) -> int:
    """log2(n) for a power of 2 n; ValueError otherwise."""
    if n <= 0 or n & (n - 1) != 0:
        raise ValueError(f"{n} is not a power of 2")
    return n.bit_length() - 1


def bitrev(n: int, k: int) -> int:
    """Reverse the n low bits of k."""
    result = 0
    for _ in range(n):
        result = (result << 1) | (k & 1)
        k >>= 1
    return result


def front(length: int, vec: Any) -> tuple[Any, Any]:
    """Split `vec` (list or bytes) into its first `length` items and the rest."""
    if length > len(vec):
        raise ValueError("vector too short")
    return (vec[:length], vec[length:])


def to_le_bytes(val: int, length: int) -> bytes:
    return int(val).to_bytes(length, byteorder="little")


def from_le_bytes(encoded: bytes) -> int:
    return int.from_bytes(encoded, byteorder="little")


def to_be_bytes(val: int, length: int) -> bytes:
    return int(val).to_bytes(length, byteorder="big")


def vec_sub(left: list[F], right: list[F]) -> list[F]:
    if len(left) != len(right):
        raise ValueError("mismatched vector sizes")
    return [x - y for (x, y) in zip(left, right)]


def vec_add(left: list[F], right: list[F]) -> list[F]:
    if len(left) != len(right):
        raise ValueError("mismatched vector sizes")
    return [x + y for (x, y) in zip(left, right)]


def format_dst(algo_class: int, algo: int, usage: int) -> bytes:
    """XOF domain separation tag: version, class, algorithm ID, usage."""
    return to_be_bytes(VERSION, 1) + to_be_bytes(algo_class, 1) + to_be_bytes(algo, 4) + to_be_bytes(usage, 2)


# ------------------------------------------------------------------ fields
class Field:
    """An element of GF(MODULUS), one Python object per element."""

    MODULUS: int
    ENCODED_SIZE: int
    GEN_ORDER: int

    def __init__(self, val: int) -> None:
        if not -self.MODULUS < val < self.MODULUS:
            raise ValueError("value out of range")
        # Negative integers stand for additive inverses.
        self.val = val % self.MODULUS

    @classmethod
    def gen(cls) -> Self:
        raise NotImplementedError

    @classmethod
    def zeros(cls, length: int) -> list[Self]:
        return [cls(0)] * length

    @classmethod
    def encode_vec(cls, vec: list[Self]) -> bytes:
        """Little-endian encoding of each element, concatenated."""
        encoded = b""
        for x in vec:
            encoded += to_le_bytes(x.int(), cls.ENCODED_SIZE)
        return encoded

    @classmethod
    def decode_vec(cls, encoded: bytes) -> list[Self]:
        """Inverse of `encode_vec`; rejects ragged lengths and values >= MODULUS."""
        if len(encoded) % cls.ENCODED_SIZE != 0:
            raise ValueError("input length must be a multiple of the size of an encoded field element")
        vec = []
        while len(encoded) > 0:
            (encoded_x, encoded) = front(cls.ENCODED_SIZE, encoded)
            x = from_le_bytes(encoded_x)
            if x >= cls.MODULUS:
                raise ValueError("modulus overflow")
            vec.append(cls(x))
        return vec

    @classmethod
    def encode_into_bit_vec(cls, val: int, bits: int) -> list[Self]:
        """The `bits` low bits of `val`, least significant first, as field elements."""
        if val >= 2**bits:
            raise ValueError("number of bits is not enough to represent the input integer")
        encoded = []
        for i in range(bits):
            encoded.append(cls((val >> i) & 1))
        return encoded

    @classmethod
    def decode_from_bit_vec(cls, vec: list[Self]) -> Self:
        """Sum of vec[i] * 2^i (linear, so it also works on shares)."""
        bits = len(vec)
        if cls.MODULUS >> bits == 0:
            raise ValueError("number of bits is too large to be represented by field modulus")
        decoded = cls(0)
        for i, bit in enumerate(vec):
            decoded += cls(1 << i) * bit
        return decoded

    # NTT-friendly field operations.
    @classmethod
    def nth_root(cls, n: int) -> Self:
        """A 2^n-th root of unity."""
        return cls.gen() ** (cls.GEN_ORDER >> n)

    @classmethod
    def nth_root_powers(cls, n: int) -> list[Self]:
        """The first n powers of an n-th root of unity."""
        log_n = assert_power_of_2(n)
        root = cls.nth_root(log_n)
        return [root**i for i in range(n)]

    @classmethod
    def ntt(cls, p: list[Self], n: int, set_s: bool = False) -> list[Self]:
        """[P(s * w^i) for i < n], w an n-th root of unity; s a 2n-th root if set_s, else 1.

        Monomial to Lagrange basis (Alg. 4 of ia.cr/2025/1727).  Pads `p` with
        zeros in place up to n, as the draft does.
        """
        log_n = assert_power_of_2(n)
        p += [cls(0)] * (n - len(p))
        q = [p[bitrev(log_n, i)] for i in range(n)]
        for k in range(1, log_n + 1):
            w = cls.nth_root(k + 1) if set_s else cls(1)
            y = 1 << (k - 1)
            r = cls.nth_root(k)
            for i in range(y):
                for j in range(n >> k):
                    x = (j << k) + i
                    u = q[x]
                    v = w * q[x + y]
                    q[x] = u + v
                    q[x + y] = u - v
                w *= r
        return q

    @classmethod
    def inv_ntt(cls, p: list[Self], n: int) -> list[Self]:
        """Lagrange to monomial basis: the NTT, reindexed by i -> -i, times 1/n."""
        out = cls.ntt(p, n)
        out.append(out.pop(0))
        out.reverse()
        inv_n = cls(n).inv()
        for i in range(len(out)):
            out[i] *= inv_n
        return out

    def __add__(self, other: Self) -> Self:
        return self.__class__((self.val + other.val) % self.MODULUS)

    def __neg__(self) -> Self:
        return self.__class__((-self.val) % self.MODULUS)

    def __mul__(self, other: Self) -> Self:
        return self.__class__((self.val * other.val) % self.MODULUS)

    def __sub__(self, other: Self) -> Self:
        return self.__class__((self.val - other.val) % self.MODULUS)

    def __pow__(self, n: int) -> Self:
        return self.__class__(pow(self.val, n, self.MODULUS))

    def inv(self) -> Self:
        return self.__class__(pow(self.val, self.MODULUS - 2, self.MODULUS))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Field):
            return NotImplemented
        return self.val == other.val

    def __hash__(self) -> int:
        return hash((self.MODULUS, self.val))

    def __repr__(self) -> str:
        return str(self.val)

    def int(self) -> int:
        return self.val


class Field64(Field):
    """GF(2^32 * 4294967295 + 1)."""

    MODULUS = 2**32 * 4294967295 + 1
    GEN_ORDER = 2**32
    ENCODED_SIZE = 8

    @classmethod
    def gen(cls) -> Self:
        return cls(7) ** 4294967295


class Field128(Field):
    """GF(2^66 * 4611686018427387897 + 1)."""

    MODULUS = 2**66 * 4611686018427387897 + 1
    GEN_ORDER = 2**66
    ENCODED_SIZE = 16

    @classmethod
    def gen(cls) -> Self:
        return cls(7) ** 4611686018427387897


F = TypeVar("F", bound=Field)


def poly_strip(field: type[F], p: list[F]) -> list[F]:
    """Remove leading zeros of a polynomial in the monomial basis."""
    for i in reversed(range(len(p))):
        if p[i] != field(0):
            return p[: i + 1]
    return []


def poly_eval(field: type[F], p: list[F], eval_at: F) -> F:
    """Horner evaluation of a polynomial in the monomial basis."""
    if len(p) == 0:
        return field(0)
    p = poly_strip(field, p)
    result = p[-1]
    for c in reversed(p[:-1]):
        result *= eval_at
        result += c
    return result


class Lagrange(Generic[F]):
    """Polynomials in the Lagrange basis: values at the n-th roots of unity, n a power of 2."""

    def __init__(self, field: type[F]) -> None:
        self.field = field

    def poly_mul(self, p: list[F], q: list[F]) -> list[F]:
        """Product of two polynomials of n values each, as 2n values."""
        assert_power_of_2(len(p))
        if len(p) != len(q):
            raise ValueError("operands must have the same length")
        p_2n = self.double_evaluations(p)
        q_2n = self.double_evaluations(q)
        return [pi * qi for pi, qi in zip(p_2n, q_2n)]

    def poly_eval(self, p: list[F], x: F) -> F:
        """P(x) for P given by its values."""
        return self.poly_eval_batched([p], x).pop()

    def poly_eval_batched(self, polys: list[list[F]], x: F) -> list[F]:
        """[P(x) for P in polys], sharing the node products (Alg. 7 of ia.cr/2025/1727)."""
        if len({len(p) for p in polys}) != 1:
            raise ValueError("polynomials must have the same length")
        n = len(polys[0])
        assert_power_of_2(n)
        nodes = self.field.nth_root_powers(n)
        k = self.field(1)
        u = [p[0] for p in polys]
        d = nodes[0] - x
        for i in range(1, n):
            k *= d
            d = nodes[i] - x
            t = k * nodes[i]
            for j, p in enumerate(polys):
                u[j] *= d
                if i < len(p):
                    u[j] += t * p[i]
        factor = self.field(-1) ** (n - 1) * self.field(n).inv()
        for i in range(len(u)):
            u[i] *= factor
        return u

    def extend_values_to_power_of_2(self, p: list[F], n: int) -> None:
        """Append values of P (in place) at the next roots of unity until there are n."""
        assert_power_of_2(n)
        if len(p) > n:
            raise ValueError("too many values")
        x = self.field.nth_root_powers(n)
        w = [self.field(0)] * n
        for i in range(len(p)):
            diff = (x[i] - x[j] for j in range(len(p)) if i != j)
            w[i] = math.prod(diff, start=self.field(1))
        for k in range(len(p), n):
            for i in range(k):
                w[i] *= x[i] - x[k]
            y_num, y_den = self.field(0), self.field(1)
            for i, v in enumerate(p):
                y_num = y_num * w[i] + y_den * v
                y_den *= w[i]
            diff = (x[k] - x[j] for j in range(k))
            w[k] = math.prod(diff, start=self.field(1))
            p.append(-w[k] * y_num * y_den.inv())

    def double_evaluations(self, p: list[F]) -> list[F]:
        """2n values of P from its n values: the odd ones by inverse NTT then coset NTT."""
        n = len(p)
        assert_power_of_2(n)
        even = p
        odd = self.field.ntt(self.field.inv_ntt(even, n), n, True)
        return [i for pair in zip(even, odd) for i in pair]


# ------------------------------------------------------------------ gadgets
class Gadget(Generic[F]):
    """A gadget: evaluated on elements by the circuit, on polynomials by the prover."""

    ARITY: int
    DEGREE: int

    def eval(self, field: type[F], inp: list[F]) -> F:
        raise NotImplementedError

    def eval_poly(self, field: type[F], inp_poly: list[list[F]]) -> list[F]:
        raise NotImplementedError


class Mul(Gadget[F]):
    """x * y."""

    ARITY = 2
    DEGREE = 2

    def eval(self, _field: type[F], inp: list[F]) -> F:
        return inp[0] * inp[1]

    def eval_poly(self, field: type[F], inp_poly: list[list[F]]) -> list[F]:
        return Lagrange(field).poly_mul(inp_poly[0], inp_poly[1])


class PolyEval(Gadget[F]):
    """p(x) for a fixed polynomial p given by integer coefficients."""

    ARITY = 1

    def __init__(self, p: list[int], num_calls: int) -> None:
        for i in reversed(range(len(p))):  # strip leading zeros
            if p[i] != 0:
                p = p[: i + 1]
                break
        if len(p) < 1:
            raise ValueError("invalid polynomial: zero length")
        self.p = p
        self.DEGREE = len(p) - 1
        wire_poly_len = next_power_of_2(1 + num_calls)
        gadget_poly_len = self.DEGREE * (wire_poly_len - 1) + 1
        self.n = next_power_of_2(gadget_poly_len)

    def eval(self, field: type[F], inp: list[F]) -> F:
        p = [field(coeff) for coeff in self.p]
        return poly_eval(field, p, inp[0])

    def eval_poly(self, field: type[F], inp_poly: list[list[F]]) -> list[F]:
        inp_poly_len = len(inp_poly[0])
        assert_power_of_2(inp_poly_len)
        # Lagrange to monomial basis, then n values of the input polynomial I.
        inp_mon = field.inv_ntt(inp_poly[0], inp_poly_len)
        inp_lag = field.ntt(inp_mon, self.n)
        # The composition p(I), value by value.
        p_mon = [field(coeff) for coeff in self.p]
        return [poly_eval(field, p_mon, x) for x in inp_lag]


class ParallelSum(Gadget[F]):
    """Sum of `count` copies of a subcircuit on consecutive slices of the input."""

    def __init__(self, subcircuit: Gadget[F], count: int) -> None:
        self.subcircuit = subcircuit
        self.count = count
        self.ARITY = subcircuit.ARITY * count
        self.DEGREE = subcircuit.DEGREE

    def eval(self, field: type[F], inp: list[F]) -> F:
        out = field(0)
        for i in range(self.count):
            start_index = i * self.subcircuit.ARITY
            end_index = (i + 1) * self.subcircuit.ARITY
            out += self.subcircuit.eval(field, inp[start_index:end_index])
        return out

    def eval_poly(self, field: type[F], inp_poly: list[list[F]]) -> list[F]:
        output_poly_length = next_power_of_2(self.DEGREE * (len(inp_poly[0]) - 1) + 1)
        out_sum = [field(0) for _ in range(output_poly_length)]
        for i in range(self.count):
            start_index = i * self.subcircuit.ARITY
            end_index = (i + 1) * self.subcircuit.ARITY
            out_current = self.subcircuit.eval_poly(field, inp_poly[start_index:end_index])
            for j in range(output_poly_length):
                out_sum[j] += out_current[j]
        return out_sum


# ------------------------------------------------------------------ validity circuits (Section 7.4)
class Valid(Generic[F]):
    """A validity circuit and its affine-aggregatable encoding."""

    field: type[F]
    MEAS_LEN: int
    JOINT_RAND_LEN: int
    OUTPUT_LEN: int
    EVAL_OUTPUT_LEN: int
    GADGETS: list[Gadget[F]]
    GADGET_CALLS: list[int]
    # Prio3 algorithm ID of the instantiation using this circuit (Prio3Count = 1, ...).
    PRIO3_ID: int

    def prove_rand_len(self) -> int:
        return sum(g.ARITY for g in self.GADGETS)

    def query_rand_len(self) -> int:
        query_rand_len = len(self.GADGETS)
        if self.EVAL_OUTPUT_LEN > 1:
            query_rand_len += self.EVAL_OUTPUT_LEN
        return query_rand_len

    def proof_len(self) -> int:
        length = 0
        for g, g_calls in zip(self.GADGETS, self.GADGET_CALLS):
            p = next_power_of_2(1 + g_calls)
            length += g.ARITY + g.DEGREE * (p - 1) + 1
        return length

    def verifier_len(self) -> int:
        length = 1
        for g in self.GADGETS:
            length += g.ARITY + 1
        return length

    def encode(self, measurement: Any) -> list[F]:
        raise NotImplementedError

    def eval(self, meas: list[F], joint_rand: list[F], num_shares: int) -> list[F]:
        raise NotImplementedError

    def truncate(self, meas: list[F]) -> list[F]:
        raise NotImplementedError


def _bit_decompose(field: type[F], val: int, bits: int, last_weight: int) -> list[F]:
    """The draft's Sum / SumVec encoding of one value in [0, max_measurement]."""
    # The draft notes this branch should be constant time in practice.
    if val <= 2 ** (bits - 1) - 1:
        return field.encode_into_bit_vec(val, bits - 1) + [field(0)]
    return field.encode_into_bit_vec(val - last_weight, bits - 1) + [field(1)]


class Count(Valid[Field64]):
    """meas * meas - meas == 0."""

    MEAS_LEN = 1
    JOINT_RAND_LEN = 0
    OUTPUT_LEN = 1
    EVAL_OUTPUT_LEN = 1
    PRIO3_ID = 0x00000001

    def __init__(self, field: type[Field64] = Field64) -> None:
        self.field = field
        self.GADGETS = [Mul()]
        self.GADGET_CALLS = [1]

    def encode(self, measurement: int) -> list[Field64]:
        if measurement not in range(2):
            raise ValueError("measurement out of range")
        return [self.field(measurement)]

    def eval(self, meas: list[Field64], joint_rand: list[Field64], _num_shares: int) -> list[Field64]:
        squared = self.GADGETS[0].eval(self.field, [meas[0], meas[0]])
        return [squared - meas[0]]

    def truncate(self, meas: list[Field64]) -> list[Field64]:
        return meas


class Sum(Valid[Field64]):
    """Each entry of the offset bit decomposition is a bit."""

    JOINT_RAND_LEN = 0
    OUTPUT_LEN = 1
    PRIO3_ID = 0x00000002

    def __init__(self, max_measurement: int, field: type[Field64] = Field64) -> None:
        if max_measurement <= 0:
            raise ValueError("max_measurement must be positive")
        self.field = field
        bits = max_measurement.bit_length()
        if 2**bits >= field.MODULUS:
            raise ValueError("bound exceeds field modulus")
        self.bits = bits
        self.max_measurement = max_measurement
        rest_all_ones_value = 2 ** (bits - 1) - 1
        self.last_weight = max_measurement - rest_all_ones_value
        self.GADGET_CALLS = [self.bits]
        self.GADGETS = [PolyEval([0, -1, 1], self.bits)]
        self.MEAS_LEN = self.bits
        self.EVAL_OUTPUT_LEN = self.bits

    def encode(self, measurement: int) -> list[Field64]:
        if measurement not in range(self.max_measurement + 1):
            raise ValueError("measurement out of range")
        return _bit_decompose(self.field, measurement, self.bits, self.last_weight)

    def eval(self, meas: list[Field64], joint_rand: list[Field64], _num_shares: int) -> list[Field64]:
        out = []
        for b in meas:
            out.append(self.GADGETS[0].eval(self.field, [b]))
        return out

    def truncate(self, meas: list[Field64]) -> list[Field64]:
        return [
            self.field.decode_from_bit_vec(meas[: self.bits - 1])
            + meas[self.bits - 1] * self.field(self.last_weight)
        ]


def _range_check(valid: Any, meas: list[F], joint_rand: list[F], num_shares: int) -> F:
    """The draft's chunked bit check shared by Histogram and SumVec (ParallelSum of Mul)."""
    field = valid.field
    range_check = field(0)
    shares_inv = field(num_shares).inv()
    for i in range(valid.GADGET_CALLS[0]):
        r = joint_rand[i]
        r_power = r
        inputs: list[Any] = [None] * (2 * valid.chunk_length)
        for j in range(valid.chunk_length):
            index = i * valid.chunk_length + j
            if index < len(meas):
                meas_elem = meas[index]
            else:
                meas_elem = field(0)
            inputs[j * 2] = r_power * meas_elem
            inputs[j * 2 + 1] = meas_elem - shares_inv
            r_power *= r
        range_check += valid.GADGETS[0].eval(field, inputs)
    return range_check


class Histogram(Valid[Field128]):
    """One-hot vector: each bucket a bit, buckets summing to 1."""

    EVAL_OUTPUT_LEN = 2
    PRIO3_ID = 0x00000004

    def __init__(self, length: int, chunk_length: int, field: type[Field128] = Field128) -> None:
        if length <= 0:
            raise ValueError("invalid length")
        if chunk_length <= 0:
            raise ValueError("invalid chunk_length")
        self.field = field
        self.length = length
        self.chunk_length = chunk_length
        self.GADGETS = [ParallelSum(Mul(), chunk_length)]
        self.GADGET_CALLS = [(length + chunk_length - 1) // chunk_length]
        self.MEAS_LEN = self.length
        self.OUTPUT_LEN = self.length
        self.JOINT_RAND_LEN = self.GADGET_CALLS[0]

    def encode(self, measurement: int) -> list[Field128]:
        if measurement not in range(self.length):
            raise ValueError("measurement out of range")
        encoded = [self.field(0)] * self.length
        encoded[measurement] = self.field(1)
        return encoded

    def eval(self, meas: list[Field128], joint_rand: list[Field128], num_shares: int) -> list[Field128]:
        range_check = _range_check(self, meas, joint_rand, num_shares)
        # Check that the buckets sum to 1.
        shares_inv = self.field(num_shares).inv()
        sum_check = -shares_inv
        for b in meas:
            sum_check += b
        return [range_check, sum_check]

    def truncate(self, meas: list[Field128]) -> list[Field128]:
        return meas


class SumVec(Valid[Field128]):
    """Vector of `length` values in [0, max_measurement], each bit-decomposed."""

    EVAL_OUTPUT_LEN = 1
    PRIO3_ID = 0x00000003

    def __init__(self, length: int, max_measurement: int, chunk_length: int,
                 field: type[Field128] = Field128) -> None:
        if length <= 0:
            raise ValueError("invalid length")
        if chunk_length <= 0:
            raise ValueError("invalid chunk_length")
        if max_measurement <= 0:
            raise ValueError("invalid max_measurement")
        self.field = field
        self.length = length
        bits = max_measurement.bit_length()
        if 2**bits >= field.MODULUS:
            raise ValueError("bound exceeds field modulus")
        self.bits = bits
        self.max_measurement = max_measurement
        rest_all_ones_value = 2 ** (bits - 1) - 1
        self.last_weight = max_measurement - rest_all_ones_value
        self.chunk_length = chunk_length
        self.GADGETS = [ParallelSum(Mul(), chunk_length)]
        self.GADGET_CALLS = [(length * bits + chunk_length - 1) // chunk_length]
        self.MEAS_LEN = length * bits
        self.OUTPUT_LEN = length
        self.JOINT_RAND_LEN = self.GADGET_CALLS[0]

    def encode(self, measurement: list[int]) -> list[Field128]:
        if len(measurement) != self.length:
            raise ValueError("incorrect measurement length")
        encoded = []
        for val in measurement:
            if val not in range(self.max_measurement + 1):
                raise ValueError("entry of measurement vector is out of range")
            encoded += _bit_decompose(self.field, val, self.bits, self.last_weight)
        return encoded

    def eval(self, meas: list[Field128], joint_rand: list[Field128], num_shares: int) -> list[Field128]:
        return [_range_check(self, meas, joint_rand, num_shares)]

    def truncate(self, meas: list[Field128]) -> list[Field128]:
        truncated = []
        for i in range(self.length):
            truncated.append(
                self.field.decode_from_bit_vec(meas[i * self.bits : (i + 1) * self.bits - 1])
                + meas[(i + 1) * self.bits - 1] * self.field(self.last_weight)
            )
        return truncated


# ------------------------------------------------------------------ FLP (BBCGGI19)
class ProveGadget(Gadget[F]):
    """Wraps a gadget to record its input wires, call by call, for the prover."""

    def __init__(self, field: type[F], wire_seeds: list[F], g: Gadget[F], g_calls: int) -> None:
        p = next_power_of_2(1 + g_calls)
        self.inner = g
        self.ARITY = g.ARITY
        self.DEGREE = g.DEGREE
        self.wires: list[list[F]] = []
        self.k = 0  # evaluation counter
        for s in wire_seeds:
            wire = field.zeros(p)
            wire[0] = s  # the wire seed
            self.wires.append(wire)

    def eval(self, field: type[F], inp: list[F]) -> F:
        self.k += 1
        for j in range(len(inp)):
            self.wires[j][self.k] = inp[j]
        return self.inner.eval(field, inp)

    def eval_poly(self, field: type[F], inp_poly: list[list[F]]) -> list[F]:
        return self.inner.eval_poly(field, inp_poly)

    @classmethod
    def wrap(cls, valid: Valid[F], prove_rand: list[F]) -> Valid[F]:
        """A deep copy of `valid` whose gadgets record their wires, seeded from `prove_rand`."""
        wrapped_gadgets: list[Gadget[F]] = []
        for g, g_calls in zip(valid.GADGETS, valid.GADGET_CALLS):
            (wire_seeds, prove_rand) = front(g.ARITY, prove_rand)
            wrapped_gadgets.append(cls(valid.field, wire_seeds, g, g_calls))
        wrapped_valid = deepcopy(valid)
        wrapped_valid.GADGETS = wrapped_gadgets
        return wrapped_valid


class QueryGadget(Gadget[F]):
    """Wraps a gadget to record its input wires; outputs come from the proof's gadget polynomial."""

    def __init__(self, field: type[F], wire_seeds: list[F], gadget_poly: list[F], g: Gadget[F],
                 g_calls: int) -> None:
        p = next_power_of_2(1 + g_calls)
        self.alpha = field.gen() ** (field.GEN_ORDER // p)
        self.ARITY = g.ARITY
        self.DEGREE = g.DEGREE
        self.wires: list[list[F]] = []
        self.k = 0
        for s in wire_seeds:
            wire = field.zeros(p)
            wire[0] = s
            self.wires.append(wire)

        # Recover all the values of the gadget polynomial.
        lag = Lagrange(field)
        n = next_power_of_2(len(gadget_poly))
        gadget_poly = list(gadget_poly)
        lag.extend_values_to_power_of_2(gadget_poly, n)

        # Compute `size` values of it.
        size = next_power_of_2(g.DEGREE * (p - 1) + 1)
        while len(gadget_poly) < size:
            gadget_poly = lag.double_evaluations(gadget_poly)
        self.poly = gadget_poly

        # Step between the values at the powers of alpha.
        log_size = assert_power_of_2(size)
        log_p = assert_power_of_2(p)
        self.step = 1 << (log_size - log_p)

    def eval(self, field: type[F], inp: list[F]) -> F:
        self.k += 1
        for j in range(len(inp)):
            self.wires[j][self.k] = inp[j]
        return self.poly[self.k * self.step]

    @classmethod
    def wrap(cls, valid: Valid[F], proof: list[F]) -> Valid[F]:
        """A deep copy of `valid` whose gadgets read their outputs from `proof`."""
        wrapped_gadgets: list[Gadget[F]] = []
        for g, g_calls in zip(valid.GADGETS, valid.GADGET_CALLS):
            p = next_power_of_2(1 + g_calls)
            gadget_poly_len = g.DEGREE * (p - 1) + 1
            (wire_seeds, proof) = front(g.ARITY, proof)
            (gadget_poly, proof) = front(gadget_poly_len, proof)
            wrapped_gadgets.append(cls(valid.field, wire_seeds, gadget_poly, g, g_calls))
        wrapped_valid = deepcopy(valid)
        wrapped_valid.GADGETS = wrapped_gadgets
        return wrapped_valid


class FlpBBCGGI19(Generic[F]):
    """The FLP of BBCGGI19 (Theorem 4.3) with the draft's extensions."""

    def __init__(self, valid: Valid[F]) -> None:
        self.valid = valid
        self.field = valid.field
        self.PROVE_RAND_LEN = valid.prove_rand_len()
        self.QUERY_RAND_LEN = valid.query_rand_len()
        self.JOINT_RAND_LEN = valid.JOINT_RAND_LEN
        self.MEAS_LEN = valid.MEAS_LEN
        self.OUTPUT_LEN = valid.OUTPUT_LEN
        self.PROOF_LEN = valid.proof_len()
        self.VERIFIER_LEN = valid.verifier_len()

    def prove(self, meas: list[F], prove_rand: list[F], joint_rand: list[F]) -> list[F]:
        """Wire seeds and gadget polynomial values of each gadget."""
        # Evaluate the circuit, recording each gadget's input wires.
        valid = ProveGadget.wrap(self.valid, prove_rand)
        valid.eval(meas, joint_rand, 1)

        proof: list[F] = []
        for g, g_calls in zip(cast(list[ProveGadget[F]], valid.GADGETS), valid.GADGET_CALLS):
            p = next_power_of_2(1 + g_calls)
            # Wire j's polynomial takes value g.wires[j][k] at alpha^k:
            # the seed at k = 0, then one value per call, then zeros.
            wire_polys = [g.wires[j] for j in range(g.ARITY)]
            proof += [g.wires[j][0] for j in range(g.ARITY)]
            # The gadget polynomial, whose value at alpha^k is the k-th output.
            gadget_poly = g.eval_poly(self.field, wire_polys)
            gadget_poly_len = g.DEGREE * (p - 1) + 1
            proof += gadget_poly[:gadget_poly_len]
        return proof

    def query(self, meas: list[F], proof: list[F], query_rand: list[F], joint_rand: list[F],
              num_shares: int) -> list[F]:
        """Share of the verifier: reduced circuit output, then per gadget its wires and output at t."""
        valid = QueryGadget.wrap(self.valid, proof)
        out = valid.eval(meas, joint_rand, num_shares)

        # Reduce the output.
        if self.valid.EVAL_OUTPUT_LEN > 1:
            (rand, query_rand) = front(self.valid.EVAL_OUTPUT_LEN, query_rand)
            v = self.field(0)
            for r, out_elem in zip(rand, out):
                v += r * out_elem
        else:
            [v] = out

        lag = Lagrange(self.field)
        verifier = [v]
        for g, t in zip(cast(list[QueryGadget[F]], valid.GADGETS), query_rand):
            p = len(g.wires[0])
            # Abort if t is a root of unity: the verifier would leak a wire value.
            if t**p == self.field(1):
                raise ValueError("test point is a root of unity")
            wire_checks = lag.poly_eval_batched(g.wires[: g.ARITY], t)
            gadget_check = lag.poly_eval(g.poly, t)
            verifier += wire_checks
            verifier.append(gadget_check)
        return verifier

    def decide(self, verifier: list[F]) -> bool:
        """Whether the combined verifier accepts."""
        ([v], verifier) = front(1, verifier)
        if v != self.field(0):
            return False
        for g in self.valid.GADGETS:
            (wire_checks, verifier) = front(g.ARITY, verifier)
            ([gadget_check], verifier) = front(1, verifier)
            if g.eval(self.field, wire_checks) != gadget_check:
                return False
        return True

    def encode(self, measurement: Any) -> list[F]:
        return self.valid.encode(measurement)

    def truncate(self, meas: list[F]) -> list[F]:
        return self.valid.truncate(meas)


# ------------------------------------------------------------------ XOF
class XofTurboShake128:
    """TurboSHAKE128(len(dst) || dst || len(seed) || seed || binder, domain 1)."""

    SEED_SIZE = 32

    def __init__(self, seed: bytes, dst: bytes, binder: bytes) -> None:
        self.h = TurboSHAKE128.new(domain=1)
        self.h.update(to_le_bytes(len(dst), 2))
        self.h.update(dst)
        self.h.update(to_le_bytes(len(seed), 1))
        self.h.update(seed)
        self.h.update(binder)

    def next(self, length: int) -> bytes:
        return self.h.read(length)

    @classmethod
    def derive_seed(cls, seed: bytes, dst: bytes, binder: bytes) -> bytes:
        return cls(seed, dst, binder).next(cls.SEED_SIZE)

    def next_vec(self, field: type[F], length: int) -> list[F]:
        """Rejection sampling of `length` field elements."""
        m = next_power_of_2(field.MODULUS) - 1
        vec: list[F] = []
        while len(vec) < length:
            x = from_le_bytes(self.next(field.ENCODED_SIZE))
            x &= m
            if x < field.MODULUS:
                vec.append(field(x))
        return vec

    @classmethod
    def expand_into_vec(cls, field: type[F], seed: bytes, dst: bytes, binder: bytes, length: int) -> list[F]:
        return cls(seed, dst, binder).next_vec(field, length)


# ------------------------------------------------------------------ Prio3
class DraftPrio3:
    """Prio3 over one of the circuits above, one proof, XofTurboShake128; messages as bytes."""

    NONCE_SIZE = 16
    PROOFS = 1
    xof = XofTurboShake128

    def __init__(self, valid: Valid[Any], shares: int = 2) -> None:
        if shares not in range(2, 256):
            raise ValueError("invalid number of shares")
        self.ID = valid.PRIO3_ID
        self.SHARES = shares
        self.flp = FlpBBCGGI19(valid)
        self.field = valid.field
        rand_size = shares * self.xof.SEED_SIZE
        if self.flp.JOINT_RAND_LEN > 0:
            rand_size += shares * self.xof.SEED_SIZE
        self.RAND_SIZE = rand_size

    # -- client
    def shard(self, ctx: bytes, measurement: Any, nonce: bytes, rand: bytes) -> tuple[bytes, list[bytes]]:
        """Client: the public share and one input share per aggregator, encoded."""
        if len(nonce) != self.NONCE_SIZE:
            raise ValueError("incorrect nonce size")
        if len(rand) != self.RAND_SIZE:
            raise ValueError("incorrect size of random bytes argument")
        seed_size = self.xof.SEED_SIZE
        seeds = [rand[i : i + seed_size] for i in range(0, self.RAND_SIZE, seed_size)]
        meas = self.flp.encode(measurement)
        if self.flp.JOINT_RAND_LEN > 0:
            (public_share, input_shares) = self._shard_with_joint_rand(ctx, meas, nonce, seeds)
        else:
            (public_share, input_shares) = self._shard_without_joint_rand(ctx, meas, seeds)
        return self._encode_public_share(public_share), [self._encode_input_share(s) for s in input_shares]

    def _shard_without_joint_rand(self, ctx: bytes, meas: list[Any], seeds: list[bytes]) -> tuple[None, list[Any]]:
        k_helper_shares, seeds = front(self.SHARES - 1, seeds)
        (k_prove,), seeds = front(1, seeds)

        # Shard the encoded measurement into shares.
        leader_meas_share = meas
        for j in range(self.SHARES - 1):
            leader_meas_share = vec_sub(leader_meas_share, self._helper_meas_share(ctx, j + 1, k_helper_shares[j]))

        # Generate the proof and shard it.
        prove_rands = self._prove_rands(ctx, k_prove)
        leader_proofs_share: list[Any] = []
        for _ in range(self.PROOFS):
            prove_rand, prove_rands = front(self.flp.PROVE_RAND_LEN, prove_rands)
            leader_proofs_share += self.flp.prove(meas, prove_rand, [])
        for j in range(self.SHARES - 1):
            leader_proofs_share = vec_sub(leader_proofs_share,
                                          self._helper_proofs_share(ctx, j + 1, k_helper_shares[j]))

        input_shares: list[Any] = [(leader_meas_share, leader_proofs_share, None)]
        for j in range(self.SHARES - 1):
            input_shares.append((k_helper_shares[j], None))
        return (None, input_shares)

    def _shard_with_joint_rand(self, ctx: bytes, meas: list[Any], nonce: bytes,
                               seeds: list[bytes]) -> tuple[list[bytes], list[Any]]:
        k_helper_seeds, seeds = front((self.SHARES - 1) * 2, seeds)
        k_helper_shares = [k_helper_seeds[i] for i in range(0, (self.SHARES - 1) * 2, 2)]
        k_helper_blinds = [k_helper_seeds[i] for i in range(1, (self.SHARES - 1) * 2, 2)]
        (k_leader_blind, k_prove), seeds = front(2, seeds)

        # Shard the encoded measurement and compute the joint randomness parts.
        leader_meas_share = meas
        k_joint_rand_parts = []
        for j in range(self.SHARES - 1):
            helper_meas_share = self._helper_meas_share(ctx, j + 1, k_helper_shares[j])
            leader_meas_share = vec_sub(leader_meas_share, helper_meas_share)
            k_joint_rand_parts.append(self._joint_rand_part(ctx, j + 1, k_helper_blinds[j], helper_meas_share, nonce))
        k_joint_rand_parts.insert(0, self._joint_rand_part(ctx, 0, k_leader_blind, leader_meas_share, nonce))

        # Generate the proof and shard it.
        prove_rands = self._prove_rands(ctx, k_prove)
        joint_rands = self._joint_rands(ctx, self._joint_rand_seed(ctx, k_joint_rand_parts))
        leader_proofs_share: list[Any] = []
        for _ in range(self.PROOFS):
            prove_rand, prove_rands = front(self.flp.PROVE_RAND_LEN, prove_rands)
            joint_rand, joint_rands = front(self.flp.JOINT_RAND_LEN, joint_rands)
            leader_proofs_share += self.flp.prove(meas, prove_rand, joint_rand)
        for j in range(self.SHARES - 1):
            leader_proofs_share = vec_sub(leader_proofs_share,
                                          self._helper_proofs_share(ctx, j + 1, k_helper_shares[j]))

        input_shares: list[Any] = [(leader_meas_share, leader_proofs_share, k_leader_blind)]
        for j in range(self.SHARES - 1):
            input_shares.append((k_helper_shares[j], k_helper_blinds[j]))
        return (k_joint_rand_parts, input_shares)

    # -- aggregators
    def verify_init(self, verify_key: bytes, ctx: bytes, agg_id: int, nonce: bytes, public_share: bytes,
                    input_share: bytes) -> tuple[tuple[list[Any], bytes | None], bytes]:
        """Aggregator `agg_id`: (verification state, encoded verifier share)."""
        k_joint_rand_parts = self._decode_public_share(public_share)
        (meas_share, proofs_share, k_blind) = self._expand_input_share(ctx, agg_id,
                                                                       self._decode_input_share(agg_id, input_share))
        out_share = self.flp.truncate(meas_share)

        # Compute the joint randomness.
        joint_rand: list[Any] = []
        joint_rands: list[Any] = []
        k_corrected_joint_rand, k_joint_rand_part = None, None
        if self.flp.JOINT_RAND_LEN > 0:
            if k_blind is None or k_joint_rand_parts is None:
                raise ValueError("missing joint randomness")
            k_joint_rand_part = self._joint_rand_part(ctx, agg_id, k_blind, meas_share, nonce)
            k_joint_rand_parts[agg_id] = k_joint_rand_part
            k_corrected_joint_rand = self._joint_rand_seed(ctx, k_joint_rand_parts)
            joint_rands = self._joint_rands(ctx, k_corrected_joint_rand)

        # Query the measurement and proof share.
        query_rands = self._query_rands(verify_key, ctx, nonce)
        verifiers_share: list[Any] = []
        for _ in range(self.PROOFS):
            proof_share, proofs_share = front(self.flp.PROOF_LEN, proofs_share)
            query_rand, query_rands = front(self.flp.QUERY_RAND_LEN, query_rands)
            if self.flp.JOINT_RAND_LEN > 0:
                joint_rand, joint_rands = front(self.flp.JOINT_RAND_LEN, joint_rands)
            verifiers_share += self.flp.query(meas_share, proof_share, query_rand, joint_rand, self.SHARES)

        verify_state = (out_share, k_corrected_joint_rand)
        verifier_share = self.field.encode_vec(verifiers_share) + (k_joint_rand_part or b"")
        return (verify_state, verifier_share)

    def verifier_shares_to_message(self, ctx: bytes, verifier_shares: list[bytes]) -> bytes:
        """Leader: combine the verifier shares, decide, and derive the joint randomness seed check."""
        verifiers = self.field.zeros(self.flp.VERIFIER_LEN * self.PROOFS)
        k_joint_rand_parts = []
        for encoded in verifier_shares:
            (verifiers_share, k_joint_rand_part) = self._decode_verifier_share(encoded)
            verifiers = vec_add(verifiers, verifiers_share)
            if self.flp.JOINT_RAND_LEN > 0:
                k_joint_rand_parts.append(k_joint_rand_part)

        # Verify that each proof is well-formed and the input valid.
        for _ in range(self.PROOFS):
            verifier, verifiers = front(self.flp.VERIFIER_LEN, verifiers)
            if not self.flp.decide(verifier):
                raise ValueError("proof verifier check failed")

        # The true joint randomness seed, checked in verify_next.
        if self.flp.JOINT_RAND_LEN > 0:
            return self._joint_rand_seed(ctx, k_joint_rand_parts)
        return b""

    def verify_next(self, verify_state: tuple[list[Any], bytes | None], verifier_message: bytes) -> list[Any]:
        """Aggregator: its output share, if the joint randomness the client used was right."""
        k_joint_rand = verifier_message if self.flp.JOINT_RAND_LEN > 0 else None
        (out_share, k_corrected_joint_rand) = verify_state
        if k_joint_rand != k_corrected_joint_rand:
            raise ValueError("joint randomness check failed")
        return out_share

    # -- auxiliary functions
    def _domain_separation_tag(self, usage: int, ctx: bytes) -> bytes:
        return format_dst(0, self.ID, usage) + ctx

    def _helper_meas_share(self, ctx: bytes, agg_id: int, k_share: bytes) -> list[Any]:
        return self.xof.expand_into_vec(self.field, k_share, self._domain_separation_tag(USAGE_MEAS_SHARE, ctx),
                                        bytes([agg_id]), self.flp.MEAS_LEN)

    def _helper_proofs_share(self, ctx: bytes, agg_id: int, k_share: bytes) -> list[Any]:
        return self.xof.expand_into_vec(self.field, k_share, self._domain_separation_tag(USAGE_PROOF_SHARE, ctx),
                                        bytes([self.PROOFS, agg_id]), self.flp.PROOF_LEN * self.PROOFS)

    def _expand_input_share(self, ctx: bytes, agg_id: int, input_share: Any) -> tuple[list[Any], list[Any], Any]:
        if agg_id > 0:
            (k_share, k_blind) = input_share
            meas_share = self._helper_meas_share(ctx, agg_id, k_share)
            proofs_share = self._helper_proofs_share(ctx, agg_id, k_share)
        else:
            (meas_share, proofs_share, k_blind) = input_share
        return (meas_share, proofs_share, k_blind)

    def _prove_rands(self, ctx: bytes, k_prove: bytes) -> list[Any]:
        return self.xof.expand_into_vec(self.field, k_prove, self._domain_separation_tag(USAGE_PROVE_RANDOMNESS, ctx),
                                        bytes([self.PROOFS]), self.flp.PROVE_RAND_LEN * self.PROOFS)

    def _query_rands(self, verify_key: bytes, ctx: bytes, nonce: bytes) -> list[Any]:
        return self.xof.expand_into_vec(self.field, verify_key,
                                        self._domain_separation_tag(USAGE_QUERY_RANDOMNESS, ctx),
                                        bytes([self.PROOFS]) + nonce, self.flp.QUERY_RAND_LEN * self.PROOFS)

    def _joint_rand_part(self, ctx: bytes, agg_id: int, k_blind: bytes, meas_share: list[Any], nonce: bytes) -> bytes:
        return self.xof.derive_seed(k_blind, self._domain_separation_tag(USAGE_JOINT_RAND_PART, ctx),
                                    bytes([agg_id]) + nonce + self.field.encode_vec(meas_share))

    def _joint_rand_seed(self, ctx: bytes, k_joint_rand_parts: list[bytes]) -> bytes:
        return self.xof.derive_seed(bytes(self.xof.SEED_SIZE), self._domain_separation_tag(USAGE_JOINT_RAND_SEED, ctx),
                                    b"".join(k_joint_rand_parts))

    def _joint_rands(self, ctx: bytes, k_joint_rand_seed: bytes) -> list[Any]:
        return self.xof.expand_into_vec(self.field, k_joint_rand_seed,
                                        self._domain_separation_tag(USAGE_JOINT_RANDOMNESS, ctx),
                                        bytes([self.PROOFS]), self.flp.JOINT_RAND_LEN * self.PROOFS)

    # -- message encoding
    def _encode_public_share(self, k_joint_rand_parts: list[bytes] | None) -> bytes:
        return b"".join(k_joint_rand_parts) if k_joint_rand_parts is not None else b""

    def _decode_public_share(self, encoded: bytes) -> list[bytes] | None:
        if self.flp.JOINT_RAND_LEN == 0:
            if encoded:
                raise ValueError("unexpected public share")
            return None
        seed_size = self.xof.SEED_SIZE
        if len(encoded) != self.SHARES * seed_size:
            raise ValueError("public share has the wrong length")
        return [encoded[i : i + seed_size] for i in range(0, len(encoded), seed_size)]

    def _encode_input_share(self, input_share: Any) -> bytes:
        if len(input_share) == 3:  # leader
            (meas_share, proofs_share, k_blind) = input_share
            encoded = self.field.encode_vec(meas_share) + self.field.encode_vec(proofs_share)
        else:  # helper
            (k_share, k_blind) = input_share
            encoded = k_share
        return encoded + (k_blind if k_blind is not None else b"")

    def _decode_input_share(self, agg_id: int, encoded: bytes) -> Any:
        blind_len = self.xof.SEED_SIZE if self.flp.JOINT_RAND_LEN > 0 else 0
        if agg_id == 0:
            meas_len = self.flp.MEAS_LEN * self.field.ENCODED_SIZE
            proofs_len = self.flp.PROOF_LEN * self.PROOFS * self.field.ENCODED_SIZE
            if len(encoded) != meas_len + proofs_len + blind_len:
                raise ValueError("leader input share has the wrong length")
            meas_share = self.field.decode_vec(encoded[:meas_len])
            proofs_share = self.field.decode_vec(encoded[meas_len : meas_len + proofs_len])
            k_blind = encoded[meas_len + proofs_len :] if blind_len else None
            return (meas_share, proofs_share, k_blind)
        if agg_id not in range(1, self.SHARES):
            raise ValueError("invalid aggregator ID")
        if len(encoded) != self.xof.SEED_SIZE + blind_len:
            raise ValueError("helper input share has the wrong length")
        return (encoded[: self.xof.SEED_SIZE], encoded[self.xof.SEED_SIZE :] if blind_len else None)

    def _decode_verifier_share(self, encoded: bytes) -> tuple[list[Any], bytes | None]:
        verifiers_len = self.flp.VERIFIER_LEN * self.PROOFS * self.field.ENCODED_SIZE
        part_len = self.xof.SEED_SIZE if self.flp.JOINT_RAND_LEN > 0 else 0
        if len(encoded) != verifiers_len + part_len:
            raise ValueError("verifier share has the wrong length")
        part = encoded[verifiers_len:] if part_len else None
        return (self.field.decode_vec(encoded[:verifiers_len]), part)


__all__ = [
    "VERSION",
    "Count",
    "DraftPrio3",
    "Field64",
    "Field128",
    "FlpBBCGGI19",
    "Histogram",
    "Lagrange",
    "Sum",
    "SumVec",
]
