"""Secret stripping: structure and text kept, every secret value replaced by a marker."""

from pathlib import Path

import yaml

from tpdump.redact import Redactor, dump_yaml

REF = Path(__file__).resolve().parents[1] / "data" / "teleport" / "config"


def test_reference_config_stays_verbatim_but_for_tokens() -> None:
    """A real teleport.yaml comes back line for line, only the static token secrets cut."""
    src = (REF / "gravitational-teleport__docker__one.yaml").read_text()
    out, parsed = Redactor().yaml_text(src)
    assert parsed
    assert "foo" not in out and "bar" not in out.replace("trustedcluster", "")
    changed = [(a, b) for a, b in zip(src.splitlines(), out.splitlines(), strict=True)
               if a != b]
    assert len(changed) == 2
    assert all("tokens" not in a and "<redacted by tpdump: join token>" in b
               for a, b in changed)
    assert yaml.safe_load(out)["auth_service"]["tokens"][0].startswith("node,auth,proxy:")


def test_auth_token_and_join_params() -> None:
    """auth_token and join_params.token_name values are removed; the YAML still parses."""
    src = ("version: v3\nteleport:\n  auth_token: SECRET-1\n  join_params:\n"
           "    method: token\n    token_name: SECRET-2\n  ca_pin: sha256:abc\n")
    r = Redactor()
    out, _ = r.yaml_text(src)
    assert "SECRET" not in out
    doc = yaml.safe_load(out)
    assert doc["teleport"]["join_params"]["method"] == "token"
    assert doc["teleport"]["ca_pin"] == "sha256:abc"
    assert r.counts["join token"] == 2


def test_malformed_yaml_falls_back_to_patterns() -> None:
    """Unparsable YAML still loses `token: value` and PEM private keys."""
    src = ("teleport: [\n  auth_token: SECRET-3\n-----BEGIN RSA PRIVATE KEY-----\nMIIB"
           "SECRET4\n-----END RSA PRIVATE KEY-----\n")
    out, parsed = Redactor().yaml_text(src)
    assert not parsed
    assert "SECRET" not in out


def test_cert_authority_private_parts() -> None:
    """CA key pairs keep public parts and lose private ones, whatever their key name."""
    doc = {"kind": "cert_authority", "spec": {"active_keys": {
        "ssh": [{"public_key": "ssh-ed25519 AAAA", "private_key": "c2VjcmV0",
                 "private_key_type": "RAW"}],
        "tls": [{"cert": "LS0tCERT", "key": "LS0tKEY"}],
        "jwt": [{"public_key": "PUB", "private_key": "PRIV"}]}}}
    out = Redactor().document(doc)
    keys = out["spec"]["active_keys"]
    assert keys["ssh"][0]["public_key"] == "ssh-ed25519 AAAA"
    assert "redacted" in keys["ssh"][0]["private_key"]
    assert keys["tls"][0]["cert"] == "LS0tCERT"
    assert "redacted" in keys["tls"][0]["key"]
    assert "PRIV" not in str(out)


def test_token_resource_name_and_connector_secrets() -> None:
    """A provision token's name is its secret; connectors lose client_secret."""
    r = Redactor()
    token = r.document({"kind": "token", "metadata": {"name": "abc123secret"},
                        "spec": {"roles": ["Node"]}})
    assert token["metadata"]["name"].startswith("<redacted")
    assert token["spec"]["roles"] == ["Node"]
    gh = r.document({"kind": "github", "spec": {"client_id": "id", "client_secret": "s3cr3t"}})
    assert gh["spec"]["client_id"] == "id" and "s3cr3t" not in str(gh)


def test_text_patterns() -> None:
    """Bearer tokens, cookies and key=value secrets in log lines are removed."""
    r = Redactor()
    line = ('INFO http: GET /v1 Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc '
            'Cookie: session=deadbeef; grv=1 password=hunter22 token="tok-9"')
    out = r.text(line)
    for secret in ("eyJhbGci", "deadbeef", "hunter22", "tok-9"):
        assert secret not in out


def test_cmdline_flags() -> None:
    """`--token X` and `--token=X` lose their values; other arguments stay."""
    out = Redactor().cmdline(["teleport", "start", "--token", "T1", "--token=T2",
                              "--config", "/etc/teleport.yaml"])
    assert "T1" not in out and "--token=T2" not in out
    assert out[:3] == ["teleport", "start", "--token"]
    assert out[-2:] == ["--config", "/etc/teleport.yaml"]


def test_dump_yaml_multi_doc() -> None:
    """Documents are written as tctl writes them, separated by ---."""
    text = dump_yaml([{"kind": "role"}, {"kind": "user"}])
    assert [d["kind"] for d in yaml.safe_load_all(text)] == ["role", "user"]
