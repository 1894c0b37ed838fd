"""HOST:PORT listen addresses: one parser for every config that binds a socket."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def split_listen(value: str) -> tuple[str, int]:
    """Split "host:port" ("[::1]:7000" for IPv6; port 0 = any free port); ValueError names the value."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 0.0.0.0:7000), got {value!r}")
    return host.strip("[]"), int(port)


def _checked(value: str) -> str:
    split_listen(value)
    return value


#: A config field holding "HOST:PORT", validated when the config is parsed.
ListenAddress = Annotated[str, AfterValidator(_checked)]
