"""The stream's slots (flows spread over the period) and stop file, against a UDP echo on
loopback (nothing leaves this machine)."""

import asyncio

from announcer.lab.traffic import run_stream


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(b"inst1 " + data, addr)


async def stream(slots, duration, stop_file=None, stop_after=None):
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    if stop_after is not None:
        loop.call_later(stop_after, stop_file.touch)
    try:
        return await run_stream(
            "127.0.0.1", port, 8, 10.0, duration, slots, str(stop_file) if stop_file else None
        )
    finally:
        transport.close()


def test_slots_spread_the_flows_over_the_period():
    doc = asyncio.run(stream(slots=4, duration=0.35))
    packets = doc["packets"]
    first = sorted({t for t, _, _ in packets})[:4]
    # 4 groups of 2 flows (scheduled 25 ms apart), each with its own send time
    assert [sum(1 for t, _, _ in packets if t == s) for s in first] == [2, 2, 2, 2]
    assert {f for t, f, _ in packets if t == first[0]} == {0, 4}
    assert all(answer == "inst1" for _, _, answer in packets)
    assert doc["slots"] == 4


def test_one_slot_sends_every_flow_at_once():
    packets = asyncio.run(stream(slots=1, duration=0.25))["packets"]
    first = min(t for t, _, _ in packets)
    assert sum(1 for t, _, _ in packets if t == first) == 8


def test_the_stop_file_ends_the_stream_early(tmp_path):
    doc = asyncio.run(stream(slots=2, duration=10.0, stop_file=tmp_path / "stop", stop_after=0.3))
    span = max(t for t, _, _ in doc["packets"]) - min(t for t, _, _ in doc["packets"])
    assert span < 1.0
