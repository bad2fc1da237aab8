"""announcer/exabgp/launcher.py: which ExaBGP it accelerates, and proof that it changes
nothing a peer or an API process can see.

Unit tests: the version and source-hash gate, the stock switch, the one stderr line,
idempotence, and SelfResolver against ``Neighbor.remove_self`` field for field on routes
parsed by ExaBGP's own parser.

Contract tests: the same scenario (launcher_scenario.STEPS) against real FRR 8.4, with
the stock ``exabgp`` and through the launcher, at ExaBGP's defaults and with the settings
we ship, for each release the launcher accelerates; the UPDATEs captured on the wire must
be byte-identical and in the same order, and so must the acks, the ``show adj-rib out``
answers and FRR's table.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from announcer.exabgp import launcher
from announcer.exabgp.commands import parse_adj_rib_out
from tests import netlab
from tests.exabgp.accelerated import launcher_executable, stock_executable
from tests.exabgp.launcher_scenario import STEPS, differences, observe

PINNED, EXABGP4 = "5.0.15", "4.2.21"
BINDIRS = {PINNED: netlab.REPO / ".venv/bin", EXABGP4: netlab.REPO / ".venv-exabgp4/bin"}


def _run(python: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """python ARGS with this checkout importable, our stock switch only if env sets it."""
    inherited = {k: v for k, v in os.environ.items() if k != launcher.STOCK_ENV}
    full_env = {**inherited, "PYTHONPATH": str(netlab.REPO), **env}
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, env=full_env, timeout=60, check=False
    )


def _python(release: str) -> Path:
    python = BINDIRS[release] / "python"
    if not python.exists():
        pytest.skip(f"ExaBGP {release} is not installed in {python.parent} (make venv-exabgp4)")
    return python


# --------------------------------------------------------------------------- the gate


def _sha(table: dict[str, str | None]) -> Any:
    """A stand-in for launcher.source_sha256 that answers from a table."""
    return table.get


def _verified_hashes(release: str) -> dict[str, str]:
    return {target: sha for fix in launcher.VERIFIED[release] for target, sha in fix.guards}


def test_every_verified_release_has_the_poll_fix_and_5_0_15_also_the_resolve_fix() -> None:
    names = {r: [f.name for f in fixes] for r, fixes in launcher.VERIFIED.items()}
    assert names == {
        PINNED: ["poll_while_queued", "resolve_self_shared"],
        EXABGP4: ["poll_while_queued"],
    }


@pytest.mark.parametrize("release", [PINNED, EXABGP4])
def test_a_verified_release_whose_sources_match_is_accelerated(release: str) -> None:
    fixes, decision = launcher.decide(release, None, _sha(_verified_hashes(release)))
    assert [f.name for f in fixes] == [f.name for f in launcher.VERIFIED[release]]
    assert not decision.stock
    assert "mode=accelerated" in decision.line()


@pytest.mark.parametrize("version", ["5.0.14", "5.0.16", "4.2.22", "6.0.0", ""])
def test_any_other_version_runs_stock_and_says_why(version: str) -> None:
    fixes, decision = launcher.decide(version, None, _sha({}))
    assert fixes == ()
    assert decision.stock
    line = decision.line()
    assert "\n" not in line
    assert "mode=stock" in line
    assert f"ExaBGP {version} is not a release the launcher was verified against" in line
    assert "4.2.21, 5.0.15" in line


@pytest.mark.parametrize("release", [PINNED, EXABGP4])
def test_a_patched_build_with_the_verified_version_runs_stock(release: str) -> None:
    """Each guarded function alone, changed (or unreadable), turns the whole launcher stock."""
    hashes = _verified_hashes(release)
    for target in hashes:
        for changed in ("0" * 64, None):
            fixes, decision = launcher.decide(release, None, _sha({**hashes, target: changed}))
            assert fixes == (), target
            assert decision.stock
            assert target in decision.reason
            assert ("unreadable" in decision.reason) == (changed is None)


def test_a_requested_stock_run_wins_over_a_verified_release() -> None:
    fixes, decision = launcher.decide(PINNED, "--stock given", _sha(_verified_hashes(PINNED)))
    assert fixes == ()
    assert decision.reason == "--stock given"


@pytest.mark.parametrize(
    ("args", "environ", "reason", "rest"),
    [
        (["--stock", "conf"], {}, "--stock given", ["conf"]),
        (["conf", "--stock"], {}, None, ["conf", "--stock"]),  # only first: ExaBGP's own args
        (["conf"], {"ANNOUNCER_EXABGP_STOCK": "1"}, "ANNOUNCER_EXABGP_STOCK=1", ["conf"]),
        (["conf"], {"ANNOUNCER_EXABGP_STOCK": "0"}, None, ["conf"]),
        (["conf"], {"ANNOUNCER_EXABGP_STOCK": ""}, None, ["conf"]),
        ([], {}, None, []),
    ],
)
def test_the_stock_switch(
    args: list[str], environ: dict[str, str], reason: str | None, rest: list[str]
) -> None:
    assert launcher.stock_reason(args, environ) == (reason, rest)


def test_the_hashes_in_the_table_are_those_of_the_installed_pinned_release() -> None:
    """Guards the table itself: recomputed here from the installed 5.0.15."""
    for target, sha in _verified_hashes(PINNED).items():
        assert launcher.source_sha256(target) == sha, target


# --------------------------------------------------------------------------- main, for real


@pytest.mark.parametrize("release", [PINNED, EXABGP4])
def test_main_runs_exabgp_with_one_line_on_stderr(release: str) -> None:
    version = "version" if release == PINNED else "--version"  # 4.2: `exabgp --version`
    done = _run(_python(release), "-m", "announcer.exabgp.launcher", version, env={})
    assert done.returncode == 0, done.stderr
    assert f"ExaBGP : {release}" in done.stdout
    [line] = [ln for ln in done.stderr.splitlines() if "exabgp_launcher" in ln]
    fixes = ",".join(f.name for f in launcher.VERIFIED[release])
    assert f"mode=accelerated version={release} fixes={fixes}" in line


@pytest.mark.parametrize(
    ("args", "env", "reason"),
    [
        (["--stock", "version"], {}, "--stock given"),
        (["version"], {"ANNOUNCER_EXABGP_STOCK": "1"}, "ANNOUNCER_EXABGP_STOCK=1"),
    ],
)
def test_main_stock_switch_leaves_exabgp_untouched(
    args: list[str], env: dict[str, str], reason: str
) -> None:
    script = (
        "import sys\nfrom announcer.exabgp import launcher\n"
        f"code = launcher.main({args!r})\n"
        "from exabgp.reactor.loop import Reactor\n"
        "from exabgp.configuration.configuration import _Configuration as C\n"
        "marked = [hasattr(f, launcher.MARK) for f in (Reactor._wait_for_io, C.inject_change)]\n"
        "print('MARKED', marked, 'CODE', code)\n"
    )
    done = _run(_python(PINNED), "-c", script, env=env)
    assert "MARKED [False, False] CODE 0" in done.stdout, done.stdout + done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if "exabgp_launcher" in ln]
    assert f"mode=stock version=5.0.15 fixes=none reason='{reason}'" in line


def test_main_on_an_unverified_version_runs_stock_with_one_line() -> None:
    script = (
        "import exabgp.version\nexabgp.version.version = '5.0.99'\n"
        "from announcer.exabgp import launcher\nraise SystemExit(launcher.main(['version']))\n"
    )
    done = _run(_python(PINNED), "-c", script, env={})
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if "exabgp_launcher" in ln]
    assert len(lines) == 1, done.stderr
    assert "mode=stock version=5.0.99 fixes=none" in lines[0]
    assert "not a release the launcher was verified against" in lines[0]


def test_main_returns_exabgp_exit_code() -> None:
    done = _run(_python(PINNED), "-m", "announcer.exabgp.launcher", "/nonexistent.conf", env={})
    stock = _run(BINDIRS[PINNED] / "exabgp", "/nonexistent.conf", env={})
    assert done.returncode == stock.returncode != 0


@pytest.mark.parametrize("release", [PINNED, EXABGP4])
def test_accelerate_is_idempotent(release: str) -> None:
    script = (
        "from announcer.exabgp import launcher\n"
        "from exabgp.reactor.loop import Reactor\n"
        "from exabgp.configuration.configuration import _Configuration as C\n"
        "first = launcher.accelerate()\n"
        "functions = (Reactor._wait_for_io, C.inject_change)\n"
        "second = launcher.accelerate()\n"
        "same = all(a is b for a, b in zip(functions, (Reactor._wait_for_io, C.inject_change)))\n"
        "print('SAME', same, first == second, first.fixes)\n"
    )
    done = _run(_python(release), "-c", script, env={})
    fixes = tuple(f.name for f in launcher.VERIFIED[release])
    assert f"SAME True True {fixes!r}" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("release", [PINNED, EXABGP4])
def test_the_poll_does_not_sleep_while_api_work_is_queued(release: str) -> None:
    """The installed _wait_for_io passes timeout 0 to poll() only when work is queued."""
    script = (
        "from types import SimpleNamespace as NS\n"
        "from announcer.exabgp import launcher\n"
        "from exabgp.reactor.loop import Reactor\n"
        "launcher.accelerate()\n"
        "timeouts = []\n"
        "for queued in (True, False):\n"
        "    poller = NS(poll=lambda t: timeouts.append(t) or [])\n"
        "    me = NS(asynchronous=NS(ready=lambda q=queued: not q), _poller=poller)\n"
        "    list(Reactor._wait_for_io(me, 10))\n"
        "print('TIMEOUTS', timeouts)\n"
    )
    done = _run(_python(release), "-c", script, env={})
    assert "TIMEOUTS [0, 10]" in done.stdout, done.stdout + done.stderr


# --------------------------------------------------------------------------- SelfResolver

_CONF = """
neighbor 10.99.0.1 { router-id 10.99.0.2; local-address 10.99.0.2; local-as 65001;
                     peer-as 65000; family { ipv4 unicast; } }
