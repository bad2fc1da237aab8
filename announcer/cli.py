"""Command line: ``announcer run|plan|check -c FILE``. The only place that exits.

Exit codes follow sysexits.h: 0 ok, 1 runtime failure, 64 usage, 78 configuration.
stdout belongs to ExaBGP under ``run``; logs always go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from announcer.config import EX_CONFIG, Config, ConfigError, load_config, to_policy
from announcer.core.plan import diff
from announcer.core.policy import Decision, decide, desired
from announcer.core.world import World
from announcer.exabgp.commands import render
from announcer.logs import FORMATS, setup_logging
from announcer.model import Prefix

EX_USAGE = 64
EX_UNAVAILABLE = 69


def _sort_key(prefix: Prefix) -> tuple[int, int, int]:
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


def plan_report(
    config: Config, world: World, sources: dict[str, str] | None = None, now: float = 0.0
) -> dict[str, Any]:
    """Every prefix with its decision, reason and contributing sources; each lifecycle
    source's status; and the exact lines a fresh start would send."""
    policy = to_policy(config)
    decisions = decide(world, policy, now=now)
    want = desired(decisions.values(), policy)
    lines = [render(c) for c in diff(want, {}, may_withdraw=False)]
    rows = [_row(decisions[p]) for p in sorted(decisions, key=_sort_key)]
    return {"decisions": rows, "sources": sources or {}, "commands": lines}


def _row(decision: Decision) -> dict[str, Any]:
    return {
        "prefix": str(decision.prefix),
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

    from announcer.runtime_sources import build_sources, list_sources
    from announcer.sources.kernel import dump_kernel  # I/O only when asked

    world = World()
    world.apply(dump_kernel())
    timeout = config.lifecycle.sync_timeout_seconds
    statuses = asyncio.run(list_sources(build_sources(config), world, timeout))
    report = plan_report(config, world, statuses, time.monotonic())
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_plan(report)
    return 0


def _cmd_run(config: Config, path: str) -> int:
    from announcer.runtime import run

    return run(config, Path(path))


COMMANDS = (
    ("run", "run as ExaBGP's API process (stdin/stdout are ExaBGP's pipe)"),
    ("plan", "read every source once; print each prefix with its decision and reason"),
    ("check", "validate the configuration; exit 0, or 78 naming the problem"),
    ("status", "ask the running announcer: every prefix, announced or not, and why"),
    ("drain", "take prefixes (or --all) out of rotation without stopping anything"),
    ("undrain", "put drained prefixes (or --all) back"),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="announcer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in COMMANDS:
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("-c", "--config", required=True, help="YAML configuration file")
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
            cmd.add_argument("--mode", choices=["withdraw", "graceful"], help="default: config")
    return parser


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
    from announcer.control import ControlError, request
    from announcer.status import render_table

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
        answer = request(Path(config.control.socket), payload)
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
    args = _parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"announcer: configuration error:\n{exc}", file=sys.stderr)
        sys.exit(EX_CONFIG)
    if args.command == "check":
        print(f"{args.config}: ok", file=sys.stderr)
        sys.exit(0)
    if args.command == "plan":
        sys.exit(_cmd_plan(config, args.json))
    if args.command in ("status", "drain", "undrain"):
        sys.exit(_cmd_control(config, args))
    sys.exit(_cmd_run(config, args.config))


if __name__ == "__main__":
    main()
