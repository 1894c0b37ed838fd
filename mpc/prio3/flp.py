"""The fully linear proof of BBCGGI19 as generalised by draft-irtf-cfrg-vdaf-18, Section 7.3.

A validity circuit (`Valid`) is split into two vectorised halves:

* ``wire_inputs(meas, joint_rand, num_shares)`` returns, for each gadget, the
  matrix of its input wires, shape ``(ARITY, GADGET_CALLS)`` (column k-1 holds
  the inputs of the k-th call);
* ``combine(meas, joint_rand, num_shares, gadget_outputs)`` maps the measurement
  and each gadget's output vector to the circuit output (``EVAL_OUTPUT_LEN``).

The verifier needs the wires only at the test point (weighted sums of their
columns): ``wire_evals`` computes those, by default from ``wire_inputs``;
the range-check circuits override it to skip building the wire matrix.

Every circuit in the draft (and ours) feeds gadgets only affine functions of
the measurement and joint randomness, so this split is exact, and it lets the
prover and verifier handle all calls of a gadget with one batched NTT instead
of wrapping gadgets call by call (the draft's ProveGadget / QueryGadget).

Batches: ``query_rows`` / ``decide_rows`` run the same steps for many reports
at once (row = report; each report has its own query randomness, so its own
test point and Lagrange weights), with the circuits' ``*_rows`` methods.

Gadget polynomials: wire j of a gadget with `calls` calls is interpolated at
alpha^k, k < P = next_power_of_2(1 + calls), with the wire seed at k = 0 and
zero padding; the gadget polynomial (degree DEGREE*(P-1)) is obtained by
evaluating the gadget point-wise on the wire polynomials at enough roots of
unity and interpolating back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, NamedTuple, TypeVar

import numpy as np

from twinmpc.crypto.field import _PrimeField
from twinmpc.crypto.poly import (
    extend_lagrange,
    extend_values,
    lagrange_weights_rows,
    next_power_of_2,
    parallel_mul_extend,
    subsample_lagrange_weights_rows,
)
from twinmpc.mpc.errors import VerifyError

# From this many wire-matrix elements (reports * arity * P) the prover's coset transforms
# run on field.LARGE (e.g. Field128 objects -> uint64 limbs): measured on
# Field128, 40x32 is about even and 64x64 twice as fast including conversions.
PROVER_LARGE_BACKEND_MIN = 2048

# Up to this many reports, query_rows checks test points on Python ints instead of vector steps.
FEW_ROWS = 4

Measurement = TypeVar("Measurement")


class QueryPoints(NamedTuple):
    """What `FlpBBCGGI19.query_points` derives from proofs and query randomness (rows = reports)."""

    seeds_list: list[np.ndarray]  # per gadget: the wire seeds (B, ARITY)
    polys: list[np.ndarray]  # per gadget: the gadget polynomial at all n-th roots
    outputs: list[np.ndarray]  # per gadget: its outputs at the call points (B, calls)
    wire_weights: list[np.ndarray]  # per gadget: Lagrange weights of the wire polynomials at t (B, 1 + calls)
    gadget_weights: list[np.ndarray]  # per gadget: Lagrange weights of the gadget polynomial at t
    query_rand: np.ndarray
    hit: np.ndarray  # (B,) test point among the interpolation points
AggResult = TypeVar("AggResult")


def zeros2(field: type[_PrimeField], rows: int, cols: int) -> np.ndarray:
    """A (rows, cols) zero matrix in the field's representation."""
    return field.zeros_shape((rows, cols))


class Gadget:
    """A non-affine sub-circuit (draft Section 7.3.2).  ``eval_vec`` is point-wise."""

    ARITY: int
    DEGREE: int

    def eval_vec(self, field: type[_PrimeField], inputs: np.ndarray) -> np.ndarray:
        """inputs: (ARITY, N) -> outputs (N,), the gadget applied to each column."""
        raise NotImplementedError


class Mul(Gadget):
    """Mul(x, y) = x * y (draft Section 7.5.1)."""

    ARITY = 2
    DEGREE = 2

    def eval_vec(self, field: type[_PrimeField], inputs: np.ndarray) -> np.ndarray:
        return field.mul(inputs[0], inputs[1])


