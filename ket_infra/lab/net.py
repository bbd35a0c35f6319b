"""Packets for the lab: sockets made inside network namespaces, listeners, and probes.

The lab's process enters a namespace only to create a socket there (setns and
back); a socket keeps the namespace it was made in, so one process listens in
every target node and sends from every source at once, with no helper process.
Linux only, as root. Standard library only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import selectors
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
QUERY, REPLY = b"KIQ", b"KIR"
_libc = ctypes.CDLL(None, use_errno=True)


@contextmanager
def netns(name: str) -> Iterator[None]:
    """Run the block in network namespace NAME (/run/netns/NAME), then come back."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            _libc.setns(own, CLONE_NEWNET)
    finally:
        os.close(own)
        os.close(target)


def flush_conntrack(name: str) -> None:
    """Forget every connection namespace NAME tracks (ctnetlink IPCTNL_MSG_CT_DELETE, no tuple: all).

    A rule set just loaded must judge every packet anew: an entry left from before would let
    "established" traffic through (IP-in-IP and ESP entries have no ports and live 10 minutes).
    """
    with netns(name):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    with s:
        msg_type = (1 << 8) | 2  # NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE
        body = struct.pack("BBH", socket.AF_INET, 0, 0)
        s.send(struct.pack("IHHII", 16 + len(body), msg_type, 0x1 | 0x4, 1, 0) + body)  # REQUEST | ACK
        s.settimeout(2)
        s.recv(4096)


@dataclass(frozen=True)
class Probe:
    """One packet exchange: from namespace SRC to ADDRESS (in namespace DST)."""

    src: str  # namespace
    dst: str  # namespace
    address: str
    protocol: str  # tcp | udp | icmp | an IANA number
    port: int | None  # tcp/udp port, icmp type


# outcomes
OPEN = "open"  # connected, echoed, answered
REFUSED = "refused"  # got there: a reset or an ICMP unreachable came back
DROPPED = "dropped"  # nothing came back


def icmp_packet(kind: int, ident: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", kind, 0, 0, ident, 1)
    total = 0
    data = header + payload
    for i in range(0, len(data) - 1, 2):
        total += (data[i] << 8) + data[i + 1]
    if len(data) % 2:
        total += data[-1] << 8
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return struct.pack("!BBHHH", kind, 0, ~total & 0xFFFF, ident, 1) + payload


def inner_ipv4(token: bytes) -> bytes:
    """An inner IPv4 packet (pod to pod ICMP echo) as IP-in-IP carries: the payload of protocol 4 probes."""
    body = icmp_packet(8, 0x4B49, QUERY + token)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, 1, 0, bytes([172, 16, 0, 2]), bytes([172, 16, 1, 2])
    )
    return header + body


