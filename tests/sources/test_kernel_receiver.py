"""The netlink reader's reused buffer: each datagram comes back whole and alone, and one too
big for the buffer is reported as lost (the caller resyncs), never returned cut short."""

from __future__ import annotations

import socket

import pytest

from announcer.sources.kernel import RECV_SIZE, Overrun, _Receiver


def test_datagrams_come_back_whole_through_one_buffer() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        receiver = _Receiver(ours, Overrun)
        theirs.send(b"a" * 3000)
        theirs.send(b"bc")
        assert receiver.recv() == b"a" * 3000
        assert receiver.recv() == b"bc"  # nothing left over from the longer one


def test_a_datagram_bigger_than_the_buffer_is_lost_not_cut() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * RECV_SIZE)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * RECV_SIZE)
        theirs.send(b"x" * (RECV_SIZE + 1))
        with pytest.raises(Overrun, match=str(RECV_SIZE + 1)):
            _Receiver(ours, Overrun).recv()
