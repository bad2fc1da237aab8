"""Address families of the dual-stack lab, and the report shape of a per-family scenario.

Every anycast scenario runs for each family the topology serves (an IPv4 /32 and an IPv6
/128 on the same instances). Its figures are computed per family and combined by
:func:`combine`: the first family's (IPv4's) figures stay at the top level of
``scenarios.<name>``, where consumers of the single-stack report find them, and every other
family's figures go under its name (``scenarios.<name>.ipv6``) with the same keys. The
scenario passes only when every family passed. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any


@dataclass(frozen=True)
class Family:
    name: str  # the report key: "ipv4", "ipv6"
    version: int
    host_len: int  # a host route's prefix length
    frr_suffix: str  # the lab's FRR peer groups of this family: SERVERS, SERVERS6, ...

    @property
    def afi(self) -> str:
        """FRR's address family, as in ``show bgp ipv6 unicast ...``."""
        return f"{self.name} unicast"

    @property
    def ip_flag(self) -> str:
        """iproute2's family option."""
        return f"-{self.version}"

    @property
    def suffix(self) -> str:
        """Appended to the names of artifacts (client logs, timelines): IPv4 keeps the
        single-stack names, so existing paths still hold IPv4 figures."""
        return "" if self.version == 4 else f"-{self.name}"

    def host(self, ip: str) -> str:
        """ip as a host prefix: 10.200.0.1/32, fd00:200::1/128."""
        return f"{ip}/{self.host_len}"


IPV4 = Family("ipv4", 4, 32, "")
IPV6 = Family("ipv6", 6, 128, "6")
FAMILIES = (IPV4, IPV6)
BY_NAME = {f.name: f for f in FAMILIES}
# keys combine() adds next to the primary family's figures (not figures themselves)
COMBINED_KEYS = frozenset({"pass_by_family", *(f.name for f in FAMILIES[1:])})


def family_of(ip: str) -> Family:
    """The family of an address (or a host prefix); ValueError naming it if it is neither."""
    try:
        version = ip_address(ip.split("/", maxsplit=1)[0]).version
    except ValueError:
        raise ValueError(f"{ip!r} is not an IPv4 or IPv6 address") from None
    return IPV4 if version == 4 else IPV6


def joint_pass(verdicts: list[bool | None]) -> bool | None:
    """True only when every family passed; None (skipped) only when every family skipped;
    False otherwise - a family that failed, or did not run while another did."""
    if verdicts and all(v is True for v in verdicts):
        return True
    if verdicts and all(v is None for v in verdicts):
        return None
    return False


def combine(per_family: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One scenario's report entry from its per-family results (first family first)."""
    if not per_family:
        raise ValueError("combine: no family results")
    (_, first), *others = per_family.items()
    verdicts = {name: result.get("pass") for name, result in per_family.items()}
    entry = {**first, "pass": joint_pass(list(verdicts.values())), "pass_by_family": verdicts}
    entry.update(others)
    return entry


def family_results(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The inverse of combine: family name -> its figures (with its own ``pass``)."""
    verdicts = entry.get("pass_by_family") or {}
    primary = next(iter(verdicts), FAMILIES[0].name)
    first = {k: v for k, v in entry.items() if k not in COMBINED_KEYS}
    if primary in verdicts:
        first["pass"] = verdicts[primary]
    found = {primary: first}
    found.update({name: entry[name] for name in verdicts if name != primary and name in entry})
    return found


def schema_errors(entry: dict[str, Any], families: tuple[Family, ...] = FAMILIES) -> list[str]:
    """What a combined entry lacks: a verdict, a result per family, and (when no family
    failed with an error) the same figure keys in every family."""
    errors = [] if "pass" in entry else ["no 'pass'"]
    per = family_results(entry)
    for family in families:
        if family.name not in per:
            errors.append(f"no {family.name} result")
    if any("error" in r for r in per.values()) or len(per) < 2:
        return errors
    keys = {name: set(r) for name, r in per.items()}
    primary = next(iter(keys))
    for name, have in keys.items():
        if have != keys[primary]:
            missing = sorted(keys[primary] - have)
            extra = sorted(have - keys[primary])
            errors.append(f"{name} figures differ from {primary}: missing {missing}, extra {extra}")
    return errors