class PolyEval(Gadget):
    """PolyEval(p)(x) = p(x) for a fixed univariate polynomial p (draft Section 7.5.2)."""

    ARITY = 1

    def __init__(self, coeffs: Sequence[int]) -> None:
        trimmed = list(coeffs)
        while trimmed and trimmed[-1] == 0:
            trimmed.pop()
        if not trimmed:
            raise ValueError("PolyEval needs a non-zero polynomial")
        self.coeffs = trimmed
        self.DEGREE = len(trimmed) - 1

    def eval_vec(self, field: type[_PrimeField], inputs: np.ndarray) -> np.ndarray:
        x = inputs[0]
        acc = field.full(x.shape[0], self.coeffs[-1])
        for c in reversed(self.coeffs[:-1]):  # Horner over the (constant) degree
            acc = field.add(field.mul(acc, x), field.const(c))
        return acc


class ParallelSum(Gadget):
    """Sum of `count` copies of a sub-gadget on consecutive input slices (draft Section 7.5.3)."""

    def __init__(self, subcircuit: Gadget, count: int) -> None:
        if count <= 0:
            raise ValueError("ParallelSum count must be positive")
        self.subcircuit = subcircuit
        self.count = count
        self.ARITY = subcircuit.ARITY * count
        self.DEGREE = subcircuit.DEGREE

    def eval_vec(self, field: type[_PrimeField], inputs: np.ndarray) -> np.ndarray:
        a = self.subcircuit.ARITY
        n = inputs.shape[-1]
        if isinstance(self.subcircuit, Mul):  # sum of products: one reduction per point
            return field.mul_sum(inputs[0::2], inputs[1::2], axis=0)
        grouped = inputs.reshape(self.count, a, n).transpose(1, 0, 2).reshape(a, self.count * n)
        per_copy = self.subcircuit.eval_vec(field, grouped).reshape(self.count, n)
        return field.sum(per_copy, axis=0)


