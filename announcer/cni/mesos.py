"""Extra (anycast) IPs from what Mesos passes a CNI plugin: its NetworkInfo's labels.

Mesos' network/cni isolator (docs/cni.md, "Passing network labels and port-mapping
information to CNI plugins") adds the task's ``NetworkInfo`` for the network, as the JSON
of the protobuf, to the network config's ``args``::

    "args": {"org.apache.mesos": {"network_info": {
        "name": "routed",
        "labels": {"labels": [{"key": "anycast.ips", "value": "10.9.9.9,fd00:9::9"}]},
        "port_mappings": [{"host_port": 8080, "container_port": 80}]}}}

A Marathon app sets those labels per network (``networks[].labels``). The label
``anycast.ips`` is read with the announcer's grammar (anycast_ips.py); other labels and
fields are not ours and are ignored. Anything malformed on the way to it is an error
naming where and what (quoted), never used. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from announcer.cni.anycast_ips import LABEL, AnycastIPsError, parse_anycast_ips, quote
from announcer.cni.scheme import IPAddress

ARGS_KEY = "org.apache.mesos"
WHERE = f"args.{ARGS_KEY}.network_info.labels.labels"


class MesosArgsError(ValueError):
    """args["org.apache.mesos"] is not in the documented shape, or anycast.ips is bad."""


def _shown(value: object) -> str:
    """A value for an error: a string quoted and escaped, anything else as short JSON."""
    if isinstance(value, str):
        return quote(value)
    text = json.dumps(value, ensure_ascii=True, default=repr)
    return text if len(text) <= 60 else text[:60] + "..."


def _labels(args: Mapping[str, Any]) -> list[Any]:
    """The NetworkInfo's label list ([] when Mesos sent none)."""
    mesos = args.get(ARGS_KEY)
    if mesos is None:
        return []
    if not isinstance(mesos, dict):
        raise MesosArgsError(f"args.{ARGS_KEY}={_shown(mesos)}: must be an object")
    info = mesos.get("network_info", {})
    if not isinstance(info, dict):
        raise MesosArgsError(f"args.{ARGS_KEY}.network_info={_shown(info)}: must be an object")
    labels = info.get("labels", {})
    if not isinstance(labels, dict):
        raise MesosArgsError(
            f"args.{ARGS_KEY}.network_info.labels={_shown(labels)}: must be an object"
        )
    found = labels.get("labels", [])
    if not isinstance(found, list):
        raise MesosArgsError(f"{WHERE}={_shown(found)}: must be a list")
    return found


def extra_ips_from_mesos(args: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    """The addresses of the anycast.ips network label, () if there is none."""
    values = []
    for label in _labels(args):
        if not isinstance(label, dict) or not isinstance(label.get("key"), str):
            raise MesosArgsError(f"{WHERE}: entry {_shown(label)} has no string key")
        if label["key"] != LABEL:
            continue
        value = label.get("value")
        if not isinstance(value, str):
            raise MesosArgsError(f"{WHERE}: label {LABEL}={_shown(value)}: must be a string")
        values.append(value)
    if len(values) > 1:
        raise MesosArgsError(f"{WHERE}: label {LABEL} is given {len(values)} times")
    if not values:
        return ()
    try:
        return parse_anycast_ips(values[0])
    except AnycastIPsError as e:
        raise MesosArgsError(f"{WHERE}: {e}") from None
