"""Lifecycle in decide(): instances gate kernel routes; refcounts; drain; stale sources."""

from __future__ import annotations

from ipaddress import ip_address

from announcer.core.decide import decide, desired, next_change
from announcer.core.policy import Policy
from announcer.core.world import World
from announcer.events import (
    IFF_LOWER_UP,
    IFF_UP,
    Instance,
    InstanceChanged,
    InstanceRemoved,
    InstanceState,
    KernelLink,
    KernelRoute,
    KernelSnapshot,
    SourceListed,
    SourceLost,
)
from announcer.model import Attributes, Community, Prefix
from announcer.spec.labels import ServiceSpec

S = InstanceState
ANYCAST = Prefix("10.200.0.1/32")
POLICY = Policy(interfaces=("vethr*",), allow=(Prefix("10.0.0.0/8"),), local_as=65001)


def kernel(*prefixes: str) -> World:
    w = World()
    links = tuple(KernelLink(i, f"vethr{i}", IFF_UP | IFF_LOWER_UP) for i in range(1, 4))
    routes = tuple(KernelRoute(Prefix(p), 254, 180, oif=1 + n % 3) for n, p in enumerate(prefixes))
    w.apply(KernelSnapshot(routes, links, ()))
    return w


def inst(
    id_: str,
    state: S,
    *ips: str,
    since: float = 0.0,
    spec: ServiceSpec | None = None,
    error: str | None = None,
    source: str = "docker",
) -> Instance:
    return Instance(
        source, id_, f"c-{id_}", state, since, tuple(ip_address(i) for i in ips), spec, error
    )


def verdict(
    w: World, prefix: str = "10.200.0.1/32", now: float = 0.0, policy: Policy = POLICY
) -> tuple[bool, str]:
    d = decide(w, policy, now=now)[Prefix(prefix)]
    return d.announce, d.reason


def test_a_serving_container_announces_its_route_and_names_itself() -> None:
    w = kernel("10.1.0.5/32")
    w.apply(SourceListed("docker", (inst("a", S.SERVING, "10.1.0.5"),)))
    d = decide(w, POLICY)[Prefix("10.1.0.5/32")]
    assert (d.announce, d.reason) == (True, "host_route")
    assert "docker:c-a" in d.sources


def test_kernel_route_of_a_stopping_or_unhealthy_container_is_not_announced() -> None:
    w = kernel("10.1.0.5/32")
    for state, reason in (
        (S.STOPPING, "instance_stopping"),
        (S.UNHEALTHY, "instance_unhealthy"),
        (S.STARTING, "instance_starting"),
        (S.STOPPED, "instance_stopped"),
    ):
        w.apply(InstanceChanged(inst("a", state, "10.1.0.5")))
        assert verdict(w, "10.1.0.5/32") == (False, reason)


def test_anycast_ip_stays_announced_until_the_last_local_instance_stops() -> None:
    w = kernel("10.200.0.1/32")
    w.apply(
        SourceListed(
            "docker", (inst("a", S.SERVING, "10.200.0.1"), inst("b", S.SERVING, "10.200.0.1"))
        )
    )
    assert verdict(w) == (True, "host_route")
    w.apply(InstanceChanged(inst("a", S.STOPPING, "10.200.0.1")))
    assert verdict(w) == (True, "host_route")
    w.apply(InstanceRemoved("docker", "a"))
    w.apply(InstanceChanged(inst("b", S.UNHEALTHY, "10.200.0.1")))
    assert verdict(w) == (False, "instance_unhealthy")


def test_drain_seconds_keep_a_stopping_instance_announced_until_the_drain_ends() -> None:
    w = kernel("10.200.0.1/32")
    w.apply(
        SourceListed(
            "docker",
            (inst("a", S.STOPPING, "10.200.0.1", since=100.0, spec=ServiceSpec(drain_seconds=5)),),
        )
    )
    assert verdict(w, now=103.0) == (True, "host_route")
    assert next_change(w, POLICY, 103.0) == 105.0
    assert verdict(w, now=105.0) == (False, "instance_stopping")
    assert next_change(w, POLICY, 105.0) is None


