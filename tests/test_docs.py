"""The docs say what the code does: docs/design.md's decision table is the Reason enum."""

from __future__ import annotations

import re
from pathlib import Path

from announcer.model import Reason

DOCS = Path(__file__).resolve().parent.parent / "docs"


def design_reason_words() -> tuple[set[str], str]:
    text = (DOCS / "design.md").read_text()
    section = text[text.index("## What decides a prefix") : text.index("## Restart safety")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    table = {w for row in rows[1:] for w in re.findall(r"`([a-z_]+)`", row.split("|")[2])}
    return table, section


def test_every_reason_is_in_the_decision_section_and_the_table_names_only_reasons() -> None:
    table, section = design_reason_words()
    assert table <= {r.value for r in Reason}, table - {r.value for r in Reason}
    words = set(re.findall(r"`([a-z_]+)`", section))
    missing = sorted(r.value for r in Reason if r.value not in words)
    assert missing == [], f"docs/design.md does not explain {missing}"


def test_every_withheld_reason_has_a_row() -> None:
    table, _ = design_reason_words()
    announce_only = {Reason.HOST_ROUTE, Reason.LOCAL_ADDRESS, Reason.NOT_OBSERVED}
    missing = sorted(r.value for r in Reason if r not in announce_only and r.value not in table)
    assert missing == []