class Valid(Generic[Measurement, AggResult]):
    """A validity circuit plus its affine-aggregatable encoding (draft Section 7.3.2)."""

    field: type[_PrimeField]
    MEAS_LEN: int
    JOINT_RAND_LEN: int
    OUTPUT_LEN: int
    EVAL_OUTPUT_LEN: int
    GADGETS: list[Gadget]
    GADGET_CALLS: list[int]
    # Measurement elements per output element when the verifier may see the measurement in
    # consecutive blocks (each a whole number of these units): the circuit's combine does not
    # read the measurement, its only gadget is a range check and `truncate_block` maps a block
    # to its outputs (mpc/prio3/stream.py).  None: the verifier needs the whole measurement.
    STREAM_UNIT: int | None = None

    def wire_inputs(self, meas: np.ndarray, joint_rand: np.ndarray, num_shares: int) -> list[np.ndarray]:
        raise NotImplementedError

    def combine(
        self, meas: np.ndarray, joint_rand: np.ndarray, num_shares: int, gadget_outputs: list[np.ndarray]
    ) -> np.ndarray:
        raise NotImplementedError

    def wire_evals(
        self, meas: np.ndarray, joint_rand: np.ndarray, num_shares: int, weights: list[np.ndarray]
    ) -> list[np.ndarray]:
        """Per gadget, sum_k weights[g][k] * wire_inputs[g][:, k] (shape (ARITY,)).

        The verifier needs the wires only through these weighted sums (the
        wire polynomials at the test point); circuits may compute them
        without building the wire matrix.
        """
        wires = self.wire_inputs(meas, joint_rand, num_shares)
        return [self.field.mul_sum(w, lam) for w, lam in zip(wires, weights)]

    # ---- batches: row b of every array belongs to report b (Prio3.verify_init_batch) ----
    # `field` is the backend the batch is computed on (the same field, possibly
    # another representation than self.field).  Each must equal its 1-D twin
    # row by row (tests/mpc/prio3/test_prio3_batch.py checks the resulting bytes).
    def wire_evals_rows(
        self, field: type[_PrimeField], meas: np.ndarray, joint_rand: np.ndarray, num_shares: int,
        weights: list[np.ndarray],
    ) -> list[np.ndarray]:
        """`wire_evals` for B reports: meas (B, MEAS_LEN), weights[g] (B, calls_g) -> per gadget (B, ARITY).

        Default: report by report (see `_per_row`); the common circuits override it.
        """
        return self._per_row(
            field, lambda m, jr, w: self.wire_evals(m, jr, num_shares, w), meas, joint_rand, weights
        )

    def _per_row(self, field: type[_PrimeField], fn, meas, joint_rand, per_gadget):  # type: ignore[no-untyped-def]
        """Stack fn(meas[b], joint_rand[b], [x[b] for x in per_gadget]) over the rows, computed on the
        circuit's own backend and returned on `field` (a list of arrays stays a list)."""
        f = self.field
        out = []
        for b in range(meas.shape[0]):
            res = fn(f.from_backend(field, meas[b]), f.from_backend(field, joint_rand[b]),
                     [f.from_backend(field, x[b]) for x in per_gadget])
            out.append(res)
        conv = lambda rows: field.from_backend(f, np.stack(rows).reshape(-1)).reshape((len(rows),) + rows[0].shape)
        if isinstance(out[0], list):
            return [conv([row[g] for row in out]) for g in range(len(out[0]))]
        return conv(out)

    def wire_inputs_rows(
        self, field: type[_PrimeField], meas: np.ndarray, joint_rand: np.ndarray, num_shares: int
    ) -> list[np.ndarray]:
        """`wire_inputs` for B reports: per gadget (B, ARITY, calls).

        Default: report by report on the circuit's own backend; the common
        circuits override it with one vectorised pass.
        """
        f = self.field
        per_row = [
            self.wire_inputs(f.from_backend(field, meas[b]), f.from_backend(field, joint_rand[b]), num_shares)
            for b in range(meas.shape[0])
        ]
        return [
            field.from_backend(f, np.stack([row[g] for row in per_row]).reshape(-1)).reshape(
                (len(per_row),) + per_row[0][g].shape
            )
            for g in range(len(self.GADGETS))
        ]

    def combine_rows(
        self, field: type[_PrimeField], meas: np.ndarray, joint_rand: np.ndarray, num_shares: int,
        gadget_outputs: list[np.ndarray],
    ) -> np.ndarray:
        """`combine` for B reports: gadget_outputs[g] (B, calls_g) -> (B, EVAL_OUTPUT_LEN) (default: row by row)."""
        return self._per_row(
            field, lambda m, jr, outs: self.combine(m, jr, num_shares, outs), meas, joint_rand, gadget_outputs
        )

    def prove_gadget_rows(
        self, field: type[_PrimeField], index: int, meas: np.ndarray, joint_rand: np.ndarray, seeds: np.ndarray,
        p: int, n: int,
    ) -> np.ndarray | None:
        """Optional prover shortcut: gadget `index`'s values at all n-th roots (B, n) for the
        proving wires (num_shares = 1) with these wire seeds (B, ARITY), or None to use the wire
        matrix.  Lets a circuit prove without storing its wires (the range checks do on native fields)."""
        return None

    def truncate_block(self, field: type[_PrimeField], block: np.ndarray) -> np.ndarray:
        """The outputs of consecutive measurement elements (a whole number of STREAM_UNITs)."""
        raise NotImplementedError

    def truncate_rows(self, field: type[_PrimeField], meas: np.ndarray) -> np.ndarray:
        """`truncate` for B reports: (B, MEAS_LEN) -> (B, OUTPUT_LEN) (default: row by row)."""
        return self._per_row(field, lambda m, jr, _: self.truncate(m), meas, meas, [])

    def encode(self, measurement: Measurement) -> np.ndarray:
        raise NotImplementedError

    def encode_bits(self, measurement: Measurement) -> np.ndarray | None:
        """`encode` as uint8 0/1 digits, for circuits that can prove straight from them (their
        gadgets prove through `prove_gadget_rows`; see crypto.field_native.is_bits), or None.
        A long measurement then costs one byte per element at the client instead of 8 or 16."""
        return None

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, output: np.ndarray, num_measurements: int) -> AggResult:
        raise NotImplementedError

    def eval(self, meas: np.ndarray, joint_rand: np.ndarray, num_shares: int) -> np.ndarray:
        """Plain circuit evaluation (the gadgets run directly)."""
        wires = self.wire_inputs(meas, joint_rand, num_shares)
        outs = [g.eval_vec(self.field, w) for g, w in zip(self.GADGETS, wires)]
        return self.combine(meas, joint_rand, num_shares, outs)

    # Draft Section 7.3.2 helper lengths.
    def prove_rand_len(self) -> int:
        return sum(g.ARITY for g in self.GADGETS)

    def query_rand_len(self) -> int:
        n = len(self.GADGETS)
        return n + (self.EVAL_OUTPUT_LEN if self.EVAL_OUTPUT_LEN > 1 else 0)

    def proof_len(self) -> int:
        total = 0
        for g, calls in zip(self.GADGETS, self.GADGET_CALLS):
            p = next_power_of_2(1 + calls)
            total += g.ARITY + g.DEGREE * (p - 1) + 1
        return total

    def verifier_len(self) -> int:
        return 1 + sum(g.ARITY + 1 for g in self.GADGETS)

    def shares_inv(self, num_shares: int, field: type[_PrimeField] | None = None) -> np.ndarray:
        """1/num_shares as a shape-(1,) vector (on `field` if given, else self.field)."""
        f = field or self.field
        return f.const(f.s_inv(num_shares))


