"""Helpers for the tests that start servers: free loopback ports, listening addresses, stopping.

Read from /proc and the kernel's own answers, independent of the servers under test.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listen_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on `port` in this network namespace, e.g. {'127.0.0.1'}.

    IPv6 addresses are shown as text, IPv4-mapped ones as their IPv4 form.
    """
    out = set()
    for name, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            addr, p = parts[1].split(":")
            if int(p, 16) != port or parts[3] != "0A":  # 0A = LISTEN
                continue
            if v6:
                # Four 32-bit words, each in host (little-endian) order.
                ip6 = ipaddress.IPv6Address(b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, 32, 8)))
                out.add(str(ip6.ipv4_mapped or ip6))
            else:
                out.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return out


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_group(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """Stop a process started with ``start_new_session=True`` and whatever is left of its group
    (a JVM's executors, a server's workers): TERM, then KILL, each bounded by `timeout`.
    Signalled even after the leader exited, since a child may linger."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout)
