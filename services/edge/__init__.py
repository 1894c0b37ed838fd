"""The edge agent: MQTT ingestion, data minimisation, durable store-and-forward.

Raw readings stay on the node: only one sealed report per task and window
leaves it, and that report survives an aggregator outage or a crash of the
node until a leader has acknowledged it.

Public entry points: :func:`load_edge_config`, :func:`run_edge_agent`,
:class:`EdgeAgent`.  See docs/edge.md.
"""

from .agent import EdgeAgent, EdgeMetrics, run_edge_agent
from .config import EdgeConfig, EdgeConfigError, load_edge_config, parse_edge_config
from .outbox import Outbox, OutboxFull, Uploader

__all__ = [
    "EdgeAgent",
    "EdgeConfig",
    "EdgeConfigError",
    "EdgeMetrics",
    "Outbox",
    "OutboxFull",
    "Uploader",
    "load_edge_config",
    "parse_edge_config",
    "run_edge_agent",
]
