"""The aggregation-scheme contract every share-based mode implements.

It is the VDAF syntax of draft-irtf-cfrg-vdaf-18 (Section 5), with the
draft's names, so that Prio3 and our proof-less ring scheme plug into the same
services.  Everything that crosses a wire is `bytes` in the scheme's canonical
encoding; aggregate shares are numpy arrays inside the process.

Who runs what:

* client:       ``shard(ctx, measurement, nonce, rand) -> (public_share, input_shares)``
* aggregator j: ``verify_init(verify_key, ctx, j, agg_param, nonce, public_share, input_share)
                   -> (state, verifier_share)``
* leader:       ``verifier_shares_to_message(ctx, agg_param, verifier_shares) -> verifier_message``
* aggregator j: ``verify_next(ctx, state, verifier_message) -> out_share``
* aggregator j: ``agg_init / agg_update / merge`` over out shares, ``encode_agg_share``
* collector:    ``unshard(agg_param, agg_shares, num_measurements) -> result``

Aggregators call the batch twins ``verify_init_batch`` and
``verifier_shares_to_message_batch`` for a whole aggregation job: byte-identical
to the one-report calls, with one result (or `InvalidReport`) per report, so one
bad report never fails the job.  All one-round schemes (Prio3, TwinRing64)
finish after one ``verify_next``.
Every check on untrusted bytes raises a subclass of `mpc.errors.InvalidReport`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

NONCE_SIZE = 16


@runtime_checkable
class Vdaf(Protocol):
    """Structural type of a one-round, share-based aggregation scheme."""

    ID: int
    SHARES: int
    ROUNDS: int
    NONCE_SIZE: int
    RAND_SIZE: int
    VERIFY_KEY_SIZE: int

    def shard(self, ctx: bytes, measurement: Any, nonce: bytes, rand: bytes) -> tuple[bytes, list[bytes]]: ...

    def shard_batch(
        self, ctx: bytes, measurements: Sequence[Any], nonces: Sequence[bytes], rands: Sequence[bytes]
    ) -> list[tuple[bytes, list[bytes]]]: ...

    def verify_init(
        self,
        verify_key: bytes,
        ctx: bytes,
        agg_id: int,
        agg_param: bytes,
        nonce: bytes,
        public_share: bytes,
        input_share: bytes,
    ) -> tuple[Any, bytes]: ...

    def verifier_shares_to_message(self, ctx: bytes, agg_param: bytes, verifier_shares: list[bytes]) -> bytes: ...

    def verify_init_batch(
        self,
        verify_key: bytes,
        ctx: bytes,
        agg_id: int,
        agg_param: bytes,
        nonces: list[bytes],
        public_shares: list[bytes],
        input_shares: list[bytes],
    ) -> list[Any]: ...

    def verifier_shares_to_message_batch(self, ctx: bytes, agg_param: bytes, verifier_shares: list[list[bytes]]) -> list[Any]: ...

    def verify_next(self, ctx: bytes, state: Any, verifier_message: bytes) -> np.ndarray: ...

    def agg_init(self, agg_param: bytes) -> np.ndarray: ...

    def agg_update(self, agg_param: bytes, agg_share: np.ndarray, out_share: np.ndarray) -> np.ndarray: ...

    def merge(self, agg_param: bytes, agg_shares: list[np.ndarray]) -> np.ndarray: ...

    def encode_agg_share(self, agg_share: np.ndarray) -> bytes: ...

    def decode_agg_share(self, encoded: bytes) -> np.ndarray: ...

    def unshard(self, agg_param: bytes, agg_shares: list[bytes], num_measurements: int) -> Any: ...
