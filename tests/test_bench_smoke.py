"""The benchmark's pure parts: statistics, ratios, report table, wire and probe parsing.

No timings are asserted here (issue 10: a benchmark, not a test); `make bench` measures.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest

from bench.nl import RTM_DELROUTE, RTM_NEWROUTE, parse_route_events, route_message
from bench.stages import Trial, breakdown, event_to_command, pace, parse_probe
from bench.stats import cdf, percentile, ratios, render_table, summarize, table_rows
from bench.wire import BgpStream, parse_frame, parse_update


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summarize_and_cdf() -> None:
    assert summarize([]) == {"n": 0}
    summary = summarize([3.0, 1.0, 2.0])
    assert summary == {"n": 3, "median": 2.0, "p99": 3.0, "min": 1.0, "max": 3.0}
    assert cdf([2.0, 1.0]) == ([1.0, 2.0], [0.5, 1.0])


def _tool(wire: float, fib: float, burst: dict[str, float]) -> dict[str, object]:
    return {
        "latency": {
            "announce_wire_ms": {"median": wire},
            "withdraw_wire_ms": {"median": wire},
            "announce_fib_ms": {"median": fib},
            "withdraw_fib_ms": {"median": fib},
        },
        "burst": {
            size: {"announce_fib_seconds": s, "peak_rss_mb_total": 10.0}
            for size, s in burst.items()
        },
    }


def test_ratios_divide_by_the_best_anchor_and_fall_back_to_the_largest_common_burst() -> None:
    tools = {
        "announcer": _tool(8.0, 70.0, {"1000": 1.0, "5000": 6.0}),
        "frr": _tool(60.0, 120.0, {"1000": 0.2, "5000": 0.8}),
        "bird": _tool(0.2, 60.0, {"1000": 0.1, "5000": 0.4}),
        "bird-default": _tool(0.1, 65.0, {}),
    }
    result = ratios(tools)
    assert result["announce_wire_median_vs_best"] == 80.0  # bird-default 0.1 is the best
    assert result["details"]["announce_wire_median_vs_best"]["best_anchor"] == "bird-default"
    assert result["announce_median_vs_best"] == round(70 / 60, 3)
    assert result["burst_100k_vs_best"] == 15.0  # 5000 routes: 6.0 / 0.4
    assert "quick mode" in result["details"]["burst_100k_vs_best"]["note"]


def test_ratios_are_none_when_a_figure_is_missing() -> None:
    result = ratios({"announcer": {}, "frr": _tool(1, 1, {})})
    assert result["announce_wire_median_vs_best"] is None
    assert result["burst_100k_vs_best"] is None


def test_table_renders_one_row_per_tool() -> None:
    text = render_table(table_rows({"announcer": _tool(8, 70, {"1000": 1.0}), "frr": {}}))
    lines = text.splitlines()
    assert lines[0].startswith("tool")
    assert lines[2].startswith("announcer")
    assert "1.00 (1000)" in lines[2]
    assert lines[3].split()[1] == "-"


def _update(announced: list[str], withdrawn: list[str]) -> bytes:
    def nlri(prefixes: list[str]) -> bytes:
        return b"".join(b"\x20" + IPv4Address(p).packed for p in prefixes)

    attrs = b"\x40\x01\x01\x00"  # ORIGIN IGP: skipped by the parser
    body = struct.pack("!H", len(nlri(withdrawn))) + nlri(withdrawn)
    body += struct.pack("!H", len(attrs)) + attrs + nlri(announced)
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), 2) + body


def test_update_parsing_and_stream_reassembly_across_segments_and_retransmissions() -> None:
    message = _update(["10.0.0.1", "10.0.0.2"], ["10.0.0.9"])
    assert parse_update(message) == (
        [int(IPv4Address("10.0.0.1")), int(IPv4Address("10.0.0.2"))],
        [int(IPv4Address("10.0.0.9"))],
    )
    stream = BgpStream()
    data = message + message
    assert stream.feed(1000, data[:10]) == []
    assert stream.feed(1000, data[:10]) == []  # a retransmission changes nothing
    assert stream.feed(1010, data[10:50]) == [message]
    assert stream.feed(1050, data[50:]) == [message]
    assert stream.gaps == 0


def test_stream_resynchronises_on_the_next_marker_after_a_gap() -> None:
    message = _update(["10.0.0.1"], [])
    stream = BgpStream()
    stream.feed(0, message[:5])
    assert stream.feed(500, b"junk" + message) == [message]
    assert stream.gaps == 1


def test_frame_parsing_keeps_tcp_payloads_only() -> None:
    payload = b"hello"
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + 20 + len(payload),
        0,
        0,
        64,
        6,
        0,
        IPv4Address("10.99.0.2").packed,
        IPv4Address("10.99.0.1").packed,
    )
    tcp = struct.pack("!HHIIBBHHH", 40000, 179, 77, 0, 5 << 4, 0x18, 0, 0, 0)
    frame = b"\0" * 12 + b"\x08\x00" + ip + tcp + payload
    segment = parse_frame(frame)
    assert segment is not None
    assert (segment.sport, segment.dport, segment.seq, segment.payload) == (40000, 179, 77, payload)
    assert parse_frame(frame[:14] + ip[:9] + b"\x11" + ip[10:] + tcp + payload) is None  # UDP
    assert parse_frame(frame[: 14 + 40]) is None  # no payload
    v6_header = struct.pack("!IHBB", 6 << 28, len(tcp) + len(payload), 6, 64)
    host, peer = IPv6Address("fd00:99::2"), IPv6Address("fd00:99::1")
    v6 = b"\0" * 12 + b"\x86\xdd" + v6_header + host.packed + peer.packed + tcp + payload
    segment = parse_frame(v6)
    assert segment is not None
    assert (segment.src, segment.dst, segment.sport, segment.payload) == (
        int(host),
        int(peer),
        40000,
        payload,
    )
    assert parse_frame(v6[:20] + b"\x11" + v6[21:]) is None  # UDP over IPv6


def test_netlink_route_messages_round_trip_through_the_event_parser() -> None:
    prefix = IPv4Address("10.1.2.3")
    added = route_message(RTM_NEWROUTE, prefix, oif=5, seq=1)
    removed = route_message(RTM_DELROUTE, prefix, oif=5, seq=2)
    assert parse_route_events(added + removed, 1.5) == [
        (1.5, True, int(prefix)),
        (1.5, False, int(prefix)),
    ]


def test_probe_log_gives_a_per_stage_breakdown_and_event_to_command_times() -> None:
    log = parse_probe([
        "nl 10.0010 +10.0.0.1",
        "rs 10.0011 ",
        "q 10.0020 announce route 10.0.0.1/32 next-hop self",
        "re 10.0021 ",
        "w 10.0030 1",
        "a 10.0050 1",
        "gc 10.0060 2 0.012500",
        "garbage",
    ])  # fmt: skip
    assert log.gc_pauses == [(10.006, 2, 0.0125)]
    trial = Trial("10.0.0.1", "announce", 10.0, wire=10.0070, fib=10.0670)
    result = breakdown(log, [trial])
    stages = result["announce"]
    assert stages["trials"] == 1
    assert stages["kernel_to_netlink_read"]["median"] == pytest.approx(1.0)
    assert stages["netlink_read_to_line_queued"]["median"] == pytest.approx(1.0)
    assert stages["queued_to_pipe_write"]["median"] == pytest.approx(1.0)
    assert stages["pipe_write_to_exabgp_reply"]["median"] == pytest.approx(2.0)
    assert stages["pipe_write_to_wire"]["median"] == pytest.approx(4.0)
    assert stages["wire_to_leaf_fib"]["median"] == pytest.approx(60.0)
    assert result["withdraw"]["trials"] == 0
    assert result["reconcile_ms"]["n"] == 1
    churn = event_to_command(log, [("10.0.0.1", "announce", 10.0), ("10.9.9.9", "withdraw", 1.0)])
    assert churn["matched"] == 1
    assert churn["netlink_read_to_command_ms"]["median"] == pytest.approx(1.0)


def test_pace_reports_when_lines_were_queued_written_and_answered() -> None:
    log = parse_probe(["q 5.0 x", "q 10.5 announce route 10.0.0.1/32 next-hop self",
                       "w 11.0 1", "a 12.0 1", "rs 10.1 ", "re 10.4 "])  # fmt: skip
    result = pace(log, 10.0, 20.0)
    assert result["lines_queued"] == {"n": 1, "first_s": 0.5, "last_s": 0.5}
    assert result["lines_written"]["first_s"] == 1.0
    assert result["exabgp_replies"]["last_s"] == 2.0
    assert result["reconciles"] == 1
    assert result["reconcile_seconds_total"] == pytest.approx(0.3)