neighbor fd00:99::1 { router-id 10.99.0.2; local-address fd00:99::2; local-as 65001;
                      peer-as 65000; family { ipv6 unicast; } }
"""
_ROUTES = [
    (
        "announce attributes next-hop self med 30 community [65001:30]"
        " extended-community [bandwidth:65001:1000] nlri 10.0.2.1/32 10.0.2.2/32",
        0,
    ),
    (
        "announce route 10.0.2.9/32 next-hop 10.99.0.2 local-preference 7"
        " as-path [65001 65010] large-community [65001:1:1]",
        0,
    ),
    ("announce route 10.0.2.10/32 next-hop self", 0),
    ("announce route fd00:10::1/128 next-hop self community [65001:1]", 1),
    ("announce attributes next-hop fd00:99::2 med 3 nlri fd00:10::1/128 fd00:10::2/128", 1),
    ("announce attributes next-hop self nlri fd00:10::3/128 fd00:10::4/128", 1),
    ("withdraw attributes next-hop self nlri 10.0.2.1/32 10.0.2.2/32", 0),
]


def _resolved_view(change: Any) -> tuple[Any, ...]:
    nlri, attrs = change.nlri, change.attributes
    return (
        type(change),
        type(nlri),
        sorted(vars(nlri)),
        nlri.action,
        nlri.index(),
        str(nlri),
        nlri.nexthop,
        list(attrs),
        [type(a) for a in attrs.values()],
        sorted(vars(attrs)),
        attrs.index(),
        str(attrs),
        attrs.json(),
        change.index(),
        change.extensive(),
    )


_NEGOTIATED = SimpleNamespace(asn4=True)  # all Attribute.pack reads of a session, here


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Any], Any]]:
    """ExaBGP 5.0.15's own configuration and API parser, in this process (nothing patched)."""
    work = tmp_path_factory.mktemp("resolver")
    os.environ["exabgp.log.destination"] = str(work / "exabgp.log")  # noqa: SIM112 ExaBGP's name
    try:
        from exabgp.configuration.configuration import Configuration
        from exabgp.environment import getenv
        from exabgp.logger import log
        from exabgp.reactor.api import API

        log.init(getenv())
        conf = work / "exabgp.conf"
        conf.write_text(_CONF)
        configuration = Configuration([str(conf)])
        assert configuration.reload(), configuration.error
        yield list(configuration.neighbors.values()), API(None)
    finally:
        os.environ.pop("exabgp.log.destination", None)


