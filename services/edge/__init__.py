"""The edge agent (issue 4): MQTT ingestion, data minimisation, durable store-and-forward.

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
