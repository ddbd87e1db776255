"""Cluster-level files: `objects/tctl_get_<kind>.yaml|.error` and `cluster/` (tctl status,
tctl version, inventory, discovery summary), all redacted."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import anyio

from tpdump.archive import ArchiveWriter
from tpdump.discovery import Discovery
from tpdump.redact import Redactor, dump_yaml
from tpdump.status import ClusterStatus
from tpdump.tctl import TctlResult


def error_text(result: TctlResult, redactor: Redactor) -> str:
    """The `.error` file of a failed tctl call: command, classification, cleaned message."""
    assert result.failure is not None
    lines = [
        f"command: {result.command}",
        f"code: {result.failure.code}",
        f"class: {result.failure.value}",
        f"exit: {result.returncode if result.returncode is not None else 'none (stopped)'}",
        f"seconds: {result.duration:.3f}",
        f"message: {redactor.text(result.message)}",
    ]
    return "\n".join(lines) + "\n"


async def write_objects(archive: ArchiveWriter, discovery: Discovery, kinds: Iterable[str],
                        redactor: Redactor) -> dict[str, dict[str, Any]]:
    """One file per kind; returns the per-kind status for the report."""
    status: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        result = discovery.kind_results.get(kind)
        if result is None:
            continue
        if result.ok:
            raw = discovery.kind_docs.get(kind, [])
            # Thousands of heartbeats take a while to redact and render: off the loop.
            docs, text = await anyio.to_thread.run_sync(_render, redactor, raw)
            await archive.add(f"objects/tctl_get_{kind}.yaml", text,
                              source=f"command: {result.command}")
            status[kind] = {"status": "ok", "count": len(docs),
                            "seconds": round(result.duration, 3)}
        else:
            assert result.failure is not None
            await archive.add(f"objects/tctl_get_{kind}.error", error_text(result, redactor),
                              source=f"command: {result.command}")
            status[kind] = {"status": "failed", "code": result.failure.code,
                            "class": result.failure.value, "message": result.message}
    return status


async def write_preflight(archive: ArchiveWriter, extra: dict[str, TctlResult],
                          status: ClusterStatus | None, redactor: Redactor) -> None:
    """cluster/tctl_status.txt and tctl_version.txt (or their .error files), and the
    parsed status as cluster/status.json."""
    if status is not None:
        await archive.add("cluster/status.json", json.dumps(status.to_json(), indent=1),
                          source="parsed from tctl status")
    for name, result in extra.items():
        if result.ok:
            await archive.add(f"cluster/tctl_{name}.txt",
                              redactor.data(result.stdout), source=f"command: {result.command}")
        else:
            await archive.add(f"cluster/tctl_{name}.error", error_text(result, redactor),
                              source=f"command: {result.command}")


async def write_cluster(archive: ArchiveWriter, discovery: Discovery,
                        extra: dict[str, TctlResult], redactor: Redactor) -> None:
    """cluster/: inventory, stderr of successful calls, and the discovery summary."""
    inventory = discovery.kind_results.get("inventory")
    if inventory is not None:
        if inventory.ok:
            docs = [redactor.document(d) for i in discovery.instances
                    for d in i.records.get("inventory", [])]
            await archive.add("cluster/inventory.json", json.dumps(docs, indent=1),
                              source=f"command: {inventory.command}")
        else:
            await archive.add("cluster/inventory.error", error_text(inventory, redactor),
                              source=f"command: {inventory.command}")
    stderr_lines = [
        f"$ {r.command}\n{redactor.text(r.stderr.strip())}\n"
        for r in [*discovery.kind_results.values(), *extra.values()]
        if r.ok and r.stderr.strip()
    ]
    if stderr_lines:
        await archive.add("cluster/tctl_stderr.txt", "\n".join(stderr_lines),
                          source="tctl stderr of successful calls")
    summary = {
        "instances": len(discovery.instances),
        "excluded_by_selection": discovery.excluded,
        "inventory_supported": discovery.inventory_supported,
        "by_service": _count_services(discovery),
        "instances_list": [i.to_json() for i in discovery.instances],
    }
    await archive.add("cluster/discovery.json", json.dumps(summary, indent=1),
                      source="tpdump discovery")


def _render(redactor: Redactor, raw: list[dict[str, Any]]) -> tuple[list[Any], str]:
    docs = [redactor.document(d) for d in raw]
    return docs, dump_yaml(docs) if docs else ""


def _count_services(discovery: Discovery) -> dict[str, int]:
    counts: dict[str, int] = {}
    for inst in discovery.instances:
        for svc in inst.services:
            counts[svc] = counts.get(svc, 0) + 1
    return dict(sorted(counts.items()))
