"""Child processes that end with their parent, so a killed service leaves no orphans behind.

A SIGKILLed aggregator cannot stop its children itself; without this, its
share-opening pool and its worker processes would live on (holding key material
in memory, or the aggregator's port).  Linux only (``PR_SET_PDEATHSIG``);
elsewhere the parent's orderly shutdown remains the way children end.
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def end_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(0)
