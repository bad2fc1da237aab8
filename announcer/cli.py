"""Command line: ``announcer run|plan|check|status|drain|undrain|restart-stack|bfd-config``
and ``announcer exabgp ...`` (handed to announcer.exabgp.start untouched). The only place
that calls sys.exit.

Exit codes follow sysexits.h: 0 ok, 1 runtime failure, 64 usage, 69 unavailable,
78 configuration. stdout belongs to ExaBGP under ``run``; logs always go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from announcer.config import EX_CONFIG, Config, ConfigError, load_config
from announcer.core.decide import decide, desired
from announcer.core.plan import diff
from announcer.core.policy import Decision
from announcer.core.world import World
from announcer.daemon.convert import to_policy
from announcer.daemon.logs import FORMATS, setup_logging
from announcer.exabgp.commands import render
from announcer.model import Prefix, prefix_order

EX_USAGE = 64
EX_UNAVAILABLE = 69
# Where README "Install", the units and exabgp/*.conf put it; the docs' commands omit -c.
DEFAULT_CONFIG = "/etc/anycast-announcer/announcer.yaml"


def plan_report(
    config: Config, world: World, sources: dict[str, str] | None = None, now: float = 0.0
) -> dict[str, Any]:
    """Every prefix with its decision, reason and contributing sources; each lifecycle
    source's status; and the exact lines a fresh start would send."""
    policy = to_policy(config)
    decisions = decide(world, policy, now=now)
    want = desired(decisions.items(), policy)
    lines = [render(c) for c in diff(want, {})]
    rows = [_row(p, decisions[p]) for p in sorted(decisions, key=prefix_order)]
    return {"decisions": rows, "sources": sources or {}, "commands": lines}


def _row(prefix: Prefix, decision: Decision) -> dict[str, Any]:
    return {
        "prefix": str(prefix),
        "announce": decision.announce,
        "reason": decision.reason,
        "sources": list(decision.sources),
    }


def _print_plan(report: dict[str, Any]) -> None:
    for name, status in sorted(report["sources"].items()):
        print(f"# source {name}: {status}")
    for row in report["decisions"]:
        verdict = "announce" if row["announce"] else "withhold"
        print(f"{row['prefix']:<43} {verdict:<8} {row['reason']:<22} {' '.join(row['sources'])}")
    print(f"# {len(report['commands'])} ExaBGP command(s) on a fresh start:")
    for line in report["commands"]:
        print(line)


def _cmd_plan(config: Config, as_json: bool) -> int:
    import asyncio
    import time

    from announcer.daemon.feeds import build_sources, list_sources
    from announcer.sources.kernel import dump_kernel  # I/O only when asked

    world = World()
    world.apply(dump_kernel())
    timeout = config.lifecycle.sync_timeout_seconds
    statuses = asyncio.run(list_sources(build_sources(config), world, timeout, time.monotonic))
    report = plan_report(config, world, statuses, time.monotonic())
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_plan(report)
    return 0


def _cmd_run(config: Config, path: str) -> int:
    from announcer.daemon.app import run

    return run(config, Path(path))


DESCRIPTION = """\
Announce container host routes (/32, /128) into a BGP fabric through ExaBGP.

ExaBGP runs `announcer run` as its API process (see exabgp/exabgp5.conf); the other
commands are for you: check and dry-run a configuration, ask the running announcer what it
announces and why, and take prefixes out of rotation without stopping anything."""

EPILOG = """\
examples:
  announcer check -c /etc/anycast-announcer/announcer.yaml
  announcer plan -c /etc/anycast-announcer/announcer.yaml      # what would be announced, and why
  announcer status -c /etc/anycast-announcer/announcer.yaml    # what is announced now, and why
  announcer drain -c /etc/anycast-announcer/announcer.yaml --all --mode graceful
  announcer undrain -c /etc/anycast-announcer/announcer.yaml --all

exit codes: 0 ok, 1 failure, 64 usage, 69 daemon unreachable, 78 configuration error.
docs: docs/operations.md (runbook), docs/config.md (every key), docs/troubleshooting.md"""

