"""Watches every TCP byte on a host's interfaces (an AF_PACKET socket, run inside that host's network namespace) and
says, per connection and direction, whether the bytes are TLS records from the first to the last, and whether any
of the given secrets appeared in clear. No tcpdump or tshark here, so the capture is this raw socket.

    python tls_sniffer.py OUT.json SECRET ...      # stops on SIGTERM and writes its summary to OUT.json
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33
TLS_CONTENT_TYPES = {20, 21, 22, 23}
MAX_RECORD = 16384 + 2048
HOLD_LIMIT = 4096  # out-of-order segments kept while waiting for a missing one; past it the capture dropped some


@dataclass
class Direction:
    """One direction of one TCP connection, reassembled by sequence number and parsed as TLS records."""

    next_seq: int | None = None
    held: dict[int, bytes] = field(default_factory=dict)
    header: bytes = b""
    body_left: int = 0
    records: int = 0
    first_type: int | None = None
    tls_bytes: int = 0
    not_tls: str | None = None
    gap: bool = False

    def segment(self, seq: int, payload: bytes, syn: bool) -> None:
        if syn:
            self.next_seq = (seq + 1) & 0xFFFFFFFF
            return
        if not payload or self.not_tls or self.gap:
            return
        if self.next_seq is None:
            self.next_seq = seq
        self.held[seq] = payload
        while True:
            ahead = self.next_seq
            ready = [s for s in self.held if _before_or_at(s, ahead)]
            if not ready:
                break
            for s in ready:
                data = self.held.pop(s)
                skip = (ahead - s) & 0xFFFFFFFF
                if skip < len(data):
                    self._feed(data[skip:])
                    self.next_seq = (s + len(data)) & 0xFFFFFFFF
                    ahead = self.next_seq
        if len(self.held) > HOLD_LIMIT:
            self.gap = True
            self.held.clear()

    def _feed(self, data: bytes) -> None:
        i = 0
        while i < len(data) and self.not_tls is None:
            if self.body_left:
                take = min(self.body_left, len(data) - i)
                self.body_left -= take
                self.tls_bytes += take
                i += take
                continue
            need = 5 - len(self.header)
            self.header += data[i : i + need]
            i += need
            if len(self.header) < 5:
                return
            kind, major, minor, length = struct.unpack("!BBBH", self.header)
            if kind not in TLS_CONTENT_TYPES or major != 3 or minor > 4 or length > MAX_RECORD:
                self.not_tls = self.header.hex() + data[i : i + 27].hex()
                return
            if self.first_type is None:
                self.first_type = kind
            self.records += 1
            self.tls_bytes += 5
            self.header = b""
            self.body_left = length


def _before_or_at(a: int, b: int) -> bool:
    return ((b - a) & 0xFFFFFFFF) < 0x80000000


def main() -> None:
    out, secrets = sys.argv[1], [s.encode() for s in sys.argv[2:]]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 256 * 1024 * 1024)
    directions: dict[str, Direction] = {}
    interfaces: dict[str, int] = {}
    found: list[str] = []
    tails: dict[str, bytes] = {}
    longest = max((len(s) for s in secrets), default=1)
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sock.settimeout(0.2)
    print("sniffing", flush=True)
    seen: set[tuple[str, int, int]] = set()
    while not stop:
        try:
            frame, addr = sock.recvfrom(262144)
        except TimeoutError:
            continue
        except InterruptedError:
            continue
        ifname = addr[0]
        if ifname == "lo" or len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:
            continue
        total = struct.unpack("!H", ip[2:4])[0] or len(ip)
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        tcp = ip[ihl:]
        sport, dport, seq = struct.unpack("!HHI", tcp[:8])
        flags = tcp[13]
        doff = (tcp[12] >> 4) * 4
        payload = bytes(ip[ihl + doff : total])
        key = f"{src}:{sport}>{dst}:{dport}"
        # A packet crossing the host is seen on the way in and out: count it once.
        mark = (key, seq, len(payload))
        if mark in seen and not flags & 0x02:
            continue
        seen.add(mark)
        interfaces[ifname] = interfaces.get(ifname, 0) + len(payload)
        if payload and secrets:
            window = tails.get(key, b"") + payload
            for s in secrets:
                if s in window:
                    found.append(f"{key} carries {s[:6].decode(errors='replace')}... in clear")
            tails[key] = window[-longest:]
        directions.setdefault(key, Direction()).segment(seq, payload, bool(flags & 0x02))
    summary = {
        "interfaces": interfaces,
        "secrets_in_clear": found,
        "directions": {
            k: {
                "records": d.records,
                "first_type": d.first_type,
                "tls_bytes": d.tls_bytes,
                "not_tls": d.not_tls,
                "gap": d.gap,
            }
            for k, d in directions.items()
        },
    }
    with open(out, "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
