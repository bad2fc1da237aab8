"""rtnl's pure part: requests as the kernel wants them, dumps in every shape it gives."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from announcer.cni import rtnl
from announcer.cni.rtnl import AF_INET, AF_INET6, Nexthop, Route

DATA = Path(__file__).parents[1] / "data" / "rtnl"
VETH_A, VETH_B = 3, 5  # ip link add makes the peer (2, 4) first


def _dump(name: str) -> list[tuple[bytes, int, int, int]]:
    found = []
    for line in (DATA / f"{name}.hex").read_text().split():
        data = bytes.fromhex(line)
        found += [(data, kind, start, end) for kind, _f, start, end in rtnl.parse_messages(data)]
    return found


def _routes(name: str) -> dict[str, Route]:
    found = [
        rtnl.parse_route(d, s, e) for d, kind, s, e in _dump(name) if kind == rtnl.RTM_NEWROUTE
    ]
    return {str(r.dst): r for r in found if r is not None and r.protocol == 180}


def test_route_shapes_v4() -> None:
    routes = _routes("routes_v4")
    assert routes["10.1.0.5"].oifs == (VETH_A,)
    assert routes["10.1.0.5"].nhid is None
    # One device nexthop: RTA_OIF, as a plain route (what today's announcer selects).
    one = routes["10.9.9.1"]
    assert (one.nhid, one.oif, one.multipath) == (2_000_000_000, VETH_A, ())
    # A group: RTA_MULTIPATH (nexthop_compat_mode), no RTA_OIF.
    two = routes["10.9.9.2"]
    assert (two.nhid, two.oif, two.multipath) == (2_000_000_004, None, (VETH_A, VETH_B))
    assert all(r.table == 254 and r.family == AF_INET for r in routes.values())


def test_route_shapes_v6() -> None:
    routes = _routes("routes_v6")
    # Unlike IPv4, a group of one is RTA_MULTIPATH with one nexthop, not RTA_OIF.
    one = routes["fd00:9::1"]
    assert (one.nhid, one.oif, one.multipath, one.priority) == (
        2_000_000_005,
        None,
        (VETH_A,),
        1024,
    )
    # A legacy multipath route (siblings with gateways): one message, RTA_MULTIPATH.
    legacy = routes["fd00:9::2"]
    assert (legacy.nhid, legacy.multipath, legacy.has_gateway) == (None, (VETH_A, VETH_B), True)
    assert all(r.family == AF_INET6 for r in routes.values())


def test_nexthops() -> None:
    found = [rtnl.parse_nexthop(d, s, e) for d, kind, s, e in _dump("nexthops")
             if kind == rtnl.RTM_NEWNEXTHOP]  # fmt: skip
    by_id = {nh.id: nh for nh in found if nh is not None}
    assert by_id[2_000_000_000] == Nexthop(2_000_000_000, AF_INET, 180, VETH_A)
    assert by_id[2_000_000_003] == Nexthop(2_000_000_003, AF_INET6, 180, VETH_B)
    assert by_id[2_000_000_004].group == (2_000_000_000, 2_000_000_001)
    assert by_id[2_000_000_004].oif is None
    assert by_id[2_000_000_005].group == (2_000_000_002,)


def test_requests_round_trip() -> None:
    ip = ipaddress.ip_address("fd00:9::1")
    msg = rtnl.message(rtnl.RTM_NEWROUTE, rtnl.NLM_F_CREATE, 7,
                       rtnl.route_body(ip, 1000, 181, nhid=42))  # fmt: skip
    [(kind, flags, start, end)] = list(rtnl.parse_messages(msg))
    assert (kind, flags) == (rtnl.RTM_NEWROUTE, rtnl.NLM_F_CREATE | rtnl.NLM_F_REQUEST)
    route = rtnl.parse_route(msg, start, end)
    assert route == Route(AF_INET6, ip, 128, 1000, 181, rtnl.RTN_UNICAST, nhid=42)
    msg = rtnl.message(rtnl.RTM_NEWNEXTHOP, 0, 8, rtnl.nexthop_body(5, 0, 180, group=(1, 2, 3)))
    [(_, _, start, end)] = list(rtnl.parse_messages(msg))
    assert rtnl.parse_nexthop(msg, start, end) == Nexthop(5, 0, 180, None, (1, 2, 3))


def test_error_carries_the_kernels_message() -> None:
    """An NLMSG_ERROR with extended ack TLVs after the full echoed request (not capped)."""
    request = rtnl.message(rtnl.RTM_NEWNEXTHOP, 0, 9, rtnl.nexthop_body(9, 10, 180, oif=1))
    text = b"Nexthop device is not up\0"
    tlv = rtnl._attr(rtnl.NLMSGERR_ATTR_MSG, text)
    body = (-100).to_bytes(4, "little", signed=True) + request + tlv
    header = rtnl._NLMSGHDR.pack(16 + len(body), rtnl.NLMSG_ERROR, rtnl.NLM_F_ACK_TLVS, 9, 0)
    error = rtnl._error(header + body, 16, rtnl.NLM_F_ACK_TLVS, 16 + len(body))
    assert error is not None
    assert error.errno == 100
    assert "Nexthop device is not up" in str(error)
