"""Loopback ports for the tests that start real servers (tests/integration, tests/monitoring).

A server that restarts on its own port (a pod of the StatefulSet look-alike) gets a port below
the kernel's ephemeral range: inside that range, a client connection of a test running in
parallel could take the port as its source port while the server is down (seen as EADDRINUSE
at the restart).
"""
import random
import socket


def free_port():
    """A port free now, chosen by the kernel (in the ephemeral range): for one-off servers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def ephemeral_low():
    """The lowest port the kernel hands out to outgoing connections and to bind(0)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_base(count=10, rng=random):
    """A port ending in 0, below the ephemeral range, whose count ports are all free now (the
    servers' {ordinal} substitution makes the ordinal the last digit)."""
    top = max(ephemeral_low() // 10 - 1, 1100)
    for _ in range(200):
        base = rng.randrange(1000, top) * 10
        if all(port_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no free block of {count} loopback ports found below {top * 10}")
