"""A containerlab topology file parsed into nodes and links (pure: no I/O but reading text).

Only the subset the lab uses is modelled: ``name``, ``topology.defaults/kinds/groups/nodes``
(kind, image, binds, exec, labels, group) and ``topology.links`` in the brief form
(``endpoints: ["a:eth1", "b:eth1"]``). Precedence follows containerlab: node > group > kind >
defaults, a node's list replacing (not extending) an inherited one. Bind sources are relative
to the topology file's directory, as containerlab resolves them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_INHERITED = ("kind", "image", "binds", "exec", "labels")


class TopologyError(Exception):
    """The topology file cannot be used; the message names the key and the value."""


@dataclass(frozen=True)
class Bind:
    """``source:target[:mode]`` with the source resolved against the topology directory."""

    source: Path
    target: str
    mode: str = ""


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    image: str = ""
    group: str = ""
    binds: tuple[Bind, ...] = ()
    exec: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def role(self) -> str:
        return self.labels.get("role", "")

    def bind_source(self, target: str) -> Path | None:
        """The host file bound to target inside the node, if any."""
        return next((b.source for b in self.binds if b.target == target), None)


@dataclass(frozen=True)
class Endpoint:
    node: str
    interface: str


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint


@dataclass(frozen=True)
class Topology:
    name: str
    directory: Path
    nodes: dict[str, Node]
    links: tuple[Link, ...]

    def by_role(self, role: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.role == role]

    def links_of(self, node: str) -> list[tuple[Endpoint, Endpoint]]:
        """(this end, other end) for every link of node."""
        found = []
        for link in self.links:
            if link.a.node == node:
                found.append((link.a, link.b))
            elif link.b.node == node:
                found.append((link.b, link.a))
        return found


def load_topology(path: Path) -> Topology:
    return parse_topology(path.read_text(), path.resolve().parent)


def parse_topology(text: str, directory: Path) -> Topology:
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise TopologyError("the topology file is not a mapping")
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise TopologyError(f"name {name!r}: must be a non-empty name (letters, digits, _.-)")
    topo = _mapping(doc, "topology")
    defaults = _mapping(topo, "defaults", required=False)
    kinds = _mapping(topo, "kinds", required=False)
    groups = _mapping(topo, "groups", required=False)
    nodes_doc = _mapping(topo, "nodes")
    nodes = {
        node_name: _node(str(node_name), spec or {}, defaults, kinds, groups, directory)
        for node_name, spec in nodes_doc.items()
    }
    links = tuple(_link(i, spec, nodes) for i, spec in enumerate(topo.get("links") or []))
    _check_interfaces_unique(links)
    return Topology(name, directory, nodes, links)


def _mapping(doc: dict[str, Any], key: str, *, required: bool = True) -> dict[str, Any]:
    value = doc.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise TopologyError(f"{key}: expected a mapping, got {value!r}")
    return value


def _node(
    name: str,
    spec: dict[str, Any],
    defaults: dict[str, Any],
    kinds: dict[str, Any],
    groups: dict[str, Any],
    directory: Path,
) -> Node:
    if not _NAME.match(name):
        raise TopologyError(f"nodes.{name}: not a valid node name")
    group = str(spec.get("group", ""))
    if group and group not in groups:
        raise TopologyError(f"nodes.{name}.group {group!r}: no such group")
    merged: dict[str, Any] = {}
    layers = [defaults, groups.get(group, {}) or {}, spec]
    kind = next((str(layer["kind"]) for layer in reversed(layers) if "kind" in layer), "")
    if not kind:
        raise TopologyError(f"nodes.{name}: no kind (set it on the node, its group or defaults)")
    for layer in (defaults, kinds.get(kind, {}) or {}, groups.get(group, {}) or {}, spec):
        merged.update({k: v for k, v in layer.items() if k in _INHERITED})
    binds = tuple(_bind(name, text, directory) for text in merged.get("binds") or [])
    execs = merged.get("exec") or []
    if not all(isinstance(e, str) for e in execs):
        raise TopologyError(f"nodes.{name}.exec: every entry must be a string")
    labels = {str(k): str(v) for k, v in (merged.get("labels") or {}).items()}
    return Node(name, kind, str(merged.get("image", "")), group, binds, tuple(execs), labels)


def _bind(node: str, text: object, directory: Path) -> Bind:
    if not isinstance(text, str) or text.count(":") not in (1, 2):
        raise TopologyError(f"nodes.{node}.binds {text!r}: expected source:target[:mode]")
    source, target, *mode = text.split(":")
    path = Path(source) if Path(source).is_absolute() else directory / source
    return Bind(path, target, mode[0] if mode else "")


def _endpoint(index: int, text: object, nodes: dict[str, Node]) -> Endpoint:
    if not isinstance(text, str) or text.count(":") != 1:
        raise TopologyError(f"links[{index}] endpoint {text!r}: expected node:interface")
    node, interface = text.split(":")
    if node not in nodes:
        raise TopologyError(f"links[{index}] endpoint {text!r}: no node {node!r}")
    if not _IFNAME.match(interface):
        raise TopologyError(f"links[{index}] endpoint {text!r}: bad interface name")
    return Endpoint(node, interface)


def _link(index: int, spec: object, nodes: dict[str, Node]) -> Link:
    endpoints = spec.get("endpoints") if isinstance(spec, dict) else None
    if not isinstance(endpoints, list) or len(endpoints) != 2:
        raise TopologyError(f"links[{index}]: expected endpoints: [a:ifname, b:ifname]")
    return Link(_endpoint(index, endpoints[0], nodes), _endpoint(index, endpoints[1], nodes))


def _check_interfaces_unique(links: tuple[Link, ...]) -> None:
    seen: set[Endpoint] = set()
    for link in links:
        for end in (link.a, link.b):
            if end in seen:
                raise TopologyError(f"{end.node}:{end.interface} is used by two links")
            seen.add(end)
