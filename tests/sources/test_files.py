"""Drop-in files: parsing, last-good-wins on bad edits; end to end with `announcer run`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest
from watchdog.observers import Observer

from announcer.events import InstanceState
from announcer.model import Community
from announcer.sources.files import Changes, DropInError, FilesSource, parse_drop_in
from tests.integration.fake_exabgp import FakeExaBGP
from tests.netlab import netns, poll, sh


def test_a_drop_in_is_a_serving_instance_with_typed_attributes(tmp_path: Path) -> None:
    instance = parse_drop_in(
        tmp_path / "dns.yaml",
        "ips: [10.200.0.53]\ncommunities: ['65001:53', GRACEFUL_SHUTDOWN]\nmed: 10\n",
        5.0,
    )
    assert instance.state is InstanceState.SERVING
    assert instance.ips == (ip_address("10.200.0.53"),)
    assert instance.spec is not None
    assert instance.spec.med == 10
    assert Community(65535, 0) in instance.spec.communities


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("ips: [10.200.0.53\n", "not valid YAML"),
        ("- 10.0.0.1\n", "expected a mapping"),
        ("med: 10\n", "declares no ips"),
        ("ips: [10.200.0.53]\nmed: -4\n", "anycast.med"),
        ("ips: [10.200.0.53]\ncolour: blue\n", "anycast.colour"),
        ("ips: [10.200.0.53]\nmed: {a: 1}\n", "key 'med'"),
        ("ips: ['10.0.0.1\\nshutdown']\n", "anycast.ips"),
    ],
)
def test_bad_drop_ins_are_rejected_naming_file_and_key(
    tmp_path: Path, text: str, needle: str
) -> None:
    with pytest.raises(DropInError) as info:
        parse_drop_in(tmp_path / "bad.yaml", text, 0.0)
    assert "bad.yaml" in str(info.value)
    assert needle in str(info.value)


def test_the_last_good_version_of_a_file_stays_in_force(tmp_path: Path) -> None:
    source = FilesSource(tmp_path)
    good = tmp_path / "svc.yaml"
    good.write_text("ips: [10.200.0.1]\nmed: 5\n")
    (tmp_path / "other.yaml").write_text("ips: [10.200.0.2]\n")
    (tmp_path / "ignored.txt").write_text("not yaml at all [")
    assert sorted(str(i.ips[0]) for i in source.scan(1.0)) == ["10.200.0.1", "10.200.0.2"]
    good.write_text("ips: [10.200.0.1]\nmed: ")  # half-written: med is null -> invalid
    [kept] = [i for i in source.scan(2.0) if i.id == str(good)]
    assert kept.spec is not None
    assert kept.spec.med == 5
    good.write_text("ips: [10.200.0.1]\nmed: 7\n")
    [new] = [i for i in source.scan(3.0) if i.id == str(good)]
    assert new.spec is not None
    assert new.spec.med == 7
    good.unlink()
    assert [str(i.ips[0]) for i in source.scan(4.0)] == ["10.200.0.2"]


@pytest.fixture
def host() -> Iterator[str]:
    with netns("files") as ns:
        sh(ns, "ip", "link", "add", "vethr1", "type", "veth", "peer", "name", "ctr1")
        sh(ns, "ip", "link", "set", "vethr1", "up")
        sh(ns, "ip", "link", "set", "ctr1", "up")
        yield ns


@pytest.mark.netns
def test_drop_ins_and_config_edits_apply_live(host: str, tmp_path: Path) -> None:
    routes_d = tmp_path / "routes.d"
    routes_d.mkdir()
    config = tmp_path / "announcer.yaml"
    base = (
        "kernel:\n  interfaces: ['vethr*']\n  resync_interval_seconds: 3600\n"
        f"files:\n  enabled: true\n  directory: {routes_d}\n"
        "lifecycle:\n  require_instance: true\n"
    )
    config.write_text(base + "policy:\n  allow: ['10.0.0.0/8']\n")
    sh(host, "ip", "route", "add", "10.200.0.53/32", "dev", "vethr1")
    sh(host, "ip", "route", "add", "10.1.0.9/32", "dev", "vethr1")  # declared by no file
    exa = FakeExaBGP(host, config)
    try:
        (routes_d / "dns.yaml").write_text("ips: [10.200.0.53]\ncommunities: ['65001:53']\n")
        exa.expect("announce route 10.200.0.53/32 next-hop self community [65001:53]")
        (routes_d / "dns.yaml").write_text(
            "ips: [10.200.0.53]\ncommunities: ['65001:53']\nmed: 20\n"
        )
        exa.expect("announce route 10.200.0.53/32 next-hop self med 20 community [65001:53]")
        (routes_d / "dns.yaml").write_text(
            "ips: [10.200.0.53]\ncommunities: ['65001:"
        )  # half-written
        exa.no_command_within(1.0)
        # the main config: a valid edit applies without restart ...
        config.write_text(
            base + "policy:\n  allow: ['10.0.0.0/8']\n  attributes:\n    local_preference: 300\n"
        )
        exa.expect(
            "announce route 10.200.0.53/32 next-hop self med 20 local-preference 300 community [65001:53]"
        )
        # ... an invalid one changes nothing
        config.write_text(base + "policy:\n  allow: ['10.0.0.0/33']\n")
        exa.no_command_within(1.0)
        (routes_d / "dns.yaml").unlink()
        exa.expect("withdraw route 10.200.0.53/32")
    finally:
        exa.close()
    log = exa.stderr()
    assert "drop_in_rejected" in log
    assert "kept=last_good" in log
    assert "config_rejected" in log
    assert "10.0.0.0/33" in log
    assert not any("10.1.0.9" in line for line in exa.seen)


@pytest.mark.netns
def test_plan_shows_which_sources_contributed_each_prefix(host: str, tmp_path: Path) -> None:
    routes_d = tmp_path / "routes.d"
    routes_d.mkdir()
    (routes_d / "dns.yaml").write_text("ips: [10.200.0.53]\nmed: 7\n")
    (routes_d / "broken.yaml").write_text("ips: [10.200.0.54]\nmed: nope\n")
    config = tmp_path / "announcer.yaml"
    config.write_text(
        f"kernel:\n  interfaces: ['vethr*']\npolicy:\n  allow: ['10.0.0.0/8']\nfiles:\n  enabled: true\n  directory: {routes_d}\n"
    )
    sh(host, "ip", "route", "add", "10.200.0.53/32", "dev", "vethr1")
    import json

    from tests.integration.fake_exabgp import ANNOUNCER

    plan = json.loads(sh(host, ANNOUNCER, "plan", "-c", str(config), "--json").stdout)
    [row] = [r for r in plan["decisions"] if r["prefix"] == "10.200.0.53/32"]
    assert row["announce"]
    assert row["sources"] == ["route:main:vethr1", "files:dns.yaml"]
    assert plan["sources"] == {"files": "listed 1 instance(s)"}
    assert plan["commands"] == ["announce route 10.200.0.53/32 next-hop self med 7"]


def test_reading_the_files_does_not_trigger_another_read(tmp_path: Path) -> None:
    """watchdog reports opens and read-only closes too; our own re-read must not loop.
    inotify delivers a watch's events in order: had the scan's read counted as a change,
    its path would come before the sentinel's."""
    (tmp_path / "svc.yaml").write_text("ips: [10.200.0.1]\n")
    seen: list[str] = []
    observer = Observer()
    observer.schedule(Changes(seen.append), str(tmp_path))
    observer.start()
    try:
        assert [i.ips for i in FilesSource(tmp_path).scan(0.0)] == [(ip_address("10.200.0.1"),)]
        (tmp_path / "sentinel.yaml").write_text("ips: [10.200.0.2]\n")  # a real change
        poll(lambda: any(p.endswith("sentinel.yaml") for p in seen), 10, "the sentinel's change")
        assert not any(p.endswith("svc.yaml") for p in seen), seen
    finally:
        observer.stop()
        observer.join(5)


def test_a_change_is_listed_again(tmp_path: Path) -> None:
    import asyncio

    (tmp_path / "svc.yaml").write_text("ips: [10.200.0.1]\n")
    listings: list[object] = []

    def ips() -> list[list[str]]:
        return [[str(ip) for i in e.instances for ip in i.ips] for e in listings]  # type: ignore[attr-defined]

    async def until(condition: Callable[[], object], what: str) -> None:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.01)  # a poll interval; the deadline is the timeout

    async def scenario() -> None:
        source = FilesSource(tmp_path, rescan_seconds=3600)
        task = asyncio.create_task(source.run(listings.append, lambda: 0.0))
        await until(lambda: listings, "the first listing")
        (tmp_path / "svc.yaml").write_text("ips: [10.200.0.2]\n")
        await until(lambda: ["10.200.0.2"] in ips(), "the changed file listed")
        task.cancel()
        await asyncio.wait({task}, timeout=2)

    asyncio.run(scenario())
    assert ips()[0] == ["10.200.0.1"]