class FlpBBCGGI19(Generic[Measurement, AggResult]):
    """prove / query / decide of draft Section 7.3.3-7.3.5 over a `Valid` circuit."""

    def __init__(self, valid: Valid[Measurement, AggResult]) -> None:
        self.valid = valid
        self.field = valid.field
        self.PROVE_RAND_LEN = valid.prove_rand_len()
        self.QUERY_RAND_LEN = valid.query_rand_len()
        self.JOINT_RAND_LEN = valid.JOINT_RAND_LEN
        self.MEAS_LEN = valid.MEAS_LEN
        self.OUTPUT_LEN = valid.OUTPUT_LEN
        self.PROOF_LEN = valid.proof_len()
        self.VERIFIER_LEN = valid.verifier_len()

    def prove(self, meas: np.ndarray, prove_rand: np.ndarray, joint_rand: np.ndarray) -> np.ndarray:
        """Proof = for each gadget: wire seeds || gadget polynomial in the Lagrange basis.

        Draft-18 Section 7.3.3: the gadget polynomial (degree DEGREE*(P-1)) is
        sent as its values at the first DEGREE*(P-1)+1 powers of a primitive
        n-th root, n = next_power_of_2 of that length.  We get them by
        evaluating the gadget point-wise on the wire polynomials' values at
        all n-th roots (coset NTTs of the recorded wire values).  One report
        is the one-row case of `prove_rows`.
        """
        return self.prove_rows(self.field, meas.reshape(1, -1), prove_rand.reshape(1, -1), joint_rand.reshape(1, -1))[0]

    def prove_rows(
        self, field: type[_PrimeField], meas: np.ndarray, prove_rand: np.ndarray, joint_rand: np.ndarray
    ) -> np.ndarray:
        """The proofs of B reports at once on backend `field` (row b = report b) -> (B, PROOF_LEN).

        The arithmetic of `prove` with a leading batch axis: one coset
        extension of all reports' wire matrices and one gadget evaluation per
        gadget, so the per-call overhead is paid once per batch.
        """
        valid = self.valid
        b = meas.shape[0]
        wires: list[np.ndarray] | None = None  # built only for gadgets without a shortcut
        parts: list[np.ndarray] = []
        off = 0
        for gi, (g, calls) in enumerate(zip(valid.GADGETS, valid.GADGET_CALLS)):
            seeds = prove_rand[:, off : off + g.ARITY]
            off += g.ARITY
            p = next_power_of_2(1 + calls)
            poly_len = g.DEGREE * (p - 1) + 1
            n = next_power_of_2(poly_len)
            fused = valid.prove_gadget_rows(field, gi, meas, joint_rand, seeds, p, max(n, p))
            if fused is not None:
                parts.append(seeds)
                parts.append(fused[:, :poly_len])
                continue
            if wires is None:
                wires = valid.wire_inputs_rows(field, meas, joint_rand, 1)
            w_in = wires[gi]
            # Big transforms run on the long-vector backend (same field, same
            # values); short ones stay on the low-overhead one.
            big = field.LARGE if b * g.ARITY * p >= PROVER_LARGE_BACKEND_MIN else field
            wire_matrix = big.zeros_shape((b, g.ARITY, p))
            wire_matrix[:, :, 0] = big.from_backend(field, seeds)
            wire_matrix[:, :, 1 : 1 + calls] = big.from_backend(field, w_in)
            del w_in
            wires[gi] = None  # type: ignore[call-overload]  # its copy is in the wire matrix
            if isinstance(g, ParallelSum) and isinstance(g.subcircuit, Mul):  # sum of products of wire pairs
                gadget = parallel_mul_extend(big, wire_matrix, max(n, p), length=1 + calls)
            else:
                values = extend_values(big, wire_matrix, max(n, p), length=1 + calls)  # (B, ARITY, n')
                width = values.shape[-1]
                flat = np.ascontiguousarray(values.transpose(1, 0, 2)).reshape(g.ARITY, b * width)
                gadget = g.eval_vec(big, flat).reshape(b, width)
            del wire_matrix
            gadget_values = field.from_backend(big, gadget[:, :poly_len])
            parts.append(seeds)
            parts.append(gadget_values)
        return field.concat(parts, axis=1)

    def query(
        self,
        meas: np.ndarray,
        proof: np.ndarray,
        query_rand: np.ndarray,
        joint_rand: np.ndarray,
        num_shares: int,
    ) -> np.ndarray:
        """Verifier share: reduced circuit output, then per gadget the wire and gadget checks.

        Wire and gadget polynomials stay in the Lagrange basis and are
        evaluated at the test point t with the barycentric formula.  One
        report is the one-row case of `query_rows`; a test point among the
        interpolation points would leak a gadget output, so it raises.
        """
        verifier, hit = self.query_rows(
            self.field, meas.reshape(1, -1), proof.reshape(1, -1), query_rand.reshape(1, -1),
            joint_rand.reshape(1, -1), num_shares,
        )
        if hit[0]:
            raise VerifyError("query randomness hit a root of unity")
        return verifier[0]

    def query_rows(
        self,
        field: type[_PrimeField],
        meas: np.ndarray,
        proof: np.ndarray,
        query_rand: np.ndarray,
        joint_rand: np.ndarray,
        num_shares: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`query` for B reports at once (row b = report b), computed on backend `field`.

        Returns (verifiers (B, VERIFIER_LEN), hit (B,) bool): ``hit`` marks the
        reports whose query randomness is a root of unity, which `query`
        rejects with VerifyError (their rows are meaningless).  Every step is
        the same arithmetic as `query` with a leading batch axis: one
        extension product per gadget, one batched inverse NTT for all
        reports' Lagrange weights (each report has its own test point).
        """
        points = self.query_points(field, proof, query_rand)
        weights = [lam[:, 1:] for lam in points.wire_weights]
        wire_evals = self.valid.wire_evals_rows(field, meas, joint_rand, num_shares, weights)
        return self.query_finish(field, points, meas, joint_rand, num_shares, wire_evals)

    def query_points(self, field: type[_PrimeField], proof: np.ndarray, query_rand: np.ndarray) -> QueryPoints:
        """The part of `query_rows` that reads only the proofs and the query randomness: gadget
        polynomials and outputs, test points and their Lagrange weights.  The wires' weighted sums
        (`Valid.wire_evals_rows` with ``[lam[:, 1:] for lam in points.wire_weights]``) and
        `query_finish` complete it; a caller streaming the measurement computes the sums itself."""
        valid = self.valid
        b = proof.shape[0]
        seeds_list, polys, outputs = [], [], []
        off = 0
        for g, calls in zip(valid.GADGETS, valid.GADGET_CALLS):
            p = next_power_of_2(1 + calls)
            poly_len = g.DEGREE * (p - 1) + 1
            n = next_power_of_2(poly_len)
            seeds = proof[:, off : off + g.ARITY]
            gadget_poly = proof[:, off + g.ARITY : off + g.ARITY + poly_len]
            off += g.ARITY + poly_len
            full = extend_lagrange(field, gadget_poly, n)
            step = n // p
            seeds_list.append(seeds)
            polys.append(full)
            outputs.append(full[:, step : (calls + 1) * step : step])
        test_points = query_rand[:, valid.EVAL_OUTPUT_LEN :] if valid.EVAL_OUTPUT_LEN > 1 else query_rand
        hit = np.zeros(b, dtype=bool)
        one = field.const(1)
        wire_weights, gadget_weights = [], []
        for i, (calls, full) in enumerate(zip(valid.GADGET_CALLS, polys)):
            p = next_power_of_2(1 + calls)
            t = np.ascontiguousarray(test_points[:, i])
            if b <= FEW_ROWS:  # t^p == 1 on Python ints: cheaper than vector steps for a few reports
                q = field.MODULUS
                hit |= np.array([pow(x, p, q) == 1 for x in field.to_ints(t)])
            else:
                tp = t
                for _ in range(p.bit_length() - 1):
                    tp = field.mul(tp, tp)
                hit |= field.is_zero(field.sub(tp, one))
            lam_n = lagrange_weights_rows(field, t, full.shape[-1])
            wire_weights.append(subsample_lagrange_weights_rows(field, lam_n, t, p)[:, : calls + 1])
            gadget_weights.append(lam_n)
        return QueryPoints(seeds_list, polys, outputs, wire_weights, gadget_weights, query_rand, hit)

    def query_finish(
        self, field: type[_PrimeField], points: QueryPoints, meas: np.ndarray | None, joint_rand: np.ndarray,
        num_shares: int, wire_evals: list[np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """`query_rows`' result from its points and the wires' weighted sums (`meas` may be None
        for circuits whose combine does not read it, `Valid.COMBINE_READS_MEAS`)."""
        valid = self.valid
        b = points.query_rand.shape[0]
        out = valid.combine_rows(field, meas, joint_rand, num_shares, points.outputs)
        if valid.EVAL_OUTPUT_LEN > 1:
            v = field.mul_sum(points.query_rand[:, : valid.EVAL_OUTPUT_LEN], out, axis=-1).reshape(b, 1)
        else:
            v = out[:, :1]
        verifier = [v]
        for seeds, lam, w_at_t, full, lam_n in zip(
            points.seeds_list, points.wire_weights, wire_evals, points.polys, points.gadget_weights
        ):
            verifier.append(field.add(field.mul(seeds, lam[:, :1]), w_at_t))
            verifier.append(field.mul_sum(full, lam_n, axis=-1).reshape(b, 1))
        return field.concat(verifier, axis=1), points.hit

    def decide_rows(self, field: type[_PrimeField], verifier: np.ndarray) -> np.ndarray:
        """`decide` for B verifiers (B, VERIFIER_LEN) at once -> (B,) bool (gadgets run on all rows)."""
        ok = field.is_zero(verifier[:, 0])
        off = 1
        for g in self.valid.GADGETS:
            wire_checks = np.ascontiguousarray(verifier[:, off : off + g.ARITY].T)
            gadget_check = verifier[:, off + g.ARITY]
            off += g.ARITY + 1
            ok &= field.is_zero(field.sub(g.eval_vec(field, wire_checks), gadget_check))
        return ok

    def decide(self, verifier: np.ndarray) -> bool:
        """Accept iff the reduced output is 0 and every gadget test passes."""
        f = self.field
        if f.to_ints(verifier[:1]) != [0]:
            return False
        off = 1
        for g in self.valid.GADGETS:
            wire_checks = verifier[off : off + g.ARITY].reshape(g.ARITY, 1)
            gadget_check = f.to_ints(verifier[off + g.ARITY : off + g.ARITY + 1])
            off += g.ARITY + 1
            if f.to_ints(g.eval_vec(f, wire_checks)) != gadget_check:
                return False
        return True

    def encode(self, measurement: Measurement) -> np.ndarray:
        return self.valid.encode(measurement)

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return self.valid.truncate(meas)

    def decode(self, output: np.ndarray, num_measurements: int) -> AggResult:
        return self.valid.decode(output, num_measurements)


__all__ = ["FlpBBCGGI19", "Gadget", "Mul", "ParallelSum", "PolyEval", "QueryPoints", "Valid", "zeros2"]
