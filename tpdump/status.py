"""Parses `tctl status` in both layouts: the two-column table of Teleport ≤ 16 and the
per-authority table of ≥ 17. Both are Go tabwriter tables with space padding."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_PROGRESS = ("rotating", "rolling back", "init", "update_clients", "update_servers")


@dataclass
class AuthorityKey:
    protocol: str
    status: str
    algorithm: str
    storage: str


@dataclass
class Authority:
    """One certificate authority and its rotation state."""

    type: str
    rotation: str
    keys: list[AuthorityKey] = field(default_factory=list)

    @property
    def rotating(self) -> bool:
        low = self.rotation.lower()
        return any(word in low for word in _PROGRESS)


@dataclass
class ClusterStatus:
    layout: str  # "v16" (two columns) or "v17" (per-authority table)
    cluster: str = ""
    version: str = ""
    ca_pins: list[str] = field(default_factory=list)
    authorities: list[Authority] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for auth, obj in zip(data["authorities"], self.authorities, strict=True):
            auth["rotating"] = obj.rotating
        return data


_HEAD_V17 = re.compile(r"^(Cluster|Version|CA pins):\s*(.*?)\s*$")


def parse_status(text: str) -> ClusterStatus | None:
    """The structured content of `tctl status`, or None when it is neither layout."""
    lines = [line.rstrip() for line in text.splitlines()]
    if any(line.startswith("Cluster:") for line in lines):
        return _parse_v17(lines)
    if any(line.startswith("Cluster ") for line in lines):
        return _parse_v16(lines)
    return None


def _parse_v16(lines: list[str]) -> ClusterStatus:
    status = ClusterStatus("v16")
    cluster_line = next(line for line in lines if line.startswith("Cluster "))
    match = re.match(r"^Cluster\s+", cluster_line)
    assert match is not None
    col = match.end()  # every row's value starts in the same column
    for line in lines:
        if not line.strip():
            continue
        key, value = line[:col].strip(), line[col:].strip()
        if key == "Cluster":
            status.cluster = value
        elif key == "Version":
            status.version = value
        elif key == "CA pin":
            status.ca_pins.append(value)
        elif key.endswith(" CA"):
            status.authorities.append(Authority(key[:-3], value))
    return status


def _parse_v17(lines: list[str]) -> ClusterStatus:
    status = ClusterStatus("v17")
    header_at = None
    last_head = ""
    for i, line in enumerate(lines):
        match = _HEAD_V17.match(line)
        if match:
            last_head = match.group(1)
            value = match.group(2)
            if last_head == "Cluster":
                status.cluster = value
            elif last_head == "Version":
                status.version = value
            elif value:
                status.ca_pins.append(value)
        elif line.startswith(" ") and last_head == "CA pins" and line.strip():
            status.ca_pins.append(line.strip())
        elif line.startswith("authority"):
            header_at = i
            break
        elif not line.strip():
            last_head = ""
    if header_at is None or header_at + 1 >= len(lines):
        return status
    dashes = lines[header_at + 1]
    starts = [m.start() for m in re.finditer(r"-+", dashes)]
    if not starts:  # not the table's rule line: no columns to cut by
        return status
    current: Authority | None = None
    for line in lines[header_at + 2:]:
        if not line.strip():
            continue
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        cells += [""] * (6 - len(cells))
        kind, rotation, protocol, state, algorithm, storage = cells[:6]
        if kind:
            current = Authority(kind, rotation)
            status.authorities.append(current)
        if current is not None and protocol:
            current.keys.append(AuthorityKey(protocol, state, algorithm, storage))
    return status
