"""Run inside a namespace: our netlink decoder and pyroute2's, side by side, as JSON."""

from __future__ import annotations

import json

from pyroute2 import IPRoute

from announcer.sources.kernel import dump_kernel


def ours() -> dict[str, list[list[object]]]:
    snap = dump_kernel()
    return {
        "routes": sorted(
            [
                str(r.prefix),
                r.table,
                r.protocol,
                r.type,
                r.oif,
                str(r.gateway) if r.gateway else None,
                r.priority,
                [[oif, gateway is not None] for oif, gateway in r.nexthops],
            ]
            for r in snap.routes
        ),
        "links": sorted([link.index, link.name, link.flags] for link in snap.links),
        "addresses": sorted([a.index, str(a.address), a.prefixlen] for a in snap.addresses),
    }


def theirs() -> dict[str, list[list[object]]]:
    with IPRoute() as ipr:
        routes = []
        for msg in ipr.get_routes(family=0):
            dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if msg["family"] == 2 else "::")
            routes.append(
                [
                    f"{dst}/{msg['dst_len']}",
                    msg.get_attr("RTA_TABLE") or msg["table"],
                    msg["proto"],
                    msg["type"],
                    msg.get_attr("RTA_OIF"),
                    msg.get_attr("RTA_GATEWAY"),
                    msg.get_attr("RTA_PRIORITY") or 0,
                    sorted(
                        [hop["oif"], hop.get_attr("RTA_GATEWAY") is not None]
                        for hop in msg.get_attr("RTA_MULTIPATH") or ()
                    ),
                ]
            )
        links = [[m["index"], m.get_attr("IFLA_IFNAME"), m["flags"]] for m in ipr.get_links()]
        addresses = [
            [m["index"], m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS"), m["prefixlen"]]
            for m in ipr.get_addr()
        ]
    return {"routes": sorted(routes), "links": sorted(links), "addresses": sorted(addresses)}


if __name__ == "__main__":
    print(json.dumps({"ours": ours(), "theirs": theirs()}))
