"""The CNI side's anycast.ips grammar agrees with the announcer's, input for input.

The only test that imports both (announcer.cni may import nothing of the daemon).
"""

from __future__ import annotations

import pytest

from announcer.cni.anycast_ips import AnycastIPsError, parse_anycast_ips
from announcer.spec.labels import LabelError, parse_labels

INPUTS = [
    "10.0.0.1",
    " 10.0.0.1 , fd00::1 ",
    "10.0.0.1,10.0.0.1,fd00::1",
    "0.0.0.0,::",
    ",".join(f"10.0.0.{i}" for i in range(64)),
    ",".join(f"10.0.0.{i}" for i in range(65)),
    ",".join(f"10.0.{i // 256}.{i % 256}" for i in range(1000)),
    "",
    " ",
    "10.0.0.1,",
    ",10.0.0.1",
    "10.0.0.1,,10.0.0.2",
    "10.0.0.1;10.0.0.2",
    "10.0.0.1 10.0.0.2",
    "10.0.0.0/8",
    "::ffff:10.0.0.1",
    "\uff110.0.0.1",
    "10.0.0.1\nshutdown",
    "10.0.0.1; announce route 0.0.0.0/0 next-hop self",
    "fe80::1%eth0",
    "01.2.3.4",
    "1.2.3",
    "bogus",
    "a" * 65,
    "1" * 4097,
]


def _daemon(value: str) -> tuple[object, ...] | str:
    try:
        spec = parse_labels({"anycast.ips": value})
    except LabelError as e:
        return str(e)
    assert spec is not None
    return spec.ips


def _cni(value: str) -> tuple[object, ...] | str:
    try:
        return parse_anycast_ips(value)
    except AnycastIPsError as e:
        return str(e)


@pytest.mark.parametrize("value", INPUTS, ids=lambda v: ascii(v[:30]))
def test_both_grammars_agree(value: str) -> None:
    """Same addresses in the same order, or the same refusal, word for word."""
    assert _cni(value) == _daemon(value)


def test_the_table_has_both_outcomes() -> None:
    outcomes = [isinstance(_cni(v), tuple) for v in INPUTS]
    assert 4 <= outcomes.count(True) < len(INPUTS)
