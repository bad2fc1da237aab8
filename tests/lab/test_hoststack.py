"""The lab servers' host stack as the product's units run it (announcer.lab.hoststack)."""

import pytest
import yaml

from announcer.lab.hoststack import (
    BFDD_UNIT,
    bfdd_commands,
    descendants,
    map_word,
    option,
    plain_announcer,
    unit_commands,
    without_graceful_restart,
)
from announcer.lab.namespaces import LabError

PATHS = {
    "/run/anycast-announcer-bfdd": "/lab/sock/server3/bfdd",
    "/etc/anycast-announcer/announcer.yaml": "/lab/run/server3/announcer.yaml",
    "/usr/local/bin/": "/venv/bin/",
}


def test_map_word_maps_paths_and_what_is_under_them_only():
    assert map_word("/run/anycast-announcer-bfdd", PATHS) == "/lab/sock/server3/bfdd"
    assert (
        map_word("/run/anycast-announcer-bfdd/bfdd.sock", PATHS)
        == "/lab/sock/server3/bfdd/bfdd.sock"
    )
    assert map_word("/run/anycast-announcer-bfddx", PATHS) == "/run/anycast-announcer-bfddx"
    assert map_word("/usr/local/bin/announcer", PATHS) == "/venv/bin/announcer"
    assert map_word("frr:frr", PATHS) == "frr:frr"


def test_the_product_bfdd_unit_becomes_the_labs_commands():
    unit = bfdd_commands(PATHS)
    assert unit.runtime_directory == "/lab/sock/server3/bfdd"
    assert unit.runtime_mode == 0o750
    # ExecStartPre: the chown ("+" stripped), then the config generated from announcer.yaml
    assert unit.pre[0] == ("/bin/chown", "frr:frr", "/lab/sock/server3/bfdd")
    assert unit.pre[1] == (
        "/venv/bin/announcer",
        "bfd-config",
        "-c",
        "/lab/run/server3/announcer.yaml",
        "-o",
        "/lab/sock/server3/bfdd/bfdd.conf",
    )
    start = unit.start
    assert start[0] == "/usr/lib/frr/bfdd"
    assert option(start, "-f") == "/lab/sock/server3/bfdd/bfdd.conf"
    assert option(start, "--vty_socket") == "/lab/sock/server3/bfdd"
    assert option(start, "--bfdctl") == "/lab/sock/server3/bfdd/bfdd.sock"
    assert option(start, "-P") == "0"
    assert option(start, "-z") == "/lab/sock/server3/bfdd/no-zebra"
    assert option(start, "--nope") is None
    assert not [w for w in start if w.startswith("/run/anycast-announcer-bfdd")]


def test_a_unit_without_exec_start_is_refused(tmp_path):
    with pytest.raises(LabError, match="ExecStart"):
        unit_commands("[Service]\nExecStartPre=/bin/true\n", {})
    with pytest.raises(LabError, match="cannot read"):
        bfdd_commands({}, tmp_path / "missing.service")
    assert BFDD_UNIT.is_file()


EXABGP = """process announcer {
    run /venv/bin/announcer run -c /lab/run/s/announcer.yaml;
    encoder json;
}

neighbor 10.1.3.0 {
    hold-time 9;
    manual-eor true;                   # End-of-RIB comes from the announcer
    capability {
        graceful-restart 20;           # the leaf keeps our routes
    }
    family {
        ipv4 unicast;
    }
}
"""


def test_the_plain_exabgp_config_has_neither_graceful_restart_nor_manual_eor():
    plain = without_graceful_restart(
        EXABGP, "/lab/run/s/announcer.yaml", "/lab/run/s/announcer-plain.yaml"
    )
    assert "graceful-restart" not in plain
    assert "manual-eor" not in plain
    assert "capability" not in plain
    assert "run /venv/bin/announcer run -c /lab/run/s/announcer-plain.yaml;" in plain
    assert "    hold-time 9;\n    family {\n        ipv4 unicast;" in plain


def test_the_plain_config_refuses_what_it_cannot_turn_off():
    with pytest.raises(LabError, match="nothing to turn off"):
        without_graceful_restart(EXABGP.replace("manual-eor true;", ""), "a", "b")
    with pytest.raises(LabError, match="does not run the announcer"):
        without_graceful_restart(EXABGP, "/elsewhere.yaml", "b")


def test_the_plain_announcer_config_sends_no_end_of_rib():
    doc = yaml.safe_load(plain_announcer("exabgp:\n  manual_eor: true\n  dialect: 5\nbfd: {}\n"))
    assert doc["exabgp"] == {"manual_eor": False, "dialect": 5}
    assert yaml.safe_load(plain_announcer("{}"))["exabgp"] == {"manual_eor": False}


def test_descendants_follow_the_process_tree():
    parents = {10: 1, 11: 10, 12: 11, 13: 1, 14: 13, 15: 11}
    assert descendants(parents, [10]) == {10, 11, 12, 15}
    assert descendants(parents, [13, 99]) == {13, 14, 99}
    assert descendants(parents, []) == set()


@pytest.mark.exabgp
def test_exabgp_accepts_the_lab_config_and_its_plain_variant(tmp_path):
    """ExaBGP 5's own validation of server3's config, with and without graceful restart."""
    import subprocess
    import sys
    from pathlib import Path

    bindir = Path(sys.executable).parent
    lab = Path(__file__).resolve().parents[2] / "labs" / "server3" / "exabgp.conf"
    text = lab.read_text().replace("/usr/local/bin/", f"{bindir}/")
    plain = without_graceful_restart(
        text, "/etc/anycast-announcer/announcer.yaml", str(tmp_path / "announcer-plain.yaml")
    )
    for name, conf in (("exabgp.conf", text), ("exabgp-plain.conf", plain)):
        path = tmp_path / name
        path.write_text(conf)
        proc = subprocess.run(
            [str(bindir / "exabgp"), "validate", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, (name, proc.stdout + proc.stderr)
