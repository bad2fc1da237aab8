"""A stand-in for ``systemctl`` where systemd is not PID 1: the README tests bind-mount it
over /usr/bin/systemctl inside their private mount namespace (tests/literal.py).

It does what systemd would do for the keys the shipped units and Debian's exabgp.service
use, and nothing more:

* ``daemon-reload``, ``preset``: nothing (unit files are read at every start);
* ``enable [--now] UNIT``, ``disable [--now]``, ``start``, ``restart``, ``stop``,
  ``is-active`` (enabling is not recorded: there is no boot to start units at);
* unit file ``/etc/systemd/system/UNIT``, else ``/lib/systemd/system/UNIT``, then the
  drop-ins ``/etc/systemd/system/UNIT.d/*.conf`` in name order; an empty assignment
  (``ExecStart=``) resets the list, as in systemd;
* ``Environment=``, ``User=``, ``Group=``, ``SupplementaryGroups=``, ``UMask=``,
  ``AmbientCapabilities=``, ``CapabilityBoundingSet=``, ``NoNewPrivileges=`` (through
  ``setpriv``), ``RuntimeDirectory=``, ``StateDirectory=``, ``ConfigurationDirectory=``
  (and their ``*Mode=``, and the ``*_DIRECTORY`` variables), ``ExecStartPre=`` (``-``:
  failure ignored, ``+``: full privileges), ``ExecStart=`` (Type=simple: started, not
  waited for), from ``/`` with systemd's default PATH.

Not done: the sandboxing (ProtectSystem=, ReadWritePaths=, PrivateTmp=, SystemCallFilter=,
RestrictAddressFamilies= ...), Restart=, the journal: a unit's output goes to
``$UNITRUN_DIR/UNIT.log`` and its main pid to ``$UNITRUN_DIR/UNIT.pid``.

Standard library only: it runs as ``/usr/bin/python3 -I`` inside the namespace.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

UNIT_DIRS = (Path("/etc/systemd/system"), Path("/lib/systemd/system"))
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LISTS = {"Environment", "ExecStartPre", "ExecStart", "SupplementaryGroups", "AmbientCapabilities",
         "CapabilityBoundingSet", "RuntimeDirectory", "StateDirectory", "ConfigurationDirectory"}  # fmt: skip
STOP_TIMEOUT = 30.0


class UnitError(Exception):
    """The unit cannot be found or started; the message says which and why."""


def _read(path: Path, settings: dict[str, list[str]]) -> None:
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section != "[Service]" or "=" not in line:
            continue
        key, _, value = (part.strip() for part in line.partition("="))
        if key in LISTS and not value:
            settings[key] = []
        elif key in LISTS:
            settings.setdefault(key, []).append(value)
        else:
            settings[key] = [value]


def load(unit: str) -> dict[str, list[str]]:
    """The [Service] settings of ``unit``: its file, then its drop-ins."""
    name = unit if "." in unit else f"{unit}.service"
    found = [d / name for d in UNIT_DIRS if (d / name).is_file()]
    if not found:
        raise UnitError(f"Unit {name} not found.")
    settings: dict[str, list[str]] = {}
    _read(found[0], settings)
    for dropin in sorted((UNIT_DIRS[0] / f"{name}.d").glob("*.conf")):
        _read(dropin, settings)
    return settings


def _one(settings: dict[str, list[str]], key: str, default: str = "") -> str:
    return settings.get(key, [default])[-1]


def _words(settings: dict[str, list[str]], key: str) -> list[str]:
    return [word for value in settings.get(key, []) for word in value.split()]


def environment(settings: dict[str, list[str]], dirs: dict[str, str]) -> dict[str, str]:
    env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8"}
    user = _one(settings, "User", "root")
    entry = pwd.getpwnam(user)
    env.update(HOME=entry.pw_dir, USER=user, LOGNAME=user, SHELL=entry.pw_shell)
    env.update(dirs)
    for value in settings.get("Environment", []):
        for assignment in shlex.split(value):
            key, _, val = assignment.partition("=")
            env[key] = val
    return env


def make_directories(settings: dict[str, list[str]]) -> dict[str, str]:
    """RuntimeDirectory=, StateDirectory=, ConfigurationDirectory=: made as systemd makes
    them (owned by User=, except the configuration one); their *_DIRECTORY variables."""
    user = _one(settings, "User", "root")
    group = _one(settings, "Group", "") or grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    variables = {}
    for key, root, owned in (("RuntimeDirectory", "/run", True), ("StateDirectory", "/var/lib", True),
                             ("ConfigurationDirectory", "/etc", False)):  # fmt: skip
        paths = [f"{root}/{name}" for name in _words(settings, key)]
        mode = int(_one(settings, f"{key}Mode", "0755"), 8)
        for path in paths:
            os.makedirs(path, exist_ok=True)
            os.chmod(path, mode)
            if owned:
                os.chown(path, uid, gid)
        if paths:
            variables[f"{key.removesuffix('Directory').upper()}_DIRECTORY"] = ":".join(paths)
    return variables


def _caps(words: list[str]) -> str:
    return ",".join(["-all", *(f"+{w.lower().removeprefix('cap_')}" for w in words)])


def privileges(settings: dict[str, list[str]]) -> list[str]:
    """``setpriv`` options for User=, Group=, the capabilities and NoNewPrivileges=."""
    user = _one(settings, "User", "root")
    group = _one(settings, "Group", "") or grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    argv = ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups"]
    if extra := _words(settings, "SupplementaryGroups"):
        wanted = {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
        wanted |= {grp.getgrnam(name).gr_gid for name in extra}
        argv[-1] = f"--groups={','.join(str(g) for g in sorted(wanted))}"
    ambient = _words(settings, "AmbientCapabilities")
    if "CapabilityBoundingSet" in settings:
        argv.append(f"--bounding-set={_caps(_words(settings, 'CapabilityBoundingSet'))}")
    if ambient:
        argv += [f"--inh-caps={_caps(ambient)}", f"--ambient-caps={_caps(ambient)}"]
    if _one(settings, "NoNewPrivileges") in ("yes", "true", "1"):
        argv.append("--no-new-privs")
    return [*argv, "--"]


def _command(line: str, settings: dict[str, list[str]]) -> tuple[list[str], bool]:
    """argv (with setpriv unless ``+``) and whether a failure is ignored (``-``)."""
    ignore = full = False
    while line[:1] in ("-", "+", "@", ":", "!"):
        ignore |= line[0] == "-"
        full |= line[0] == "+"
        line = line[1:]
    argv = shlex.split(line)
    return (argv if full else [*privileges(settings), *argv]), ignore


def _files(unit: str) -> tuple[Path, Path]:
    base = Path(os.environ["UNITRUN_DIR"])
    base.mkdir(parents=True, exist_ok=True)
    return base / f"{unit}.pid", base / f"{unit}.log"


def _main_pid(unit: str) -> int | None:
    pidfile, _ = _files(unit)
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    stat = Path(f"/proc/{pid}/stat").read_text()
    return None if stat.rsplit(")", 1)[1].split()[0] == "Z" else pid


def start(unit: str) -> None:
    if _main_pid(unit) is not None:
        return
    settings = load(unit)
    dirs = make_directories(settings)
    env = environment(settings, dirs)
    umask = int(_one(settings, "UMask", "0022"), 8)
    pidfile, logfile = _files(unit)
    with logfile.open("ab") as log:
        for line in settings.get("ExecStartPre", []):
            argv, ignore = _command(line, settings)
            code = subprocess.run(argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, umask=umask, check=False).returncode  # fmt: skip
            if code and not ignore:
                raise UnitError(f"Job for {unit} failed: ExecStartPre {line!r} exited {code}")
        (line,) = settings["ExecStart"]
        argv, _ = _command(line, settings)
        proc = subprocess.Popen(argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, umask=umask, start_new_session=True)  # fmt: skip
    pidfile.write_text(str(proc.pid))


def _session(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def stop(unit: str) -> None:
    """SIGTERM to every process of the unit (its session) at once, SIGKILL at the deadline."""
    pid = _main_pid(unit)
    if pid is None:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for member in _session(pid):
            os.kill(member, sig)
        while _session(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for processes to exit, as systemd does
        if not _session(pid):
            break
    for directory in _words(load(unit), "RuntimeDirectory"):
        subprocess.run(["rm", "-rf", f"/run/{directory}"], check=False)


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("-")]  # --now, --quiet, --root=/ ...
    if "--version" in argv:
        print("systemctl stand-in (tests/unitrun.py)")
        return 0
    if not args:
        sys.stderr.write(f"systemctl stand-in: no command in {argv}\n")
        return 1
    command, units = args[0], args[1:]
    try:
        for unit in units:
            if command == "restart":
                stop(unit)
            if command in ("start", "restart") or (command == "enable" and "--now" in argv):
                start(unit)
            elif command == "stop" or (command == "disable" and "--now" in argv):
                stop(unit)
            elif command == "is-active":
                return 0 if _main_pid(unit) is not None else 3
    except (UnitError, KeyError, OSError, ValueError) as exc:
        sys.stderr.write(f"systemctl stand-in: {exc}\n")
        return 1
    if command not in (
        "daemon-reload",
        "enable",
        "disable",
        "preset",
        "start",
        "restart",
        "stop",
        "is-active",
    ):
        sys.stderr.write(f"systemctl stand-in: {command!r} is not supported\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
