"""Files tpdump reads that lead into a credential store are refused (TPD214), whatever
their content; listings keep directories with names that are not UTF-8 and show control
characters escaped. Over SSH (the batch and SFTP, against simulated hostile nodes) and
on the local file system (`tpdump node --sysroot`)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml

from tests.integration.helpers import find_archive, instances, read_archive, simulated, tpdump_cmd
from tests.integration.test_node_local import UUID, make_sysroot
from tpdump.batch import Want
from tpdump.collectors.node import parse_find
from tpdump.hosts import (
    CREDENTIAL_STORES,
    ItemError,
    LocalHost,
    SSHHost,
    credential_store,
    shown_name,
)

SCENARIO: dict[str, Any] = {
    "cluster_name": "creds.example.com",
    "teleport_version": "17.4.2",
    "seed": 5,
    "groups": [
        {"name": "web", "count": 1, "services": ["node"]},
        {"name": "hostile", "count": 2, "services": ["node"], "fault": "hostile"},
    ],
    "secrets": {"plant": True},
}
DATA_DIR = "/var/lib/teleport"


def test_the_list_names_the_usual_stores_and_spares_what_tpdump_reads() -> None:
    for path in ("/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d/ops",
                 "/root/.ssh/id_ed25519", "/home/ann/.ssh/authorized_keys",
                 "/srv/x/.ssh/config", "/etc/ssh/ssh_host_ed25519_key",
                 "/home/ann/.tsh/keys/proxy/ann", "/var/lib/teleport/node.key",
                 "/var/lib/teleport/token", "/etc/x/../shadow"):
        assert credential_store(path), path
    for path in ("/etc/teleport.yaml", "/var/lib/teleport/proc/sqlite.db",
                 "/var/log/teleport/teleport.log", "/etc/systemd/system/teleport.service",
                 "/etc/systemd/system/teleport.service.d/override.conf", "/etc/hostname",
                 "/etc/ssh/ssh_host_ed25519_key.pub", "/usr/lib/os-release"):
        assert credential_store(path) is None, path
    assert len(CREDENTIAL_STORES) == len(set(CREDENTIAL_STORES))


def test_names_are_shown_on_one_line() -> None:
    assert shown_name("/var/lib/teleport/ok name") == "/var/lib/teleport/ok name"
    assert shown_name("/d/new\nf 1 1.0 /etc/shadow") == "/d/new\\nf 1 1.0 /etc/shadow"
    assert shown_name("/d/bad-\udcff\udcfe") == "/d/bad-\\xff\\xfe"
    assert shown_name("/d/a\\b\x1b[31m\x00") == "/d/a\\\\b\\x1b[31m\\x00"
    entries = parse_find("f 8 1.5 /d/new\nf 1 1.0 /etc/shadow\0d 4096 2.0 /d/sub\0", "/d", 10)
    assert [e.path for e in entries] == ["/d/new\nf 1 1.0 /etc/shadow", "/d/sub"]


# --- over SSH, against simulated hostile nodes ------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any],
                                                                     dict[str, Any]]]:
    with simulated(tmp_path_factory.mktemp("creds"), SCENARIO) as state:
        config = yaml.safe_load((state / "tpdump.yaml").read_text())
        yield config, {i["hostname"]: i for i in instances(state)}


@asynccontextmanager
async def ssh_host(sim: tuple[dict[str, Any], dict[str, Any]],
                   hostname: str) -> AsyncIterator[SSHHost]:
    config, insts = sim
    key = asyncssh.read_private_key(config["ssh_key"])
    cert = asyncssh.read_certificate(config["ssh_key"] + "-cert.pub")
    opts: dict[str, Any] = {"username": config["ssh_user"], "client_keys": [(key, cert)],
                            "known_hosts": config["known_hosts"], "connect_timeout": 5}
    host, _, port = config["proxy"].rpartition(":")
    inst = insts[hostname]
    target = inst["addr"].rpartition(":")[0] if inst["addr"] else inst["uuid"]
    async with asyncssh.connect(host, int(port), **opts) as proxy, \
            asyncssh.connect(target, 3022, tunnel=proxy, **opts) as conn:
        node = SSHHost(conn, 4)
        try:
            yield node
        finally:
            node.close()


@pytest.mark.anyio
async def test_batch_reads_into_credential_stores_are_refused(
        sim: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """A batch read through a link into a credential store (the process-state database
    linked to /etc/shadow) is refused from the batch's own answer: no further request,
    no content. A healthy node's reads of the same paths are untouched."""
    db = f"{DATA_DIR}/proc/sqlite.db"
    wants = [Want("head", (db,), 1 << 20), Want("head", ("/etc/teleport.yaml",), 1 << 20)]
    async with ssh_host(sim, "hostile-2") as node:
        assert await node.prefetch(wants, 10) == 2
        with pytest.raises(ItemError) as err:
            await node.read(db, 1 << 20)
        assert err.value.failure.code == "TPD214"
        assert "/etc/shadow" in err.value.failure.detail
        data, _ = await node.read("/etc/teleport.yaml", 1 << 20)
        assert b"version: v3" in data
        assert node.requests == 1 and node.sftp is None  # all from the one batch
        await node.prefetch([Want("real", ("/etc/hostname",)), Want("real", ("/x",))], 10)
        assert await node.known_real("/etc/hostname") == ["/etc/hostname"]
        assert await node.known_real("/x") == ["/etc/shadow"]
    async with ssh_host(sim, "web-1") as node:
        await node.prefetch(wants, 10)
        data, _ = await node.read(db, 1 << 20)
        assert data.startswith(b"SQLite format 3\0")
        assert node.requests == 1


