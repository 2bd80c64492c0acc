"""Free TCP ports for test servers, chosen where no other process can take them first.

Binding port 0 and releasing it returns a port from the kernel's *ephemeral* range — the range
outgoing connections also use, so another process's connection can take the port before the
test server binds it ("address already in use", seen on a loaded CI machine).  Ports below the
ephemeral range are never handed out for outgoing connections; picking a free one there at
random leaves only the (tiny) chance of two tests picking the same port at the same moment.
"""

from __future__ import annotations

import random
import socket

_RNG = random.SystemRandom()


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` nobody listens on now, outside the ephemeral range.

    Raises:
        RuntimeError: no free port found after many tries.
    """
    lo, hi = _ephemeral_range()
    low, high = (10000, lo - 1) if lo > 11000 else (hi + 1, 65535)
    for _ in range(200):
        port = _RNG.randint(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port outside the ephemeral range")