@pytest.mark.parametrize(("line", "neighbor"), _ROUTES)
def test_self_resolver_gives_what_remove_self_gives(
    parsed: tuple[list[Any], Any], line: str, neighbor: int
) -> None:
    from exabgp.bgp.message import Action
    from exabgp.bgp.message.update.attribute import Attribute

    neighbors, api = parsed
    changes = api.api_attributes(line, None) if " attributes " in line else api.api_route(line)
    assert changes, line
    resolver = launcher.SelfResolver()
    shared = []
    for change in changes:
        change.nlri.action = Action.WITHDRAW if line.startswith("withdraw") else Action.ANNOUNCE
        stock = neighbors[neighbor].remove_self(change)
        fast = resolver.resolve(neighbors[neighbor], change)
        view_stock, view_fast = _resolved_view(stock), _resolved_view(fast)
        assert view_stock == view_fast, line
        if " next-hop self" in line:  # both hold the neighbor's own address object
            assert stock.nlri.nexthop is fast.nlri.nexthop is neighbors[neighbor]["local-address"]
        else:  # stored as parsed, no copy
            assert fast is change
        for code in stock.attributes:
            if code != Attribute.CODE.NEXT_HOP:
                packed = (a.attributes[code].pack(_NEGOTIATED) for a in (stock, fast))
                assert next(packed) == next(packed), code
        shared.append(fast.attributes)
    # one resolved attribute set per line and neighbor, not one per route
    assert len({id(a) for a in shared}) == 1


