"""Settings: profile < config file < flags; every bad value is a clear UsageError."""

from pathlib import Path

import pytest

from tpdump.config import PROFILES, load_file, parse_size, resolve
from tpdump.errors import UsageError


def test_precedence(tmp_path: Path) -> None:
    """Flags override the file, the file overrides the profile."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("concurrency: 7\nnode_timeout: 9\nssh_key: keys/id\nprofile: speed\n")
    values = load_file(str(cfg))
    s = resolve(values, {"concurrency": 3})
    assert s.concurrency == 3
    assert s.node_timeout == 9.0
    assert s.connect_timeout == PROFILES["speed"]["connect_timeout"]
    assert s.ssh_key == str(tmp_path / "keys/id")  # relative to the file


@pytest.mark.parametrize(("text", "needle"), [
    ("concurrency: -1\n", "concurrency"),
    ("bogus_option: 1\n", "bogus_option"),
    ("node_timeout: soon\n", "node_timeout"),
    ("targets: [a, b]\n", "targets"),
    ("- just a list\n", "mapping"),
    ("a: [\n", "YAML"),
])
def test_bad_config_names_the_option(tmp_path: Path, text: str, needle: str) -> None:
    """A bad config file is rejected with the option named."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(UsageError) as err:
        load_file(str(cfg))
    assert needle in str(err.value)
    assert err.value.exit_code == 2


def test_bad_profile_and_forbidden_kind() -> None:
    """Unknown profiles and the `all` kind are refused."""
    with pytest.raises(UsageError, match="profile"):
        resolve({}, {"profile": "turbo"})
    with pytest.raises(UsageError, match="all"):
        resolve({}, {"include_kinds": "node,all"})


def test_sizes() -> None:
    """Sizes accept SI and IEC units."""
    assert parse_size("5MB", "x") == 5_000_000
    assert parse_size("512KiB", "x") == 512 * 1024
    assert parse_size(10, "x") == 10
    with pytest.raises(UsageError):
        parse_size("lots", "x")


def test_kinds_selection() -> None:
    """--include-kinds and --exclude-kinds select tctl kinds."""
    s = resolve({}, {"include_kinds": "node,role,user", "exclude_kinds": "user"})
    assert s.kinds() == ("node", "role")


def test_readme_profile_table_matches_code() -> None:
    """The README's profile table shows exactly the values of the profile table in code."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("### Profiles", 1)[1].split("\n\n", 2)[1]
    rows = [r.strip("|").split("|") for r in table.splitlines()[2:]]
    names = list(PROFILES)
    units = {"KiB": 1024, "MiB": 1024 ** 2, "MB": 1000 ** 2}
    seen = set()
    for row in rows:
        cells = [c.strip() for c in row]
        key = re.sub(r"\s*\(s\)$", "", cells[0])
        seen.add(key)
        for profile, cell in zip(names, cells[1:], strict=True):
            got = cell_value(cell, units)
            if got is None and key == "skip_items":
                got = ()
            assert got == PROFILES[profile][key], (key, profile, cell)
    assert seen == set(PROFILES["standard"])


def cell_value(cell: str, units: dict[str, int]) -> object:
    """A README table cell as the value it shows: yes/no, — (none), a list, a number."""
    if cell in ("yes", "no"):
        return cell == "yes"
    if cell == "—":
        return None
    if cell.startswith("skip: "):
        return tuple(c.strip() for c in cell.removeprefix("skip: ").split(","))
    number, _, unit = cell.partition(" ")
    return float(number) * units.get(unit, 1)


def test_node_items_are_the_configurable_ones() -> None:
    from tpdump.collectors.node import ITEMS
    from tpdump.config import NODE_ITEMS

    assert tuple(i.name for i in ITEMS) == NODE_ITEMS