class Exchange:
    """Listeners in target namespaces, probes from source namespaces, answered in one select loop."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.raw: dict[tuple[str, int], socket.socket] = {}  # (namespace, protocol) -> its raw socket
        self.owned: list[socket.socket] = []
        self.skipped: list[tuple[str, str, int]] = []  # (namespace, protocol, port) a daemon already serves

    def close(self) -> None:
        for s in self.owned:
            with suppress(KeyError, ValueError):
                self.sel.unregister(s)
            s.close()
        self.sel.close()

    def _make(self, ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
        with netns(ns):
            s = socket.socket(family, kind, proto)
        s.setblocking(False)
        self.owned.append(s)
        return s

    def listen(self, ns: str, address: str, protocol: str, port: int | None) -> None:
        """A listener of PROTOCOL on ADDRESS:PORT in NS (icmp: the kernel answers echo itself)."""
        if protocol == "icmp":
            return
        if protocol not in ("tcp", "udp"):
            self._raw(ns, int(protocol))
            return
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        s = self._make(ns, socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port or 0))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            self.skipped.append((ns, protocol, port or 0))
            return
        if protocol == "tcp":
            s.listen(4096)
            self.sel.register(s, selectors.EVENT_READ, ("accept", None))
        else:
            self.sel.register(s, selectors.EVENT_READ, ("udp-echo", None))

    def _raw(self, ns: str, proto: int) -> socket.socket:
        s = self.raw.get((ns, proto))
        if s is None:
            s = self._make(ns, socket.AF_INET, socket.SOCK_RAW, proto)
            self.raw[(ns, proto)] = s
            self.sel.register(s, selectors.EVENT_READ, ("raw", proto))
        return s

    def run(self, probes: list[Probe], timeout: float) -> dict[Probe, str]:
        """Send every probe at once; each one's outcome when it is answered or TIMEOUT has passed."""
        out: dict[Probe, str] = {}
        waiting: dict[bytes, Probe] = {}  # token -> probe, for echoes over raw and icmp
        for p in probes:
            token = secrets.token_hex(6).encode()
            if p.protocol == "tcp":
                s = self._make(p.src, socket.AF_INET, socket.SOCK_STREAM)
                err = s.connect_ex((p.address, p.port or 0))
                if err not in (0, errno.EINPROGRESS):
                    out[p] = REFUSED if err == errno.ECONNREFUSED else DROPPED  # EPERM: our own output chain
                    continue
                self.sel.register(s, selectors.EVENT_WRITE, ("connect", p))
            elif p.protocol == "udp":
                s = self._make(p.src, socket.AF_INET, socket.SOCK_DGRAM)
                s.connect((p.address, p.port or 0))
                self.sel.register(s, selectors.EVENT_READ, ("udp-reply", p))
                try:
                    s.send(QUERY + token)
                except OSError as exc:
                    out[p] = DROPPED if exc.errno == errno.EPERM else REFUSED  # EPERM: our own output chain
                    self.sel.unregister(s)
            else:
                proto = 1 if p.protocol == "icmp" else int(p.protocol)
                s = self._raw(p.src, proto)
                if proto == 1:
                    data = icmp_packet(p.port if p.port is not None else 8, int(token[:4], 16), QUERY + token)
                elif proto == 4:
                    data = inner_ipv4(token)
                else:
                    data = QUERY + token
                try:
                    s.sendto(data, (p.address, 0))
                except OSError as exc:
                    if exc.errno != errno.EPERM:
                        raise
                    out[p] = DROPPED
                    continue
                waiting[token] = p
        deadline = time.monotonic() + timeout
        while len(out) < len(probes):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in self.sel.select(left):
                s = key.fileobj  # type: ignore[assignment]
                what, arg = key.data
                if what == "accept":
                    with suppress(BlockingIOError):
                        s.accept()[0].close()
                elif what == "udp-echo":
                    try:
                        data, peer = s.recvfrom(2048)
                    except OSError:
                        continue
                    if data.startswith(QUERY):
                        s.sendto(REPLY + data[3:], peer)
                elif what == "connect":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    self.sel.unregister(s)
                    out[arg] = OPEN if err == 0 else (REFUSED if err == errno.ECONNREFUSED else DROPPED)
                elif what == "udp-reply":
                    try:
                        data = s.recv(2048)
                        outcome = OPEN if data.startswith(REPLY) else REFUSED
                    except ConnectionRefusedError:
                        outcome = REFUSED
                    except OSError:
                        continue
                    self.sel.unregister(s)
                    out[arg] = outcome
                elif what == "raw":
                    self._raw_packet(s, arg, waiting, out)
        for p in probes:
            out.setdefault(p, DROPPED)
        return out

    def _raw_packet(self, s: socket.socket, proto: int, waiting: dict[bytes, Probe], out: dict[Probe, str]) -> None:
        try:
            packet, (peer, _) = s.recvfrom(4096)
        except OSError:
            return
        data = packet[(packet[0] & 0x0F) * 4 :]  # a raw IPv4 socket reads the IP header too
        if proto == 1:
            kind = data[0] if data else -1
            at = data.find(QUERY)
            if kind == 0 and at >= 0:  # an echo reply to one of ours
                p = waiting.pop(data[at + 3 : at + 15], None)
                if p is not None and p.address == peer:
                    out[p] = OPEN
            return
        at_q, at_r = data.find(QUERY), data.find(REPLY)
        if at_r >= 0:
            p = waiting.pop(data[at_r + 3 : at_r + 15], None)
            if p is not None and p.address == peer:
                out[p] = OPEN
        elif at_q >= 0:  # a query to this namespace: echo it (as the target node)
            s.sendto(data[:at_q] + REPLY + data[at_q + 3 :], (peer, 0))
