"""`tctl status` in both layouts (outputs of the stand-in, which follows Teleport's
status_command.go for ≤ v16 and ≥ v17), and while a rotation is in progress."""

from pathlib import Path

from tpdump.status import parse_status

DATA = Path(__file__).resolve().parents[1] / "data" / "tctl"


def test_two_column_layout() -> None:
    """≤ v16: cluster, version, one row per CA with its rotation, the CA pin."""
    st = parse_status((DATA / "status-v16.txt").read_text())
    assert st is not None and st.layout == "v16"
    assert st.cluster == "acme.example.com" and st.version == "16.4.0"
    assert [a.type for a in st.authorities][:3] == ["host", "user", "db"]
    assert "db_client" in [a.type for a in st.authorities]
    assert all(a.rotation == "never updated" and not a.rotating for a in st.authorities)
    assert st.ca_pins == ["sha256:986a229753054cd0b1c49265934c2b6dd3325eca93ee7d62dc2786493993545b"]


def test_per_authority_table() -> None:
    """≥ v17: authorities with their keys (protocol, status, algorithm, storage)."""
    st = parse_status((DATA / "status-v17.txt").read_text())
    assert st is not None and st.layout == "v17"
    assert st.cluster == "acme.example.com" and st.version == "17.4.2"
    assert st.ca_pins[0].startswith("sha256:ac3ff884")
    by_type = {a.type: a for a in st.authorities}
    assert [k.protocol for k in by_type["host"].keys] == ["SSH", "TLS"]
    assert by_type["host"].keys[1].algorithm == "ECDSA P-256"
    assert by_type["spiffe"].keys[1].storage == "software"
    assert len(st.authorities) == 10  # host … okta, one each


def test_rotation_in_progress_is_seen_in_both_layouts() -> None:
    """A rotating authority is flagged whatever the layout."""
    rot = ("rotating clients (mode: manual, started: Nov 26 10:00:00 UTC, "
           "ending: Nov 27 10:00:00 UTC)")
    v16 = (f"Cluster  acme\nVersion  16.4.0\nhost CA  {rot}\nuser CA  never updated\n"
           "CA pin   sha256:ab\n")
    st = parse_status(v16)
    assert st is not None and st.authorities[0].rotating and st.authorities[0].rotation == rot
    assert not st.authorities[1].rotating
    header = "authority rotation" + " " * (len(rot) - 8) + " protocol status algorithm storage"
    dashes = "--------- " + "-" * len(rot) + " -------- ------ --------- -------"
    row = f"host      {rot} SSH      active Ed25519   software"
    v17 = f"Cluster: acme\nVersion: 17.4.2\nCA pins: sha256:ab\n\n{header}\n{dashes}\n{row}\n"
    st = parse_status(v17)
    assert st is not None and st.authorities[0].rotating
    assert st.authorities[0].keys[0].algorithm == "Ed25519"


def test_unknown_text() -> None:
    """Text in neither layout is not guessed at."""
    assert parse_status("something else entirely\n") is None