# (name, one line for the list, the command's own description)
COMMANDS = (
    ("run", "run as ExaBGP's API process (started by ExaBGP, not by hand)",
     "Run as ExaBGP's API process: read ExaBGP's replies and events on stdin, write "
     "announce/withdraw lines on stdout, log to stderr. ExaBGP starts it (the `run` line of "
     "exabgp/exabgp5.conf); started by hand it waits for ExaBGP's answers."),
    ("plan", "read every source once; print each prefix with its decision and reason",
     "Read the kernel and every enabled lifecycle source once, and print every prefix with "
     "its decision, its reason and the sources behind it, then the exact ExaBGP lines a "
     "fresh start would send. Changes nothing."),
    ("check", "validate the configuration; exit 0, or 78 naming the problem",
     "Validate the configuration file: exit 0, or 78 with every problem named by file, key "
     "and value. With --probe, also look at the machine: the control socket's directory, "
     "the netlink buffer, the ExaBGP in PATH and, with --exabgp-conf, whether ExaBGP's user "
     "can run the announcer and whether its neighbors and graceful-restart settings agree "
     "(exit 1 if a probe fails)."),
    ("status", "ask the running announcer: every prefix, announced or not, and why",
     "Ask the running announcer over its control socket (root only): every prefix, whether "
     "it is announced, why, since when, and from which sources; drains, sources, neighbors."),
    ("drain", "take prefixes (or --all) out of rotation without stopping anything",
     "Take prefixes (or --all) out of rotation: withdraw them, or with --mode graceful first "
     "announce them with GRACEFUL_SHUTDOWN (65535:0) so peers move traffic away, then "
     "withdraw. Persisted across restarts until undrained or --for runs out."),
    ("undrain", "put drained prefixes (or --all) back",
     "Put drained prefixes (or --all) back into rotation (a maintenance file still drains)."),
    ("restart-stack", "restart ExaBGP and the announcer without losing traffic",
     "Restart ExaBGP and the announcer (upgrade them first) without losing traffic. "
     "--mode drain (default, any fabric): drain everything gracefully, wait until it is "
     "withdrawn, restart, rejoin once the new announcer is up, synced and its checks have "
     "decided. --mode graceful (BGP graceful restart, exabgp.manual_eor): restart at once; "
     "the leaf keeps the routes as stale until the new announcer's End-of-RIB. Prints when "
     "each step happened. docs/operations.md, \"Upgrading the host stack\"."),
    ("exabgp", "start ExaBGP (ARGS as for exabgp) with the verified speed fixes",
     "announcer exabgp [--env FILE] [--python PYTHON] [--stock] ARGS...: run ExaBGP with "
     "ExaBGP's own ARGS through the launcher (docs/adr/0003): speed fixes backported in "
     "memory on the releases they were verified against, stock otherwise. No -c."),
    ("bfd-config", "print the configuration of the host's bfdd (BFD towards the leaves)",
     "Print (or write with -o) the configuration of FRR's bfdd for this host, from bfd.* and "
     "exabgp.neighbors: what packaging/systemd/anycast-announcer-bfdd.service runs."),
)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="announcer",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary, text in COMMANDS:
        cmd = sub.add_parser(name, help=summary, description=text)
        if name == "exabgp":
            continue  # main() hands its arguments to announcer.exabgp.start untouched
        cmd.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
        cmd.add_argument(
            "--log-level", default="info", choices=["debug", "info", "warning", "error"]
        )
        cmd.add_argument(
            "--log-format", default="text", choices=FORMATS, help="stderr: key=value or JSON lines"
        )
        if name in ("plan", "status"):
            cmd.add_argument("--json", action="store_true", help="machine-readable output")
        if name in ("drain", "undrain"):
            cmd.add_argument("prefixes", nargs="*", help="host prefixes, e.g. 10.200.0.1/32")
            cmd.add_argument("--all", action="store_true", help="every prefix")
        if name == "drain":
            cmd.add_argument("--for", dest="for_", metavar="DURATION", help="e.g. 90s, 10m, 2h")
            cmd.add_argument(
                "--mode", choices=["withdraw", "graceful"], help="default: drain.mode of the config"
            )
        if name == "restart-stack":
            _restart_arguments(cmd)
        if name == "check":
            cmd.add_argument("--probe", action="store_true", help="look at the machine too")
            cmd.add_argument("--exabgp-conf", help="ExaBGP's configuration, e.g. exabgp5.conf")
            cmd.add_argument("--exabgp-user", help="the user ExaBGP runs its processes as")
            cmd.add_argument("--exabgp", default="exabgp", help="the ExaBGP program")
        if name == "bfd-config":
            cmd.add_argument("-o", "--output", help="write this file (atomically), not stdout")
    return parser


RESTART_COMMAND = "systemctl restart anycast-announcer-exabgp.service"


