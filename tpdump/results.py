"""Results of a run as data: per node, per item, per tctl kind. The report is made from
these and nothing else."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from tpdump.archive import safe_component
from tpdump.discovery import Instance, is_uuid


class NodeStatus(Enum):
    OK = "ok"
    PARTIAL = "partial"
    FAILED = "failed"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"
    NOT_STARTED = "not started"


@dataclass(slots=True)
class ItemResult:
    """One collected item of a node: a file or a command."""

    name: str
    status: str  # ok | failed | truncated | missing
    path: str | None = None
    bytes: int = 0
    seconds: float = 0.0
    code: str | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


@dataclass
class NodeResult:
    """What happened with one instance."""

    instance: Instance
    status: NodeStatus = NodeStatus.NOT_STARTED
    code: str | None = None
    reason: str = ""
    detail: str = ""
    started_at: float | None = None
    connect_seconds: float | None = None
    seconds: float | None = None
    items: list[ItemResult] = field(default_factory=list)
    clock_offset_s: float | None = None
    requests: int | None = None  # SSH requests (execs, SFTP operations, forwards) made
    facts: dict[str, Any] = field(default_factory=dict)
    # node.json, zlib-compressed, once the node is done (its facts and items released)
    rendered: bytes | None = None

    @property
    def dir(self) -> str:
        return node_dir(self.instance.uuid)

    def fail(self, code: str, reason: str, detail: str) -> None:
        """Record the first failure as the node's reason (later ones are consequences)."""
        if self.code is None:
            self.code, self.reason, self.detail = code, reason, detail

    def to_json(self) -> dict[str, Any]:
        inst = self.instance
        return {
            "uuid": inst.uuid,
            "hostname": inst.hostname,
            "services": sorted(inst.services),
            "version": inst.version,
            "target": str(inst.target) if inst.target else None,
            "tunnel": inst.tunnel,
            "status": self.status.value,
            "code": self.code,
            "reason": self.reason or None,
            "detail": self.detail or None,
            "started_at": self.started_at,
            "connect_seconds": _round(self.connect_seconds),
            "seconds": _round(self.seconds),
            "clock_offset_s": _round(self.clock_offset_s),
            "requests": self.requests,
            "facts": self.facts,
            "items": [i.to_json() for i in self.items],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def node_dir(host_id: str) -> str:
    """`nodes/<uuid>`; a host ID that is not a clean UUID gets a hash suffix, so two
    hostile IDs can never share a directory."""
    clean = safe_component(host_id)
    if clean != host_id or not is_uuid(host_id):
        clean = f"{clean[:60]}-{hashlib.sha256(host_id.encode()).hexdigest()[:12]}"
    return f"nodes/{clean}"
