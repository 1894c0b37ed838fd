"""MQTT ingestion with aiomqtt (>= 2): subscribe, hand payloads over, reconnect.

Only transport lives here: the source connects (TLS and username/password when
configured), subscribes to the streams' topic filters, and passes each
message's (topic, payload bytes) to a callback.  It reconnects with
exponential backoff and jitter after a broker outage; it never parses payloads
and never logs them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from secrets import SystemRandom

import aiomqtt
from pydantic import SecretStr

from .config import MqttConfig

__all__ = ["MqttSource"]

log = logging.getLogger("twinmpc.edge.mqtt")
# paho's protocol trace (DEBUG) names topics; keep this logger at INFO in production.
_client_log = logging.getLogger("twinmpc.edge.mqtt.client")


def _tls_context(cfg: MqttConfig, base: Path) -> ssl.SSLContext | None:
    if cfg.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(_under(base, cfg.tls.ca_file)))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.tls.cert_file is not None and cfg.tls.key_file is not None:
        ctx.load_cert_chain(str(_under(base, cfg.tls.cert_file)), str(_under(base, cfg.tls.key_file)))
    return ctx


def _under(base: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else base / path


class MqttSource:
    """Subscribes to ``topics`` and calls ``on_message(topic, payload)`` for each message."""

    def __init__(
        self,
        cfg: MqttConfig,
        topics: list[str],
        on_message: Callable[[str, bytes], None],
        *,
        password: SecretStr | None = None,
        base_dir: str | Path = ".",
        jitter: Callable[[], float] = SystemRandom().random,
    ) -> None:
        self.cfg = cfg
        self.topics = sorted(set(topics))
        self.on_message = on_message
        self._password = password
        self._base = Path(base_dir)
        self._jitter = jitter
        self.connected = asyncio.Event()
        self.connects = 0
        self.disconnects = 0

    def __repr__(self) -> str:
        return f"MqttSource(host={self.cfg.host!r}, port={self.cfg.port}, topics={self.topics}, password=<redacted>)"

    def _client(self) -> aiomqtt.Client:
        cfg = self.cfg
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=self._password.get_secret_value() if self._password is not None else None,
            identifier=cfg.client_id,
            # A fixed client id gets a persistent session: the broker keeps QoS>=1
            # messages published while the agent is down and delivers them on reconnect.
            clean_session=cfg.client_id is None,
            keepalive=cfg.keepalive,
            tls_context=_tls_context(cfg, self._base),
            logger=_client_log,
        )

    async def run(self) -> None:
        """Receive until cancelled; broker outages are retried, never raised."""
        delay = self.cfg.reconnect_initial_seconds
        while True:
            try:
                async with self._client() as client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=self.cfg.qos)
                    self.connects += 1
                    self.connected.set()
                    delay = self.cfg.reconnect_initial_seconds
                    log.info("subscribed to %d topic filters on %s:%d", len(self.topics), self.cfg.host, self.cfg.port)
                    async for message in client.messages:
                        payload = message.payload
                        if isinstance(payload, (bytes, bytearray)):
                            self.on_message(message.topic.value, bytes(payload))
                        else:  # paho hands over bytes; anything else is not a sensor message
                            self.on_message(message.topic.value, b"")
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self.disconnects += 1
                wait = delay / 2 + delay / 2 * self._jitter()
                log.warning("MQTT connection lost or refused (%s); reconnecting in %.2fs", exc, wait)
                await asyncio.sleep(wait)
                delay = min(self.cfg.reconnect_max_seconds, delay * 2)