def test_a_bad_label_removes_only_that_instance() -> None:
    w = kernel("10.200.0.1/32")
    w.apply(
        SourceListed(
            "docker", (inst("bad", S.SERVING, "10.200.0.1", error="label anycast.med='x': ..."),)
        )
    )
    assert verdict(w) == (False, "label_invalid")
    w.apply(InstanceChanged(inst("good", S.SERVING, "10.200.0.1")))
    assert verdict(w) == (True, "host_route")


def test_label_attributes_merge_over_config_and_communities_add_up() -> None:
    policy = Policy(
        interfaces=POLICY.interfaces,
        allow=POLICY.allow,
        local_as=65001,
        attributes=Attributes(med=10, communities=(Community(65000, 1),)),
    )
    w = kernel("10.200.0.1/32")
    spec = ServiceSpec(
        ips=(ip_address("10.200.0.1"),),
        med=50,
        communities=(Community(65001, 7),),
        as_path_prepend=2,
    )
    w.apply(
        SourceListed(
            "marathon", (inst("t1", S.SERVING, "10.200.0.1", spec=spec, source="marathon"),)
        )
    )
    want = desired(decide(w, policy).items(), policy)[ANYCAST]
    assert want.attributes == Attributes(
        med=50,
        communities=(Community(65000, 1), Community(65001, 7)),
        as_path=(65001, 65001, 65001),
    )


def test_prepend_without_local_as_or_an_unknown_neighbor_makes_the_label_invalid() -> None:
    w = kernel("10.200.0.1/32")
    w.apply(
        SourceListed(
            "docker", (inst("a", S.SERVING, "10.200.0.1", spec=ServiceSpec(as_path_prepend=1)),)
        )
    )
    assert verdict(w, policy=Policy(interfaces=POLICY.interfaces, allow=POLICY.allow)) == (
        False,
        "label_invalid",
    )
    policy = Policy(
        interfaces=POLICY.interfaces,
        allow=POLICY.allow,
        neighbors=frozenset({ip_address("10.99.0.1")}),
    )
    w.apply(
        SourceListed(
            "docker",
            (
                inst(
                    "a",
                    S.SERVING,
                    "10.200.0.1",
                    spec=ServiceSpec(neighbors=frozenset({ip_address("10.99.0.9")})),
                ),
            ),
        )
    )
    assert verdict(w, policy=policy) == (False, "label_invalid")


def test_a_lost_source_is_trusted_for_stale_after_then_the_kernel_decides_alone() -> None:
    w = kernel("10.200.0.1/32")
    w.apply(SourceListed("docker", (inst("a", S.UNHEALTHY, "10.200.0.1"),)))
    w.apply(SourceLost("docker", since=1000.0, reason="connection refused"))
    assert verdict(w, now=1100.0) == (False, "instance_unhealthy")
    assert next_change(w, POLICY, 1100.0) == 1300.0
    assert verdict(w, now=1301.0) == (True, "host_route")
    # hearing from it again restores its word
    w.apply(InstanceChanged(inst("a", S.UNHEALTHY, "10.200.0.1")))
    assert verdict(w, now=1302.0) == (False, "instance_unhealthy")


def test_require_instance_withholds_unclaimed_routes() -> None:
    policy = Policy(interfaces=POLICY.interfaces, allow=POLICY.allow, require_instance=True)
    assert verdict(kernel("10.1.0.9/32"), "10.1.0.9/32", policy=policy) == (False, "no_instance")


def test_a_claimed_address_without_a_kernel_route_is_not_announced() -> None:
    w = kernel()
    w.apply(SourceListed("files", (inst("svc.yaml", S.SERVING, "10.200.0.1", source="files"),)))
    d = decide(w, POLICY)[ANYCAST]
    assert (d.announce, d.reason, d.sources) == (False, "no_kernel_route", ("files:c-svc.yaml",))


def test_source_listing_replaces_only_that_sources_instances() -> None:
    w = kernel("10.200.0.1/32")
    w.apply(SourceListed("docker", (inst("a", S.SERVING, "10.200.0.1"),)))
    w.apply(SourceListed("marathon", (inst("t", S.STOPPED, "10.200.0.1", source="marathon"),)))
    assert verdict(w) == (True, "host_route")
    w.apply(SourceListed("docker", ()))
    assert verdict(w) == (False, "instance_stopped")
