"""Pure-Python scalar baseline of Prio3 (draft-irtf-cfrg-vdaf-18) for bench_prio3.py.

A straightforward transcription with Python ints and lists: the same
algorithms as mpc.prio3 (radix-2 NTT, Lagrange-basis gadget polynomial,
barycentric evaluation), one element at a time.  It exists only to measure
the speed-up of the numpy implementation; bench_prio3.py also checks that
both produce byte-identical shares and verifier shares.

Covers Count, Sum, Histogram and SumVec with 2 aggregators.  Not for
production use: no input validation beyond what the benchmark needs.
"""

from __future__ import annotations

from Crypto.Hash import TurboSHAKE128

P64 = 2**32 * 4294967295 + 1
P128 = 2**66 * 4611686018427387897 + 1
FIELDS = {  # modulus -> (encoded size, generator, generator order)
    P64: (8, pow(7, 4294967295, P64), 2**32),
    P128: (16, pow(7, 4611686018427387897, P128), 2**66),
}
VERSION = 18


def dst(algo: int, usage: int, ctx: bytes) -> bytes:
    return bytes([VERSION, 0]) + algo.to_bytes(4, "big") + usage.to_bytes(2, "big") + ctx


class Xof:
    def __init__(self, seed: bytes, dst_: bytes, binder: bytes) -> None:
        self.h = TurboSHAKE128.new(domain=1, data=len(dst_).to_bytes(2, "little") + dst_ + bytes([len(seed)]) + seed + binder)

    def next(self, n: int) -> bytes:
        return self.h.read(n)

    def next_vec(self, p: int, n: int) -> list[int]:
        size = FIELDS[p][0]
        out = []
        while len(out) < n:
            x = int.from_bytes(self.next(size), "little")
            if x < p:
                out.append(x)
        return out


def encode_vec(p: int, v: list[int]) -> bytes:
    size = FIELDS[p][0]
    return b"".join(x.to_bytes(size, "little") for x in v)


def decode_vec(p: int, data: bytes) -> list[int]:
    size = FIELDS[p][0]
    out = [int.from_bytes(data[i : i + size], "little") for i in range(0, len(data), size)]
    if any(x >= p for x in out):
        raise ValueError("modulus overflow")
    return out


