"""The plan: the commands that take what is announced to what is desired.

:class:`AnnouncedTable` is the sink's memory of what ExaBGP has been told. It is
*unknown* until it is loaded (from ExaBGP's ``show adj-rib out`` at start), which is
different from *empty*. An entry whose attributes are not known (read back from ExaBGP,
or whose command failed) is :class:`Unconfirmed`: the plan re-announces it if it is
desired (ExaBGP sends no UPDATE for an identical route) and withdraws it if not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import assert_never

from announcer.model import Advert, IPAddress, Prefix, check_family, prefix_order


@dataclass(frozen=True, slots=True)
class Announce:
    prefix: Prefix
    advert: Advert

    def __post_init__(self) -> None:
        check_family(self.prefix, self.advert)


@dataclass(frozen=True, slots=True)
class Withdraw:
    prefix: Prefix
    neighbors: frozenset[IPAddress] = frozenset()  # empty: every neighbor


Command = Announce | Withdraw


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """ExaBGP may announce this prefix; to these neighbors (empty: unknown or all)."""

    neighbors: frozenset[IPAddress] = frozenset()


UNKNOWN = Unconfirmed()
AnnouncedEntry = Advert | Unconfirmed


def diff(
    desired: Mapping[Prefix, Advert], announced: Mapping[Prefix, AnnouncedEntry]
) -> list[Command]:
    """Withdraws first (a peer's max-prefix is never tripped by our ordering), then announces.

    Nothing is diffed before the world is known: that is the sync gate's rule
    (:mod:`announcer.core.gates`), applied by the reconciler before it calls this.
    """
    withdraws: list[Command] = []
    announces: list[Command] = []
    for prefix in sorted(desired.keys() - announced.keys(), key=prefix_order):
        announces.append(Announce(prefix, desired[prefix]))
    for prefix in sorted(announced.keys(), key=prefix_order):
        current = announced[prefix]
        wanted = desired.get(prefix)
        if wanted is None:
            withdraws.append(Withdraw(prefix, current.neighbors))
            continue
        if current == wanted:
            continue
        stale = current.neighbors - wanted.neighbors if wanted.neighbors else frozenset()
        if stale:
            withdraws.append(Withdraw(prefix, stale))
        announces.append(Announce(prefix, wanted))
    return withdraws + announces


@dataclass
class AnnouncedTable:
    """What ExaBGP has been told, as far as we know."""

    entries: dict[Prefix, AnnouncedEntry] = field(default_factory=dict)
    known: bool = False

    def load(self, rib: Iterable[tuple[IPAddress, Prefix]]) -> None:
        """Start from ExaBGP's adj-rib-out: (neighbor, prefix) pairs, attributes unknown."""
        neighbors: dict[Prefix, set[IPAddress]] = {}
        for neighbor, prefix in rib:
            neighbors.setdefault(prefix, set()).add(neighbor)
        self.entries = {p: Unconfirmed(frozenset(n)) for p, n in neighbors.items()}
        self.known = True

    def record(self, command: Command) -> None:
        """A command was sent: assume it works (a failure calls :meth:`fail`)."""
        match command:
            case Announce(prefix, advert):
                self.entries[prefix] = advert
            case Withdraw(prefix, neighbors):
                current = self.entries.get(prefix)
                if current is None:
                    return
                if not neighbors:
                    del self.entries[prefix]
                elif not current.neighbors:
                    # Announced to all, withdrawn from some: where it remains is unknown.
                    self.entries[prefix] = UNKNOWN
                elif remaining := current.neighbors - neighbors:
                    self.entries[prefix] = Unconfirmed(remaining)
                else:
                    del self.entries[prefix]
            case _:
                assert_never(command)

    def fail(self, command: Command) -> None:
        """ExaBGP refused a command: the prefix's state there is unknown."""
        self.entries[command.prefix] = UNKNOWN

    def unconfirm(self) -> None:
        """Keep where each prefix is announced, forget what was confirmed: the next diff
        re-announces everything desired (ExaBGP sends no UPDATE for what it already has)."""
        self.entries = {p: Unconfirmed(e.neighbors) for p, e in self.entries.items()}

    def forget(self) -> None:
        self.entries = {}
        self.known = False
