"""The self-watchdog: expiry signals only a real ExaBGP parent; EOF means quiet exit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from announcer.daemon.watchdog import is_exabgp, watch


def test_only_an_exabgp_command_line_is_recognised(tmp_path: Path) -> None:
    fake = tmp_path / "exabgp"
    fake.symlink_to(shutil.which("sleep") or "/bin/sleep")
    exabgp = subprocess.Popen([str(fake), "30"])
    pytest_like = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "tests/exabgp"]
    )
    try:
        assert is_exabgp(exabgp.pid)
        assert not is_exabgp(pytest_like.pid)
        assert not is_exabgp(os.getpid())
        assert not is_exabgp(999_999_999)
    finally:
        exabgp.kill()
        pytest_like.kill()


def test_the_launcher_is_recognised_as_exabgp(tmp_path: Path) -> None:
    """`announcer exabgp` execs `python -I .../announcer/exabgp/launcher.py ARGS`."""
    launcher = tmp_path / "announcer" / "exabgp" / "launcher.py"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("import time; time.sleep(30)\n")
    other = tmp_path / "announcer" / "exabgp" / "other.py"
    other.write_text("import time; time.sleep(30)\n")
    running = [
        subprocess.Popen([sys.executable, "-I", str(launcher), "exabgp5.conf"]),
        subprocess.Popen([sys.executable, str(other), "announcer/exabgp/launcher.py"]),
    ]
    try:
        assert is_exabgp(running[0].pid)
        assert not is_exabgp(running[1].pid)
    finally:
        for proc in running:
            proc.kill()


def test_eof_is_a_quiet_exit_and_silence_expires() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"...")
    os.close(write_end)
    assert watch(read_end, os.getpid(), 5.0) == "announcer_exited"
    read_end, write_end = os.pipe()
    try:
        # our own pid is not exabgp: expiry is reported, nothing is signalled
        assert watch(read_end, os.getpid(), 0.2).startswith("none: parent")
    finally:
        os.close(write_end)
