"""Flower's own SecAgg+ (flwr) on one benchmark cell, driven in-process: run in flwr's virtualenv only.

`bench/bench_masks.py` runs this file with the python of a separate
virtualenv holding `flwr` (it pins an older protobuf than twinmpc), so it
imports nothing from twinmpc.  Everything protocol-related is Flower's code:
the server is `flwr.server.workflow.SecAggPlusWorkflow`, every client is
`flwr.client.mod.secaggplus_mod` with its own Context.  Only the transport is
replaced by an in-process Grid (no network, as for ours), which also counts the
serialized size of every message (Flower's own protobuf serde) and times each
client call.  Server time = workflow wall time - client calls - the byte counting.

Inputs are integers v in [0, 2^15] given to Flower as floats x = v - 2^14 with
clipping range 2^14 and quantization range 2^15, where Flower's stochastic
quantization is the identity, so the aggregate is exact up to float rounding:
Flower returns the mean of the x; sum = mean * |survivors|.

Usage: python flower_secaggplus.py '{"n": 100, "d": 10, "drop": 0.1, "k": 40, "t": 21, "seed": 1}'
prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitIns, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays, serde
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp.grid import Grid
from flwr.supercore.task_identity import TaskIdentity

CLIP = float(2**14)
QRANGE = 2**15
STAGES = {"setup": 0, "share_keys": 1, "collect_masked_vectors": 2, "unmask": 3}


class Proxy(ClientProxy):
    def __init__(self, node_id: int) -> None:
        super().__init__(str(node_id))
        self.node_id = node_id

    def get_properties(self, *a, **k): raise NotImplementedError
    def get_parameters(self, *a, **k): raise NotImplementedError
    def fit(self, *a, **k): raise NotImplementedError
    def evaluate(self, *a, **k): raise NotImplementedError
    def reconnect(self, *a, **k): raise NotImplementedError


class Strategy:
    """Just enough of a Strategy: every node is sampled; the aggregate is kept for checking."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes
        self.aggregate = None

    def configure_fit(self, server_round, parameters, client_manager):
        return [(Proxy(n), FitIns(parameters, {})) for n in self.nodes]

    def aggregate_fit(self, server_round, results, failures):
        self.aggregate = parameters_to_ndarrays(results[0][1].parameters)
        return results[0][1].parameters, {}


class InProcessGrid(Grid):
    def __init__(self, values: dict[int, np.ndarray], drop_before: dict[int, int]) -> None:
        self.values = values
        self.drop_before = drop_before
        self.contexts = {n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={}) for n in values}
        self.client_seconds = 0.0
        self.count_seconds = 0.0
        self.bytes = 0

    def set_run(self, run): pass

    @property
    def run(self): return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self): return list(self.values)
    def push_messages(self, messages): raise NotImplementedError
    def pull_messages(self, message_ids): raise NotImplementedError

    def _wire(self, msg: Message) -> Message:
        """What the other side receives: a deserialized copy (as over the network); its size is counted."""
        t0 = time.perf_counter()
        data = serde.message_to_proto(msg).SerializeToString()
        self.bytes += len(data)
        proto = type(serde.message_to_proto(msg))()
        proto.ParseFromString(data)
        copy = serde.message_from_proto(proto)
        self.count_seconds += time.perf_counter() - t0
        return copy

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            stage = STAGES[msg.content.config_records["secaggplus_configs"]["stage"]]
            if stage >= self.drop_before.get(node, 99):
                continue  # this node is gone: no reply
            msg = self._wire(msg)

            def fit(m: Message, ctx: Context, node=node) -> Message:
                params = ndarrays_to_parameters([self.values[node] - CLIP])
                fitres = FitRes(Status(Code.OK, ""), params, 1000, {})
                return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=m)

            t0 = time.perf_counter()
            reply = secaggplus_mod(msg, self.contexts[node], fit)
            self.client_seconds += time.perf_counter() - t0
            replies.append(self._wire(reply))
        return replies


def main() -> None:
    cell = json.loads(sys.argv[1])
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0  # what flwr's server app sets
    n, d, drop, k, t = cell["n"], cell["d"], cell["drop"], cell["k"], cell["t"]
    rng = np.random.default_rng(cell.get("seed", 1))
    nodes = list(range(1, n + 1))
    values = {nid: rng.integers(0, QRANGE + 1, size=d).astype(np.float64) for nid in nodes}
    dropped = set(rng.choice(nodes, size=int(drop * n), replace=False).tolist())
    grid = InProcessGrid(values, {nid: STAGES["collect_masked_vectors"] for nid in dropped})
    strategy = Strategy(nodes)
    base = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    context = LegacyContext(base, strategy=strategy)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: 1})
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        Parameters(tensors=[], tensor_type="numpy.ndarray"), True)
    workflow = SecAggPlusWorkflow(num_shares=k + 1 if k + 1 < n else 1.0, reconstruction_threshold=t,
                                  max_weight=1000.0, clipping_range=CLIP, quantization_range=QRANGE, modulus_range=2**32)
    t0 = time.perf_counter()
    workflow(grid, context)
    wall = time.perf_counter() - t0
    survivors = [nid for nid in nodes if nid not in dropped]
    expected = np.sum([values[nid] - CLIP for nid in survivors], axis=0)
    got = None if strategy.aggregate is None else strategy.aggregate[0] * len(survivors)
    exact = got is not None and bool(np.array_equal(np.rint(got), expected))
    print(json.dumps({
        "client_ms": 1000 * grid.client_seconds / n,
        "server_ms": 1000 * (wall - grid.client_seconds - grid.count_seconds) / n,
        "bytes_per_client": grid.bytes / n,
        "rounds": 4,
        "exact": exact,
        "max_abs_error": None if got is None else float(np.max(np.abs(got - expected))),
    }))


if __name__ == "__main__":
    main()
