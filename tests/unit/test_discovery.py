"""Discovery: inventory and heartbeats merged by host UUID; targets; selection."""

from tpdump.discovery import Target, assign_target, merge, parse_json_docs, select

U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
U3 = "33333333-3333-4333-8333-333333333333"


def inventory() -> list[dict]:
    return [
        {"kind": "instance", "version": "v1", "metadata": {"name": U1},
         "spec": {"hostname": "web-1", "version": "17.4.2", "services": ["Node"]}},
        {"kind": "instance", "version": "v1", "metadata": {"name": U2},
         "spec": {"hostname": "auth-1", "version": "17.4.2", "services": ["Auth", "Proxy"]}},
    ]


def heartbeats() -> dict[str, list[dict]]:
    return {
        "node": [
            {"kind": "node", "metadata": {"name": U1},
             "spec": {"hostname": "web-1", "addr": "10.0.0.5:3022", "version": "17.4.2"}},
            {"kind": "node", "metadata": {"name": U3},
             "spec": {"hostname": "edge-1", "addr": "", "use_tunnel": True,
                      "version": "16.1.0"}},
        ],
        "app_server": [
            {"kind": "app_server", "metadata": {"name": "grafana"},
             "spec": {"host_id": U3, "hostname": "edge-1", "version": "16.1.0"}},
        ],
        "auth_server": [{"kind": "auth_server", "metadata": {"name": U2},
                         "spec": {"hostname": "auth-1", "addr": "10.0.0.2:3025"}}],
    }


def test_merge_by_uuid_combines_services() -> None:
    """An instance seen in inventory and heartbeats is one instance with all services."""
    by_id = {i.uuid: i for i in merge(inventory(), heartbeats())}
    assert set(by_id) == {U1, U2, U3}
    assert by_id[U1].services == {"node"}
    assert by_id[U2].services == {"auth", "proxy"}
    assert by_id[U3].services == {"node", "app"}  # app_server keyed by spec.host_id
    assert by_id[U3].sources == {"node", "app_server"}
    assert by_id[U1].sources == {"inventory", "node"}


def test_targets_direct_tunnel_and_none() -> None:
    """Direct nodes are dialled at their addr, tunnel nodes by UUID, others not at all."""
    by_id = {i.uuid: i for i in merge(inventory(), heartbeats())}
    for inst in by_id.values():
        assign_target(inst, {})
    assert by_id[U1].target == Target("10.0.0.5", 3022)
    assert by_id[U3].target == Target(U3, 3022)
    assert by_id[U2].target is None


def test_config_targets_override() -> None:
    """`targets:` maps an instance without SSH service to an address."""
    by_id = {i.uuid: i for i in merge(inventory(), heartbeats())}
    assign_target(by_id[U2], {"auth-1": "10.9.9.9:22"})
    assert by_id[U2].target == Target("10.9.9.9", 22)


def test_heartbeats_only_when_inventory_missing() -> None:
    """Without inventory, heartbeats alone enumerate the instances."""
    ids = {i.uuid for i in merge(None, heartbeats())}
    assert ids == {U1, U2, U3}


def test_select_globs() -> None:
    """--nodes / --exclude-nodes globs match hostname or UUID."""
    instances = merge(inventory(), heartbeats())
    chosen, dropped = select(instances, ["web-*", U3], [])
    assert {i.hostname for i in chosen} == {"web-1", "edge-1"}
    assert dropped == 1
    chosen, dropped = select(instances, [], ["auth-*"])
    assert {i.hostname for i in chosen} == {"web-1", "edge-1"}


def test_parse_json_docs_shapes() -> None:
    """tctl JSON answers: an array, one object, or nothing."""
    assert parse_json_docs(b"[]") == []
    assert parse_json_docs(b"") == []
    assert parse_json_docs(b'{"kind": "x"}') == [{"kind": "x"}]
    try:
        parse_json_docs(b"[1, 2]")
    except ValueError:
        pass
    else:
        raise AssertionError("a list of non-objects must be rejected")
