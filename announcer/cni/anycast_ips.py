"""The ``anycast.ips`` label grammar, as the announcer's (announcer/labels.py) reads it.

Reimplemented here, not imported: announcer.cni imports nothing of the daemon. The two
must agree (tests/cni/test_anycast_ips.py runs both over one table): a comma-separated
list of IPv4/IPv6 addresses, items stripped, no empty item, at most 64 items of at most
64 characters from [0-9A-Za-z_.:-], at most 4096 characters in all, no IPv4-mapped IPv6
address, a repeated address kept once. Pure: no I/O.
"""

from __future__ import annotations

import re
from ipaddress import IPv6Address, ip_address

from announcer.cni.scheme import IPAddress

LABEL = "anycast.ips"
MAX_VALUE_LENGTH = 4096
MAX_IPS = 64
_ITEM = re.compile(r"[0-9A-Za-z_.:\-]{1,64}")  # ASCII only: no look-alike digit parses


class AnycastIPsError(ValueError):
    """A value of anycast.ips that cannot be used; the message names label and value."""


def quote(value: str, limit: int = 60) -> str:
    """A value safe to put in an error: escaped (no control or non-ASCII character
    survives) and shortened."""
    return ascii(value if len(value) <= limit else value[:limit] + "...")


def _fail(value: str, why: str) -> AnycastIPsError:
    return AnycastIPsError(f"label {LABEL}={quote(value)}: {why}")


def parse_anycast_ips(value: str) -> tuple[IPAddress, ...]:
    """The addresses of an anycast.ips value, in order, each once."""
    if len(value) > MAX_VALUE_LENGTH:
        raise _fail(value, f"{len(value)} characters, at most {MAX_VALUE_LENGTH}")
    items = [item.strip() for item in value.split(",")]
    if not value.strip() or any(not item for item in items):
        raise _fail(value, "expected a comma-separated list with no empty items")
    if len(items) > MAX_IPS:
        raise _fail(value, f"{len(items)} items, at most {MAX_IPS} allowed")
    found: list[IPAddress] = []
    for item in items:
        if not _ITEM.fullmatch(item):
            raise _fail(value, f"item {quote(item)} has characters outside [0-9A-Za-z_.:-]")
        try:
            address = ip_address(item)
        except ValueError:
            raise _fail(value, f"{quote(item)} is not an IPv4 or IPv6 address") from None
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            raise _fail(value, f"{item} is an IPv4-mapped IPv6 address; write the IPv4 one")
        found.append(address)
    return tuple(dict.fromkeys(found))
