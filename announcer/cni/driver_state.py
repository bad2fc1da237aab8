"""What the Docker driver remembers, and whom it asks: its state file, dockerd's endpoints.

Both outlive a driver restart: the state file holds the endpoints (with their extra IPs)
the driver made; dockerd's Engine API says which of them still exist.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

from announcer.cni.libnetwork import Endpoint

log = logging.getLogger("announcer.docker_driver")

DEFAULT_DOCKER_HOST = "unix:///run/docker.sock"


class DockerUnavailable(Exception):
    """dockerd could not be asked which endpoints exist."""


class StateFile:
    """endpoint id -> Endpoint, as JSON, replaced atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Endpoint]:
        try:
            doc = json.loads(self.path.read_text())
            return {k: Endpoint.from_json(v) for k, v in doc["endpoints"].items()}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError) as e:
            log.warning("state_unreadable path=%s error=%s", self.path, e)
            return {}

    def save(self, endpoints: Mapping[str, Endpoint]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        doc = {"endpoints": {k: asdict(v) for k, v in endpoints.items()}}
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


@dataclass
class DockerView:
    """Asks dockerd (Engine API over its unix socket) which endpoints a network has."""

    host: str = DEFAULT_DOCKER_HOST
    timeout: float = 5.0

    def endpoints(self, network_ids: Iterable[str]) -> dict[str, set[str]]:
        """network id -> its endpoint ids (empty for a network Docker no longer has)."""
        return {net: self._network_endpoints(net) for net in set(network_ids)}

    def _network_endpoints(self, network_id: str) -> set[str]:
        if not self.host.startswith("unix://"):
            raise DockerUnavailable(f"--docker-host {self.host}: only unix:// is supported")
        conn = _UnixHTTPConnection(self.host.removeprefix("unix://"), self.timeout)
        try:
            conn.request("GET", f"/networks/{quote(network_id, safe='')}")
            resp = conn.getresponse()
            body = resp.read()
        except OSError as e:
            raise DockerUnavailable(f"{self.host}: {e}") from e
        finally:
            conn.close()
        if resp.status == 404:
            return set()
        if resp.status != 200:
            raise DockerUnavailable(f"{self.host}: GET /networks/{network_id}: {resp.status}")
        containers = json.loads(body).get("Containers") or {}
        return {str(c.get("EndpointID")) for c in containers.values()}