def _restart_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--mode", choices=["drain", "graceful"], default="drain")
    cmd.add_argument(
        "--restart-command",
        default=RESTART_COMMAND,
        help=f"what restarts ExaBGP and the announcer (default: {RESTART_COMMAND})",
    )
    cmd.add_argument("--timeout", type=float, default=120.0, help="for each wait (seconds)")
    cmd.add_argument(
        "--settle", type=float, default=1.0, help="seconds after the withdraws, before restarting"
    )
    cmd.add_argument("--json", action="store_true", help="machine-readable output")


def _cmd_restart(config: Config, args: argparse.Namespace) -> int:
    import shlex
    import subprocess

    from announcer.daemon.control import locate, request
    from announcer.daemon.restart import RestartError, Stack

    configured = Path(config.control.socket)

    def restart() -> None:
        subprocess.run(shlex.split(args.restart_command), check=True, timeout=args.timeout)

    stack = Stack(
        lambda payload: request(locate(configured), payload), restart, timeout=args.timeout,
        settle=args.settle,
    )  # fmt: skip
    try:
        steps = stack.run(args.mode)
    except (RestartError, subprocess.SubprocessError, OSError) as exc:
        print(f"announcer: restart-stack failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"mode": steps.mode, "timeline": dict(steps.timeline)}))
    else:
        for step, at in steps.timeline:
            print(f"{at:8.3f}s  {step}")
    return 0


def _cmd_probe(config: Config, args: argparse.Namespace) -> int:
    from announcer.daemon.probe import probe

    conf = Path(args.exabgp_conf) if args.exabgp_conf else None
    findings = probe(config, conf, args.exabgp_user, args.exabgp)
    for finding in findings:
        print(finding)
    return 1 if any(f.level == "fail" for f in findings) else 0


def _cmd_bfd(config: Config, args: argparse.Namespace) -> int:
    import os

    from announcer.daemon.bfd import render_bfdd

    text = render_bfdd(config, str(args.config))
    if not args.output:
        print(text, end="")
        return 0
    target = Path(args.output)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return 0


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"duration {text!r} is not like 90s, 10m or 2h") from None
    if not 0 < value <= 7 * 86400:
        raise ValueError(f"duration {text!r} must be more than 0 and at most 7 days")
    return value


def _cmd_control(config: Config, args: argparse.Namespace) -> int:
    from announcer.daemon.control import ControlError, locate, request
    from announcer.daemon.status import render_table

    payload: dict[str, Any] = {"command": args.command}
    if args.command in ("drain", "undrain"):
        if bool(args.prefixes) == bool(args.all):
            print("announcer: name prefixes or --all (not both)", file=sys.stderr)
            return EX_USAGE
        payload.update(prefixes=args.prefixes, all=args.all)
    if args.command == "drain":
        try:
            payload["for_seconds"] = parse_duration(args.for_) if args.for_ else None
        except ValueError as exc:
            print(f"announcer: {exc}", file=sys.stderr)
            return EX_USAGE
        payload["mode"] = args.mode
    try:
        answer = request(locate(Path(config.control.socket)), payload)
    except ControlError as exc:
        print(f"announcer: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    if not answer.get("ok"):
        print(f"announcer: {answer.get('error', 'refused')}", file=sys.stderr)
        return 1
    if args.command == "status" and not args.json:
        print(render_table(answer))
    elif args.command == "status":
        print(json.dumps(answer, indent=2))
    elif answer.get("persist_error"):
        print(f"announcer: done, but not persisted: {answer['persist_error']}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> None:
    if (sys.argv[1:] if argv is None else argv)[:1] == ["exabgp"]:
        from announcer.exabgp.start import start  # its arguments are ExaBGP's, not ours

        sys.exit(start((sys.argv[1:] if argv is None else argv)[1:]))
    args = _parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"announcer: configuration error:\n{exc}", file=sys.stderr)
        sys.exit(EX_CONFIG)
    if args.command == "check":
        print(f"{args.config}: ok", file=sys.stderr)
        sys.exit(_cmd_probe(config, args) if args.probe else 0)
    if args.command == "plan":
        sys.exit(_cmd_plan(config, args.json))
    if args.command in ("status", "drain", "undrain"):
        sys.exit(_cmd_control(config, args))
    if args.command == "restart-stack":
        sys.exit(_cmd_restart(config, args))
    if args.command == "bfd-config":
        sys.exit(_cmd_bfd(config, args))
    sys.exit(_cmd_run(config, args.config))


if __name__ == "__main__":
    main()