@pytest.mark.anyio
async def test_sftp_reads_into_credential_stores_are_refused(
        sim: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """By SFTP (no batch): a relative config path that climbs to a link to /etc/shadow, a
    data_dir file linked to a private key, and a credential store named directly are all
    refused; an ordinary file is read."""
    async with ssh_host(sim, "hostile-2") as node:
        for path, store in (("../../x", "/etc/shadow"),
                            (f"{DATA_DIR}/host_uuid", "*/.ssh/*"),
                            ("/etc/shadow", "/etc/shadow"),
                            ("/root/.ssh/id_ed25519", "*/.ssh/*")):
            with pytest.raises(ItemError) as err:
                await node.read(path, 1 << 20)
            assert err.value.failure.code == "TPD214", path
            assert store in err.value.failure.detail, err.value.failure.detail
        data, _ = await node.read("/etc/os-release", 4096)
        assert b"PRETTY_NAME" in data


@pytest.mark.anyio
async def test_sftp_listing_keeps_names_that_are_not_utf8(
        sim: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """The SFTP listing (the fallback where GNU find does not work) lists a directory
    holding a name that is not UTF-8 (before: the whole directory was dropped); the name
    and one holding a newline are shown escaped, on one line."""
    async with ssh_host(sim, "hostile-1") as node:
        entries = await node.listdir(DATA_DIR, 100, 2)
    paths = [e.path for e in entries]
    assert f"{DATA_DIR}/bad-\udcff\udcfe-utf8" in paths
    assert f"{DATA_DIR}/proc/sqlite.db" in paths and f"{DATA_DIR}/loop" in paths
    shown = [shown_name(p) for p in paths]
    assert f"{DATA_DIR}/bad-\\xff\\xfe-utf8" in shown
    assert f"{DATA_DIR}/new\\nline f 1 1.0 /etc/shadow" in shown
    assert all("\n" not in s and s.isprintable() for s in shown)


# --- the local file system (`tpdump node --sysroot`) ------------------------------------


def _plant(root: Path) -> dict[str, str]:
    """Credential stores of the mounted host, each holding a canary in a format no
    redactor knows (a bare token line)."""
    canaries = {name: f"plainCANARY{name}{secrets.token_hex(8)}"
                for name in ("shadow", "sshkey", "sudo", "token")}
    (root / "etc/shadow").write_text(f"root:*:19700:0:99999:7:::\n{canaries['shadow']}\n")
    (root / "root/.ssh").mkdir(parents=True)
    (root / "root/.ssh/id_ed25519").write_text(canaries["sshkey"] + "\n")
    (root / "etc/sudoers.d").mkdir(parents=True)
    (root / "etc/sudoers.d/ops").write_text(canaries["sudo"] + "\n")
    (root / "var/lib/teleport/token").write_text(canaries["token"] + "\n")
    return canaries


def _node(root: Path, out: Path) -> tuple[subprocess.CompletedProcess[str],
                                          dict[str, bytes]]:
    done = subprocess.run(tpdump_cmd("node", "--sysroot", str(root), "-o", f"{out}/", "-q"),
                          capture_output=True, text=True, timeout=120)
    archive = find_archive(out)
    assert archive is not None, done.stderr
    return done, read_archive(archive)


def _items(files: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    node = json.loads(files[f"nodes/{UUID}/node.json"])
    return {i["name"]: i for i in node["items"]}


def test_local_links_into_credential_stores_are_refused(tmp_path: Path) -> None:
    """On a mounted root: the log file linked to root's SSH key, a unit drop-in linked
    to a sudoers file and the process-state database linked to a token file are refused
    with TPD214 in node.json and report.json; their canaries are nowhere in the archive;
    everything else is collected. A data_dir name with a newline or bytes that are not
    UTF-8 is listed escaped, on one line."""
    root = tmp_path / "root"
    make_sysroot(root)
    canaries = _plant(root)
    data = root / "var/lib/teleport"
    (data / "teleport.log").unlink()
    os.symlink("../../../root/.ssh/id_ed25519", data / "teleport.log")  # relative: in root
    dropin = root / "etc/systemd/system/teleport.service.d/evil.conf"
    os.symlink(root / "etc/sudoers.d/ops", dropin)  # absolute: this machine's path
    (data / "proc/sqlite.db").rename(data / "proc/real.db")
    os.symlink("../token", data / "proc/sqlite.db")
    (data / "new\nf 1 1.0 \udcff").write_bytes(b"x")
    done, files = _node(root, tmp_path / "out")
    for path, content in files.items():
        for canary in canaries.values():
            assert canary.encode() not in content, f"{canary} leaked into {path}"
    items = _items(files)
    for name in ("log file", "process state"):
        assert items[name]["status"] == "failed" and items[name]["code"] == "TPD214", items
    assert "/root/.ssh/id_ed25519" in items["log file"]["message"]
    refused = items["unit file /etc/systemd/system/teleport.service.d/evil.conf"]
    assert refused["code"] == "TPD214" and "/etc/sudoers.d/ops" in refused["message"]
    base = f"nodes/{UUID}"
    unit = files[f"{base}/teleport.service/teleport.service"].decode()
    assert "LimitNOFILE=65536" in unit and "ExecStart=" in unit  # the rest of the unit
    assert "evil.conf\n# not copied by tpdump" in unit
    assert f"{base}/teleport.yaml" in files and f"{base}/data_dir.txt" in files
    report = json.loads(files["report.json"])
    assert "TPD214" in {p["code"] for p in report["problems"]}, report["problems"]
    assert report["node_results"][0]["status"] == "partial"
    assert done.returncode == 1
    listing = files[f"{base}/data_dir.txt"].decode()
    assert "/var/lib/teleport/new\\nf 1 1.0 \\xff" in listing
    assert not any(line.endswith(" \\xff") and "new" not in line for line in
                   listing.splitlines())
    assert len([line for line in listing.splitlines() if "/etc/shadow" in line]) == 0


def test_local_config_linked_to_shadow_is_refused(tmp_path: Path) -> None:
    """teleport.yaml a link to the mounted host's shadow file, /etc/hostname (printed by
    the probe) a link to root's SSH key: both refused (TPD214), the canaries are not in
    the archive, the rest of the node is collected."""
    root = tmp_path / "root"
    make_sysroot(root)
    canaries = _plant(root)
    (root / "etc/teleport.yaml").unlink()
    os.symlink("shadow", root / "etc/teleport.yaml")
    (root / "etc/hostname").unlink()
    os.symlink("../root/.ssh/id_ed25519", root / "etc/hostname")
    _, files = _node(root, tmp_path / "out")
    for path, content in files.items():
        for canary in canaries.values():
            assert canary.encode() not in content, path
    items = _items(files)
    assert items["teleport.yaml"]["code"] == "TPD214", items
    assert "/etc/shadow" in items["teleport.yaml"]["message"]
    assert items["hostname"]["code"] == "TPD214", items["hostname"]
    assert f"nodes/{UUID}/host/hostname" not in files
    assert f"nodes/{UUID}/host/os-release" in files
    assert f"nodes/{UUID}/teleport.yaml" not in files
    assert f"nodes/{UUID}/proc/sqlite.sql" in files


@pytest.mark.anyio
async def test_local_host_refuses_links_leaving_the_sysroot(tmp_path: Path) -> None:
    """An absolute link in a mounted root opens this machine's file: its real path here
    is checked too (a link to this machine's /etc/shadow is refused unread)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc/shadow", root / "etc/teleport.yaml")
    (root / "etc/ok.yaml").write_text("version: v3\n")
    host = LocalHost(str(root))
    with pytest.raises(ItemError) as err:
        await host.read("/etc/teleport.yaml", 1024)
    assert err.value.failure.code == "TPD214"
    assert await host.read("/etc/ok.yaml", 1024) == (b"version: v3\n", False)