# --------------------------------------------------------------------------- contract


SHIPPED = {"exabgp.log.level": "WARNING", "exabgp.api.chunk": "1000"}  # what we ship
# ExaBGP's own defaults, spelled out: ExaBGPProcess starts from the shipped settings.
DEFAULTS = {"exabgp.log.level": "INFO", "exabgp.api.chunk": "1"}


def test_the_shipped_settings_are_the_ones_compared() -> None:
    shipped = netlab.shipped_exabgp_settings()
    assert {key: shipped[key] for key in SHIPPED} == SHIPPED


@pytest.mark.netns
@pytest.mark.exabgp
@pytest.mark.frr
@pytest.mark.slow
@pytest.mark.parametrize("release", [PINNED, EXABGP4])
def test_accelerated_exabgp_sends_the_same_bytes_acks_and_adj_rib_out(
    bgp_link: netlab.BgpLink, tmp_path: Path, release: str
) -> None:
    """Stock and accelerated, at ExaBGP's defaults and with the settings we ship."""
    stock_exabgp = stock_executable(tmp_path, BINDIRS[release])
    fast_exabgp = launcher_executable(tmp_path, str(_python(release)))
    runs = {
        (kind, settings): observe(bgp_link, tmp_path / f"{kind}-{settings}", exe, release, env)
        for settings, env in (("defaults", DEFAULTS), ("shipped", SHIPPED))
        for kind, exe in (("stock", stock_exabgp), ("accelerated", fast_exabgp))
    }
    stock = runs["stock", "defaults"]

    # the accelerated runs were accelerated, and the stock ones the plain console script
    fixes = ",".join(f.name for f in launcher.VERIFIED[release])
    for (kind, settings), run in runs.items():
        if kind == "stock":
            assert run.launcher_log == [], settings
        else:
            [line] = run.launcher_log
            assert f"mode=accelerated version={release} fixes={fixes}" in line

    # the scenario did what it is meant to: many UPDATEs on both sessions, an error
    assert len(stock.updates[netlab.HOST_V4]) >= 15
    assert len(stock.updates[netlab.HOST_V6]) >= 8
    assert ["error"] in stock.acks
    assert len(stock.acks) == len(STEPS) + 1
    # and ExaBGP's adj-rib-out is what FRR holds: 102 IPv4 and 36 IPv6 routes
    entries, unparsed = parse_adj_rib_out(stock.shows["show adj-rib out"][:-1])
    assert unparsed == []
    assert {str(prefix) for _, prefix in entries} == stock.frr["ipv4"] | stock.frr["ipv6"]
    assert (len(stock.frr["ipv4"]), len(stock.frr["ipv6"])) == (102, 36)

    # every run, whatever the launcher and the settings, did exactly the same
    for key, run in runs.items():
        assert run.gaps == 0, key
        assert run.acks == stock.acks, key
        for source in (netlab.HOST_V4, netlab.HOST_V6):
            assert run.updates[source] == stock.updates[source], "\n".join(
                [str(key), *differences(stock.updates[source], run.updates[source])]
            )
        assert run.shows == runs["stock", key[1]].shows, key
        # the text forms at chunk 1000 are those at chunk 1 (the JSON form is not: ExaBGP
        # 5.0.15 repeats routes in it when chunk > 1, stock and accelerated alike)
        text = {cmd: lines for cmd, lines in run.shows.items() if "json" not in cmd}
        assert text == {cmd: stock.shows[cmd] for cmd in text}, key
        assert run.frr == stock.frr, key
    print(
        f"ExaBGP {release}: {len(stock.updates[netlab.HOST_V4])} + "
        f"{len(stock.updates[netlab.HOST_V6])} UPDATEs identical in {len(runs)} runs,"
        f" acks {stock.acks}"
    )
