"""One ExaBGP run of a scripted scenario, observed from outside: acks, wire, show, FRR.

Used by test_launcher.py to run the same scenario against stock and accelerated ExaBGP
(announcer/exabgp/launcher.py) and compare what each did, byte for byte.

Every step is written in one write(2) (``@BATCH``), its acks are awaited, and when it
should reach the wire, every prefix it names is awaited in the captured UPDATEs before
the next step: the next line then reaches ExaBGP after the UPDATEs of this one were
built, in both runs. A closing sentinel per session proves that nothing sent earlier is
still in flight when the capture is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import ip_network
from pathlib import Path

from tests.exabgp.scripted import ExaBGPUnderTest, exabgp_under_test
from tests.exabgp.wire import UpdateCapture, describe
from tests.netlab import HOST_V4, HOST_V6, PEER_IF, BgpLink, poll

V4 = "neighbor 10.99.0.1"
V6 = "neighbor fd00:99::1"
BOTH = f"{V4}, {V6}"
_PREFIX = re.compile(r"\b(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f]*:[0-9a-f:]*)/\d{1,3}\b")


@dataclass(frozen=True)
class Step:
    """Lines written together; ``acks`` per release when not one per line."""

    lines: tuple[str, ...]
    wire: bool = True  # does it change what the peer must be told?
    acks: dict[str, int] = field(default_factory=dict)

    def prefixes(self) -> set[str]:
        """The valid prefixes the lines name."""
        found = set()
        for text in (p for line in self.lines for p in _PREFIX.findall(line)):
            try:
                found.add(str(ip_network(text)))
            except ValueError:
                continue  # the unparsable one of the error step
        return found

    def expected_acks(self, release: str) -> int:
        return self.acks.get(release, len(self.lines))


def _nlri(fmt: str, count: int, step: int = 1) -> str:
    """``count`` prefixes from ``fmt`` ('10.0.2.{}/32', 'fd00:10:2::{:x}/128'), from 1."""
    return " ".join(fmt.format(1 + i * step) for i in range(count))


BANDWIDTH = "extended-community [bandwidth:65001:125000000]"

STEPS: tuple[Step, ...] = (
    # single lines, next-hop self, v4 and v6
    Step((f"{V4} announce route 10.0.1.1/32 next-hop self",)),
    Step((f"{V6} announce route fd00:10:1::1/128 next-hop self",)),
    # explicit next-hop, every attribute the announcer (and weighted anycast) sends
    Step(
        (
            f"{V4} announce route 10.0.1.2/32 next-hop 10.99.0.2 med 10 local-preference 200"
            " community [65001:1 65001:2] large-community [65001:1:1 65001:1:2]"
            f" {BANDWIDTH} as-path [65001 65010]",
        )
    ),
    Step(
        (
            f"{V6} announce route fd00:10:1::2/128 next-hop fd00:99::2 med 20"
            f" community [65001:3] large-community [65001:2:2] {BANDWIDTH}",
        )
    ),
    # grouped lines, next-hop self, v4 and v6
    Step(
        (
            f"{V4} announce attributes next-hop self med 30 community [65001:30]"
            f" nlri {_nlri('10.0.2.{}/32', 10)}",
        )
    ),
    Step(
        (
            f"{V6} announce attributes next-hop self large-community [65001:6:6] {BANDWIDTH}"
            f" nlri {_nlri('fd00:10:2::{:x}/128', 5)}",
        )
    ),
    # grouped, explicit next-hop, a two-neighbor selector (the v6 neighbor refuses v4)
    Step(
        (
            f"{BOTH} announce attributes next-hop 10.99.0.2 {BANDWIDTH} local-preference 50"
            f" nlri {_nlri('10.0.3.{}/32', 3)}",
        )
    ),
    # no selector: both neighbors, the v6 one logs "family not configured"
    Step(("announce route 10.0.4.1/32 next-hop self as-path [65001 65020]",)),
    # one line longer than the reactor's 50 routes a turn, and two lines in one write
    Step((f"{V4} announce attributes next-hop self med 40 nlri {_nlri('10.0.5.{}/32', 120)}",)),
    Step(
        (
            f"{V4} announce attributes next-hop self med 41 nlri {_nlri('10.0.6.{}/32', 30)}",
            f"{V6} announce attributes next-hop self med 41 nlri {_nlri('fd00:10:6::{:x}/128', 30)}",
        )
    ),
    # the same again: acknowledged, nothing sent
    Step((f"{V4} announce route 10.0.1.1/32 next-hop self",), wire=False),
    # changed attributes (implicit replace), then the same route with its explicit self
    # address: ExaBGP compares resolved next-hops, so nothing is sent for the latter
    Step((f"{V4} announce route 10.0.1.1/32 next-hop self med 5",)),
    Step((f"{V4} announce route 10.0.1.1/32 next-hop 10.99.0.2 med 5",), wire=False),
    Step((f"{V6} announce route fd00:10:1::1/128 next-hop self med 6",)),
    # withdraws: single, grouped (the announcer's `withdraw attributes next-hop self`)
    Step((f"{V4} withdraw route 10.0.1.2/32",)),
    Step((f"{V4} withdraw attributes next-hop self nlri {_nlri('10.0.2.{}/32', 5)}",)),
    Step((f"{V6} withdraw attributes next-hop self nlri {_nlri('fd00:10:2::{:x}/128', 2)}",)),
    Step((f"{V4} withdraw attributes next-hop self nlri {_nlri('10.0.5.{}/32', 60, 2)}",)),
    # never announced: done, and a withdraw goes out anyway
    Step((f"{V4} withdraw route 10.0.9.9/32",)),
    # errors: no such neighbor; an unparsable prefix (4.2.21 never answers it)
    Step(("neighbor 10.99.0.99 announce route 10.0.7.1/32 next-hop self",), wire=False),
    Step(
        (
            f"{V4} announce route 10.0.0.300/32 next-hop self",
            f"{V4} announce route 10.0.7.2/32 next-hop self",
        ),
        acks={"4.2.21": 1},
    ),
)
SENTINELS = Step(
    (
        f"{V4} announce route 10.0.8.1/32 next-hop self med 99",
        f"{V6} announce route fd00:10:8::1/128 next-hop self med 99",
    )
)
SHOWS = {
    "5.0.15": ("show adj-rib out", "show adj-rib out extensive", "show adj-rib out json"),
    "4.2.21": ("show adj-rib out", "show adj-rib out extensive"),
}


@dataclass
class Observed:
    """What one run did, as seen from outside ExaBGP."""

    acks: list[list[str]]  # per step, the answers (done/error) in order
    updates: dict[str, list[bytes]]  # per session (source address), in order
    shows: dict[str, list[str]]
    frr: dict[str, set[str]]
    launcher_log: list[str]
    gaps: int


def _source(prefix: str) -> str:
    return HOST_V6 if ":" in prefix else HOST_V4


def _run_step(exa: ExaBGPUnderTest, capture: UpdateCapture, step: Step, release: str) -> list[str]:
    before = {src: len(ups) for src, ups in capture.by_source().items()}
    line = step.lines[0] if len(step.lines) == 1 else "@BATCH " + "|".join(step.lines)
    records = exa.helper.exchange([line], acks=step.expected_acks(release))
    answers = [r.text for r in records if not r.is_json()]
    if step.wire:
        wanted = step.prefixes()

        def arrived() -> bool:
            seen: set[str] = set()
            for src, ups in capture.by_source().items():
                seen |= {p for up in ups[before.get(src, 0) :] for p in describe(up).prefixes()}
            return wanted <= seen

        poll(arrived, 15, f"UPDATEs for {sorted(wanted)[:4]}... on the wire")
    return answers


def observe(
    link: BgpLink, workdir: Path, exabgp: str, release: str, env: dict[str, str] | None = None
) -> Observed:
    """Run STEPS, the sentinels and the shows on a fresh ExaBGP; capture everything."""
    capture = UpdateCapture(link.peer, PEER_IF, frozenset({HOST_V4, HOST_V6})).start()
    try:
        with exabgp_under_test(link, workdir, env, exabgp) as exa:
            acks = [_run_step(exa, capture, step, release) for step in STEPS]
            acks.append(_run_step(exa, capture, SENTINELS, release))
            shows = {cmd: exa.helper.command(cmd) for cmd in SHOWS[release]}
            frr = {afi: set(link.frr.bgp_prefixes(afi)) for afi in ("ipv4", "ipv6")}
            stdout = (exa.exabgp.workdir / "exabgp.stdout").read_text(errors="replace")
            launcher_log = [ln for ln in stdout.splitlines() if "exabgp_launcher" in ln]
    finally:
        capture.stop()
    return Observed(acks, capture.by_source(), shows, frr, launcher_log, capture.gaps())


def differences(stock: list[bytes], accelerated: list[bytes]) -> list[str]:
    """Readable differences between two UPDATE sequences (empty when identical)."""
    out = [f"{len(stock)} UPDATEs stock, {len(accelerated)} accelerated"]
    for i, (a, b) in enumerate(zip(stock, accelerated, strict=False)):
        if a != b:
            out.append(f"#{i}: stock {describe(a)} {a.hex()}")
            out.append(f"#{i}: accel {describe(b)} {b.hex()}")
    return out if len(out) > 1 or len(stock) != len(accelerated) else []
