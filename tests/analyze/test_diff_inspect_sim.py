"""`tpdump diff` between two dumps that differ by known changes, and `tpdump inspect`
naming a file whose content changed by one byte."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

from tests.integration.helpers import Dump, tpdump_cmd
from tpdump.diff import diff, empty

# The simulator makes fresh keys on every start: its CAs (and the SAML connector's signing
# certificate, the host CA's) differ between any two runs, as after a real rotation.
FRESH_KEYS = {"cert_authority", "saml", "connectors"}


def test_diff_reports_exactly_the_known_changes(healthy: Dump, changed: Dump) -> None:
    d = diff(healthy.files, changed.files)
    inst = d["instances"]
    assert sorted(x.split(" ")[0] for x in inst["added"]) == ["web-2", "web-3"]
    assert inst["removed"] == []
    assert [(x["instance"].split(" ")[0], x["old"], x["new"])
            for x in inst["version_changed"]] == [("edge-1", "v17.4.2", "v17.3.0")]
    objects = {k: v for k, v in d["objects"].items() if k not in FRESH_KEYS}
    assert objects == {"role": {"added": ["contractor"], "removed": [], "changed": []}}
    assert d["problems"] == {"new": ["TPD200"], "gone": []}
    assert sorted(f["id"] for f in d["findings"]["new"]) == ["rbac_role_unused",
                                                             "unreachable_TPD200"]
    assert d["findings"]["gone"] == []


def test_diff_of_a_dump_with_itself_is_empty(healthy: Dump) -> None:
    assert healthy.archive is not None
    assert empty(diff(healthy.files, healthy.files))
    done = subprocess.run(tpdump_cmd("diff", str(healthy.archive), str(healthy.archive)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "instances: +0 -0" in done.stdout


def test_diff_command(healthy: Dump, changed: Dump) -> None:
    assert healthy.archive is not None and changed.archive is not None
    done = subprocess.run(tpdump_cmd("diff", "--json", str(healthy.archive),
                                     str(changed.archive)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["objects"]["role"]["added"] == ["contractor"]


def rewrite_one_byte(src: Path, dst: Path, victim: str) -> None:
    """Copy a tar.gz, flipping one byte of `victim` (manifest.json left as it was)."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for member in tin:
            f = tin.extractfile(member) if member.isfile() else None
            data = f.read() if f is not None else b""
            if member.name.split("/", 1)[-1] == victim:
                data = data[:10] + bytes([data[10] ^ 0x01]) + data[11:]
            tout.addfile(member, io.BytesIO(data) if f is not None else None)


def test_inspect_names_a_file_with_one_byte_changed(healthy: Dump, tmp_path: Path) -> None:
    assert healthy.archive is not None
    ok = subprocess.run(tpdump_cmd("inspect", str(healthy.archive)), capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and "every file matches" in ok.stdout
    victim = next(p for p in sorted(healthy.files) if p.endswith("/version.txt"))
    bad = tmp_path / healthy.archive.name
    rewrite_one_byte(healthy.archive, bad, victim)
    done = subprocess.run(tpdump_cmd("inspect", str(bad)), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert victim in done.stdout and "1 problems" in done.stdout, done.stdout
