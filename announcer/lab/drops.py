"""Where a packet died: the kernel's drop counters of every lab node, before and after.

Each node's namespace has its own /proc/net SNMP counters (no route, discards, address
errors, ICMP unreachables sent, UDP errors). ``snapshot`` reads them with one command per
node; ``growth`` keeps the counters that grew. A lost packet with no counter grown anywhere
died where none looks: a packet dropped while ARP/ND resolves (the neighbour tables' stats,
/proc/net/stat/*_cache, exist only machine-wide, in the root namespace), a responder's socket
(it logs its own receive-buffer errors when it stops), or a queue in between. Parsing is
pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from announcer.lab.namespaces import LabError
from announcer.lab.scenarios import Lab

SEPARATOR = "=== aalab drops ==="
FILES = ("/proc/net/snmp6", "/proc/net/snmp", "/proc/net/netstat")
WATCHED = frozenset({
    "Ip6InNoRoutes", "Ip6OutNoRoutes", "Ip6InDiscards", "Ip6OutDiscards", "Ip6InAddrErrors",
    "Ip6InHdrErrors", "Ip6InTooBigErrors", "Icmp6OutDestUnreachs", "Udp6InErrors",
    "Udp6RcvbufErrors", "Udp6NoPorts",
    "Ip.InAddrErrors", "Ip.InDiscards", "Ip.OutDiscards", "Ip.OutNoRoutes", "Ip.InHdrErrors",
    "Icmp.OutDestUnreachs", "Udp.InErrors", "Udp.RcvbufErrors", "Udp.NoPorts",
    "IpExt.InNoRoutes",
})  # fmt: skip


def parse_snmp6(text: str) -> dict[str, int]:
    """``Name value`` lines (/proc/net/snmp6)."""
    found = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].isdigit():
            found[words[0]] = int(words[1])
    return found


def parse_tables(text: str) -> dict[str, int]:
    """Header/value line pairs (/proc/net/snmp, /proc/net/netstat) as ``Table.Name``."""
    found = {}
    lines = text.splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        names, numbers = head.split(), values.split()
        if not names or names[0] != numbers[0]:
            continue
        table = names[0].rstrip(":")
        for name, number in zip(names[1:], numbers[1:], strict=False):
            if number.lstrip("-").isdigit():
                found[f"{table}.{name}"] = int(number)
    return found


def parse_counters(output: str) -> dict[str, int]:
    """Every watched counter from the output of ``read_command``."""
    parts = output.split(SEPARATOR + "\n")
    if len(parts) != len(FILES):
        raise LabError(f"drop counters: expected {len(FILES)} files, got {len(parts)}")
    found = parse_snmp6(parts[0]) | parse_tables(parts[1]) | parse_tables(parts[2])
    return {k: v for k, v in found.items() if k in WATCHED}


def read_command() -> list[str]:
    script = f"; echo '{SEPARATOR}'; ".join(f"cat {path}" for path in FILES)
    return ["sh", "-c", script]


def snapshot(lab: Lab, nodes: Iterable[str]) -> dict[str, dict[str, int]]:
    return {node: parse_counters(lab.exec(node, read_command()).stdout) for node in nodes}


def growth(before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]]
           ) -> dict[str, dict[str, int]]:  # fmt: skip
    """node -> counter -> how much it grew (only those that did)."""
    grown = {}
    for node, counters in after.items():
        mine = {k: v - before.get(node, {}).get(k, 0) for k, v in counters.items()}
        mine = {k: v for k, v in sorted(mine.items()) if v > 0}
        if mine:
            grown[node] = mine
    return grown


def of_family(grown: Mapping[str, Mapping[str, int]], version: int) -> dict[str, dict[str, int]]:
    """The counters of one IP version (IPv6: Ip6*, Icmp6*, Udp6*)."""
    v6 = ("Ip6", "Icmp6", "Udp6")
    kept = {node: {k: v for k, v in counters.items() if k.startswith(v6) == (version == 6)}
            for node, counters in grown.items()}  # fmt: skip
    return {node: counters for node, counters in kept.items() if counters}