def root(p: int, n: int) -> int:
    _, g, order = FIELDS[p]
    return pow(g, order // n, p)


def ntt(p: int, a: list[int], w: int) -> list[int]:
    n = len(a)
    bits = n.bit_length() - 1
    x = [a[int(format(i, f"0{bits}b")[::-1], 2) if bits else 0] for i in range(n)]
    m = 1
    while m < n:
        wm = pow(w, n // (2 * m), p)
        for start in range(0, n, 2 * m):
            tw = 1
            for j in range(m):
                u, v = x[start + j], x[start + j + m] * tw % p
                x[start + j], x[start + j + m] = (u + v) % p, (u - v) % p
                tw = tw * wm % p
        m *= 2
    return x


def intt(p: int, a: list[int]) -> list[int]:
    n = len(a)
    out = ntt(p, a, pow(root(p, n), -1, p))
    inv = pow(n, -1, p)
    return [x * inv % p for x in out]


def next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def bary(p: int, values: list[int], t: int) -> int:
    n = len(values)
    w = root(p, n)
    acc, wk = 0, 1
    for v in values:
        acc = (acc + v * wk * pow(t - wk, -1, p)) % p
        wk = wk * w % p
    return acc * (pow(t, n, p) - 1) * pow(n, -1, p) % p


# ------------------------------------------------------------------ circuits
class Circuit:
    p: int
    arity: int
    degree: int
    calls: int
    meas_len: int
    jr_len: int
    eval_len: int
    algo: int

    def gadget(self, inp: list[int]) -> int:
        raise NotImplementedError

    def wires(self, meas: list[int], jr: list[int], shares: int) -> list[list[int]]:
        raise NotImplementedError

    def combine(self, meas: list[int], jr: list[int], shares: int, outs: list[int]) -> list[int]:
        raise NotImplementedError

    def proof_len(self) -> int:
        return self.arity + self.degree * (next_pow2(1 + self.calls) - 1) + 1


class Count(Circuit):
    p, arity, degree, calls, meas_len, jr_len, eval_len, algo = P64, 2, 2, 1, 1, 0, 1, 1

    def gadget(self, inp: list[int]) -> int:
        return inp[0] * inp[1] % self.p

    def encode(self, m: int) -> list[int]:
        return [m]

    def wires(self, meas, jr, shares):  # type: ignore[no-untyped-def]
        return [[meas[0]], [meas[0]]]

    def combine(self, meas, jr, shares, outs):  # type: ignore[no-untyped-def]
        return [(outs[0] - meas[0]) % self.p]

    def truncate(self, meas: list[int]) -> list[int]:
        return meas


class Sum(Circuit):
    p, arity, degree, jr_len, algo = P64, 1, 2, 0, 2

    def __init__(self, max_measurement: int) -> None:
        self.max = max_measurement
        self.bits = max_measurement.bit_length()
        self.weights = [1 << i for i in range(self.bits - 1)] + [max_measurement - (1 << (self.bits - 1)) + 1]
        self.calls = self.meas_len = self.eval_len = self.bits

    def gadget(self, inp: list[int]) -> int:
        return (inp[0] * inp[0] - inp[0]) % self.p

    def encode(self, m: int) -> list[int]:
        top = 0
        if m > (1 << (self.bits - 1)) - 1:
            top, m = 1, m - self.weights[-1]
        return [(m >> i) & 1 for i in range(self.bits - 1)] + [top]

    def wires(self, meas, jr, shares):  # type: ignore[no-untyped-def]
        return [list(meas)]

    def combine(self, meas, jr, shares, outs):  # type: ignore[no-untyped-def]
        return list(outs)

    def truncate(self, meas: list[int]) -> list[int]:
        return [sum(w * b for w, b in zip(self.weights, meas)) % self.p]


class RangeChecked(Circuit):
    """Histogram / SumVec: ParallelSum(Mul, chunk) bit checks with joint randomness."""

    p, degree = P128, 2

    def __init__(self, meas_len: int, chunk: int) -> None:
        self.chunk = chunk
        self.meas_len = meas_len
        self.calls = self.jr_len = -(-meas_len // chunk)
        self.arity = 2 * chunk

    def gadget(self, inp: list[int]) -> int:
        return sum(inp[2 * j] * inp[2 * j + 1] for j in range(self.chunk)) % self.p

    def wires(self, meas, jr, shares):  # type: ignore[no-untyped-def]
        p = self.p
        sinv = pow(shares, -1, p)
        cols = []
        for i in range(self.calls):
            col, rp = [], jr[i]
            for j in range(self.chunk):
                idx = i * self.chunk + j
                x = meas[idx] if idx < len(meas) else 0
                col += [rp * x % p, (x - sinv) % p]
                rp = rp * jr[i] % p
            cols.append(col)
        return [list(row) for row in zip(*cols)]


class Histogram(RangeChecked):
    algo, eval_len = 4, 2

    def __init__(self, length: int, chunk: int) -> None:
        super().__init__(length, chunk)

    def encode(self, m: int) -> list[int]:
        return [1 if i == m else 0 for i in range(self.meas_len)]

    def combine(self, meas, jr, shares, outs):  # type: ignore[no-untyped-def]
        return [sum(outs) % self.p, (sum(meas) - pow(shares, -1, self.p)) % self.p]

    def truncate(self, meas: list[int]) -> list[int]:
        return meas


class SumVec(RangeChecked):
    algo, eval_len = 3, 1

    def __init__(self, length: int, max_measurement: int, chunk: int) -> None:
        self.bits = max_measurement.bit_length()
        self.weights = [1 << i for i in range(self.bits - 1)] + [max_measurement - (1 << (self.bits - 1)) + 1]
        self.length = length
        super().__init__(length * self.bits, chunk)

    def encode(self, ms: list[int]) -> list[int]:
        out = []
        for m in ms:
            top = 0
            if m > (1 << (self.bits - 1)) - 1:
                top, m = 1, m - self.weights[-1]
            out += [(m >> i) & 1 for i in range(self.bits - 1)] + [top]
        return out

    def combine(self, meas, jr, shares, outs):  # type: ignore[no-untyped-def]
        return [sum(outs) % self.p]

    def truncate(self, meas: list[int]) -> list[int]:
        b = self.bits
        return [sum(w * x for w, x in zip(self.weights, meas[i * b : (i + 1) * b])) % self.p for i in range(self.length)]


# ------------------------------------------------------------------ FLP
def prove(c: Circuit, meas: list[int], prove_rand: list[int], jr: list[int]) -> list[int]:
    p = c.p
    wires = c.wires(meas, jr, 1)
    size = next_pow2(1 + c.calls)
    length = c.degree * (size - 1) + 1
    n = next_pow2(length)
    polys = []
    for j in range(c.arity):
        vals = [prove_rand[j]] + wires[j] + [0] * (size - 1 - c.calls)
        coeffs = intt(p, vals)
        polys.append(ntt(p, coeffs + [0] * (n - size), root(p, n)))
    gadget_vals = [c.gadget([polys[j][k] for j in range(c.arity)]) for k in range(n)]
    return list(prove_rand[: c.arity]) + gadget_vals[:length]


def query(c: Circuit, meas: list[int], proof: list[int], qr: list[int], jr: list[int], shares: int) -> list[int]:
    p = c.p
    size = next_pow2(1 + c.calls)
    length = c.degree * (size - 1) + 1
    n = next_pow2(length)
    seeds, vals = proof[: c.arity], list(proof[c.arity :])
    w = root(p, n)
    if n > length:  # degree 2: one missing value, the top coefficient must vanish
        acc, wk = 0, 1
        for v in vals:
            acc = (acc + v * wk) % p
            wk = wk * w % p
        vals.append(-w * acc % p)
    step = n // size
    outs = [vals[k * step] for k in range(1, c.calls + 1)]
    out = c.combine(meas, jr, shares, outs)
    if c.eval_len > 1:
        v = sum(r * o for r, o in zip(qr, out)) % p
        t = qr[c.eval_len]
    else:
        v, t = out[0], qr[0]
    if pow(t, size, p) == 1:
        raise ValueError("test point is a root of unity")
    wires = c.wires(meas, jr, shares)
    checks = [bary(p, [seeds[j]] + wires[j] + [0] * (size - 1 - c.calls), t) for j in range(c.arity)]
    return [v] + checks + [bary(p, vals, t)]


def decide(c: Circuit, verifier: list[int]) -> bool:
    return verifier[0] == 0 and c.gadget(verifier[1 : 1 + c.arity]) == verifier[1 + c.arity]


# ------------------------------------------------------------------ Prio3 (2 aggregators, 1 proof)
class Prio3Scalar:
    SHARES = 2

    def __init__(self, circuit: Circuit) -> None:
        self.c = circuit
        self.jr = circuit.jr_len > 0
        self.RAND_SIZE = 32 * 2 * (2 if self.jr else 1)
        self.qr_len = 1 + (circuit.eval_len if circuit.eval_len > 1 else 0)

    def _expand(self, seed: bytes, usage: int, ctx: bytes, binder: bytes, n: int) -> list[int]:
        return Xof(seed, dst(self.c.algo, usage, ctx), binder).next_vec(self.c.p, n)

    def _part(self, ctx: bytes, agg: int, blind: bytes, meas: list[int], nonce: bytes) -> bytes:
        return Xof(blind, dst(self.c.algo, 7, ctx), bytes([agg]) + nonce + encode_vec(self.c.p, meas)).next(32)

    def _jr(self, ctx: bytes, parts: list[bytes]) -> tuple[bytes, list[int]]:
        seed = Xof(bytes(32), dst(self.c.algo, 6, ctx), b"".join(parts)).next(32)
        return seed, self._expand(seed, 3, ctx, b"\x01", self.c.jr_len)

    def shard(self, ctx: bytes, measurement, nonce: bytes, rand: bytes):  # type: ignore[no-untyped-def]
        c, p = self.c, self.c.p
        seeds = [rand[i : i + 32] for i in range(0, len(rand), 32)]
        meas = c.encode(measurement)
        helper = seeds[0]
        helper_meas = self._expand(helper, 1, ctx, b"\x01", c.meas_len)
        leader_meas = [(a - b) % p for a, b in zip(meas, helper_meas)]
        jr: list[int] = []
        parts: list[bytes] = []
        if self.jr:
            helper_blind, leader_blind, prove_seed = seeds[1], seeds[2], seeds[3]
            parts = [self._part(ctx, 0, leader_blind, leader_meas, nonce), self._part(ctx, 1, helper_blind, helper_meas, nonce)]
            _, jr = self._jr(ctx, parts)
        else:
            prove_seed, leader_blind, helper_blind = seeds[1], b"", b""
        prove_rand = self._expand(prove_seed, 4, ctx, b"\x01", c.arity)
        proof = prove(c, meas, prove_rand, jr)
        helper_proof = self._expand(helper, 2, ctx, b"\x01\x01", c.proof_len())
        leader_proof = [(a - b) % p for a, b in zip(proof, helper_proof)]
        leader = encode_vec(p, leader_meas) + encode_vec(p, leader_proof) + leader_blind
        return b"".join(parts), [leader, helper + helper_blind]

    def verify_init(self, key: bytes, ctx: bytes, agg: int, nonce: bytes, public: bytes, share: bytes):  # type: ignore[no-untyped-def]
        c, p, size = self.c, self.c.p, FIELDS[self.c.p][0]
        if agg == 0:
            meas = decode_vec(p, share[: size * c.meas_len])
            proof = decode_vec(p, share[size * c.meas_len : size * (c.meas_len + c.proof_len())])
            blind = share[size * (c.meas_len + c.proof_len()) :]
        else:
            meas = self._expand(share[:32], 1, ctx, bytes([agg]), c.meas_len)
            proof = self._expand(share[:32], 2, ctx, bytes([1, agg]), c.proof_len())
            blind = share[32:]
        jr: list[int] = []
        seed, part = None, b""
        if self.jr:
            parts = [public[:32], public[32:64]]
            part = self._part(ctx, agg, blind, meas, nonce)
            parts[agg] = part
            seed, jr = self._jr(ctx, parts)
        qr = self._expand(key, 5, ctx, b"\x01" + nonce, self.qr_len)
        verifier = query(c, meas, proof, qr, jr, self.SHARES)
        return (c.truncate(meas), seed), encode_vec(p, verifier) + part

    def verifier_shares_to_message(self, ctx: bytes, shares: list[bytes]) -> bytes:
        c, p, size = self.c, self.c.p, FIELDS[self.c.p][0]
        vlen = size * (c.arity + 2)
        vs = [decode_vec(p, s[:vlen]) for s in shares]
        total = [sum(col) % p for col in zip(*vs)]
        if not decide(c, total):
            raise ValueError("proof verifier check failed")
        if not self.jr:
            return b""
        return Xof(bytes(32), dst(c.algo, 6, ctx), b"".join(s[vlen:] for s in shares)).next(32)

    def verify_next(self, state, msg: bytes) -> list[int]:  # type: ignore[no-untyped-def]
        out, seed = state
        if self.jr and msg != seed:
            raise ValueError("joint randomness check failed")
        return out


__all__ = ["Count", "Histogram", "Prio3Scalar", "Sum", "SumVec"]
