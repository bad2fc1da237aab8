"""The libnetwork remote network driver protocol, for the routed wiring: pure parse/render.

No I/O here: docker_driver.py serves these over HTTP and makes the veths. The protocol
(moby/libnetwork docs/remote.md): dockerd POSTs JSON to /Plugin.Activate and
/NetworkDriver.<Method>; a refusal is {"Err": "message"}.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from announcer.cni import scheme
from announcer.cni.scheme import IPAddress, WiringConfig, WiringError

MIME = "application/vnd.docker.plugins.v1.2+json"
EXTRA_IPS_OPTION = "anycast.ips"
ALIAS_NET_PREFIX = "docker:"  # the host veth alias' "net" field: docker:<network id>
CONTAINER_IF_PREFIX = "eth"
GENERIC_OPTIONS = "com.docker.network.generic"  # where `docker network create -o` lands


class DriverError(Exception):
    """A request is refused; the message goes back to dockerd as {"Err": ...}."""


@dataclass(frozen=True)
class Endpoint:
    """One Docker endpoint of ours, as kept in the state file."""

    network_id: str
    endpoint_id: str
    ips: tuple[str, ...]
    extra_ips: tuple[str, ...] = ()
    sandbox: str = ""

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Endpoint:
        return cls(str(doc["network_id"]), str(doc["endpoint_id"]), tuple(doc["ips"]),
                   tuple(doc.get("extra_ips", ())), str(doc.get("sandbox", "")))  # fmt: skip


def host_veth(endpoint_id: str, config: WiringConfig) -> str:
    return scheme.host_ifname(endpoint_id, CONTAINER_IF_PREFIX, config.host_veth_prefix)


def peer_veth(endpoint_id: str) -> str:
    """The container end's name until libnetwork moves and renames it (15 characters)."""
    return "ctr" + endpoint_id[:12]


def parse_extra_ips(options: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    """The ``anycast.ips`` endpoint option: IPs separated by commas, semicolons or spaces.

    Any other option not under ``com.docker.`` is refused, naming it (a typo must not
    silently drop an anycast IP).
    """
    unknown = sorted(
        k for k in options if k != EXTRA_IPS_OPTION and not k.startswith("com.docker.")
    )
    if unknown:
        raise DriverError(f"unknown endpoint option(s) {', '.join(unknown)}: "
                          f"this driver reads only {EXTRA_IPS_OPTION}")  # fmt: skip
    value = options.get(EXTRA_IPS_OPTION, "")
    if not isinstance(value, str):
        raise DriverError(f"{EXTRA_IPS_OPTION}={value!r}: must be a string of IPs")
    words = value.replace(",", " ").replace(";", " ").split()
    try:
        return tuple(scheme.parse_ip(w) for w in words)
    except WiringError as e:
        raise DriverError(f"{EXTRA_IPS_OPTION}={value!r}: {e}") from None


def parse_interface(body: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    """The IPs Docker's IPAM chose (prefix lengths dropped: every IP is a host route)."""
    iface = body.get("Interface") or {}
    found = [iface.get("Address"), iface.get("AddressIPv6")]
    try:
        ips = tuple(scheme.parse_ip(a) for a in found if a)
    except WiringError as e:
        raise DriverError(str(e)) from None
    if not ips:
        raise DriverError("CreateEndpoint without an address: give the network an IPAM "
                          "pool (--subnet) so Docker assigns one")  # fmt: skip
    return ips


def render_join(endpoint: Endpoint, *, gateway: bool = True) -> dict[str, Any]:
    """The Join reply: the peer to move, a link route to the host end, default via it.

    gateway=False (the sandbox already has an endpoint of ours, hence those routes):
    no static routes, they would collide and fail the join (EEXIST).
    """
    versions = {scheme.parse_ip(ip).version for ip in endpoint.ips + endpoint.extra_ips}
    routes: list[dict[str, Any]] = []
    if not gateway:
        versions = set()
    if 4 in versions:
        gw4 = str(scheme.HOST_GATEWAY_V4)
        routes += [{"Destination": f"{gw4}/32", "RouteType": 1},
                   {"Destination": "0.0.0.0/0", "RouteType": 0, "NextHop": gw4}]  # fmt: skip
    if 6 in versions:
        routes.append({"Destination": "::/0", "RouteType": 0,
                       "NextHop": str(scheme.HOST_GATEWAY_V6)})  # fmt: skip
    return {
        "InterfaceName": {
            "SrcName": peer_veth(endpoint.endpoint_id),
            "DstPrefix": CONTAINER_IF_PREFIX,
        },
        "StaticRoutes": routes,
        "DisableGatewayService": True,
    }


def parse_network_options(body: Mapping[str, Any]) -> None:
    """CreateNetwork: refuse `-o key=value` network options (there are none to give)."""
    generic = (body.get("Options") or {}).get(GENERIC_OPTIONS) or {}
    if generic:
        raise DriverError(
            f"unknown network option(s) {', '.join(sorted(generic))}: this driver takes none "
            f"(extra IPs are an endpoint option: --driver-opt {EXTRA_IPS_OPTION}=...)"
        )
