"""The command line: `tpdump cluster | node | kube | snapshot | serve | explain | sim | demo`."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio
import yaml

from tpdump import __version__
from tpdump.config import PROFILES, Settings, load_file, resolve
from tpdump.errors import CODES, ExitCode, TpdumpError, UsageError, explain
from tpdump.logs import configure

# (flag, dest, help); dest is the Settings field. Every default is in the profile table.
_VALUE_FLAGS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("--auth-server",), "auth_server", "auth API address for tctl (proxy:443 or auth:3025)"),
    (("-i", "--identity"), "identity", "tctl identity file (tctl auth sign --format=file)"),
    (("--tctl",), "tctl", "path of the tctl executable (default: tctl on PATH)"),
    (("--proxy",), "proxy", "the proxy's SSH address used as jump host (HOST:3023)"),
    (("--ssh-user",), "ssh_user", "SSH login on the nodes (a principal of the certificate)"),
    (("--ssh-key",), "ssh_key", "OpenSSH private key; KEY-cert.pub is its certificate"),
    (("--known-hosts",), "known_hosts", "known_hosts with the cluster host CA "
                                        "(@cert-authority line)"),
    (("--ssh-config",), "ssh_config", "an OpenSSH client config (e.g. `tsh config` output)"),
    (("--cluster-name",), "cluster_name", "name used for the archive (default: from tctl "
                                          "status; for `node`: node-<hostname>)"),
    (("--nodes",), "nodes", "only these nodes: comma-separated globs on hostname or UUID"),
    (("--exclude-nodes",), "exclude_nodes", "skip these nodes (globs on hostname or UUID)"),
    (("--include-kinds",), "include_kinds", "only these tctl kinds (comma-separated)"),
    (("--exclude-kinds",), "exclude_kinds", "skip these tctl kinds (comma-separated)"),
    (("--profile",), "profile", f"defaults: {', '.join(PROFILES)} (see README)"),
    (("--concurrency",), "concurrency", "nodes collected at once"),
    (("--connect-timeout",), "connect_timeout", "seconds to set up one node's SSH session"),
    (("--node-timeout",), "node_timeout", "seconds for one whole node"),
    (("--item-timeout",), "item_timeout", "seconds for one item (file or command) on a node"),
    (("--timeout",), "timeout", "seconds for the whole run; then the archive is finished"),
    (("--tctl-concurrency",), "tctl_concurrency", "tctl calls at once (be gentle on auth)"),
    (("--tctl-timeout",), "tctl_timeout", "seconds for one tctl call"),
    (("--preflight-timeout",), "preflight_timeout", "seconds for the preflight checks"),
    (("--max-output",), "max_output", "byte cap of one item's output (e.g. 8MB)"),
    (("--log-window",), "log_window_h", "hours of logs to collect (newest kept)"),
    (("--log-lines",), "log_lines", "at most this many log lines per log"),
    (("--log-bytes",), "log_bytes", "byte cap of one log (e.g. 8MB; newest lines kept)"),
    (("--sysroot",), "sysroot", "`node` only: read a root file system mounted here"),
    (("--kubeconfig",), "kubeconfig", "kubeconfig for the Kubernetes part (default: "
                                      "$KUBECONFIG, ~/.kube/config, or in-cluster)"),
    (("--kube-context",), "kube_context", "kubeconfig context (default: the current one)"),
    (("--kube-namespace",), "kube_namespace", "dump these namespaces (comma-separated) "
                                              "instead of finding Teleport's"),
    (("--kube-concurrency",), "kube_concurrency", "Kubernetes API calls at once"),
    (("--kube-timeout",), "kube_timeout", "seconds for one Kubernetes API call"),
    (("--kube-log-lines",), "kube_log_lines", "newest lines of each pod log"),
    (("--kube-log-bytes",), "kube_log_bytes", "byte cap of each pod log (newest kept)"),
    (("--obfuscation-key",), "obfuscation_key", "file with the key for --obfuscate: the same "
                                                "key gives the same tokens in every dump"),
    (("--obfuscation-map",), "obfuscation_map", "write the token → original mapping here "
                                                "(stays with you, never in the archive)"),
    (("--skip-items",), "skip_items", "leave these node items out (comma-separated: "
                                      "systemd, journal, log file, diag, debug socket, "
                                      "connections, disk, data_dir listing, process state)"),
    (("--format",), "format", "archive format: tar.gz (default) or zip"),
    (("--compress-level",), "compress_level", "deflate level of the archive, 1 (fastest) to "
                                              "9 (smallest)"),
    (("--max-size",), "max_size", "hard cap of the archive, all parts together (e.g. 5MB, "
                                  "or none); logs are cut first, newest lines kept"),
    (("--split-size",), "split_size", "write the archive as numbered parts of at most this "
                                      "size (e.g. 10MB)"),
    (("-o", "--output"), "output", "archive path, or a directory to put it in"),
    (("--log-format",), "log_format", "console or json"),
)
_INT = {"concurrency", "tctl_concurrency", "log_lines", "kube_concurrency", "kube_log_lines",
        "compress_level"}
_FLOAT = {"connect_timeout", "node_timeout", "item_timeout", "timeout", "tctl_timeout",
          "preflight_timeout", "log_window_h", "kube_timeout"}
_KUBE = {"kubeconfig", "kube_context", "kube_namespace", "kube_concurrency", "kube_timeout",
         "kube_log_lines", "kube_log_bytes"}
# What `tpdump node` accepts (no auth API, no SSH).
_COMMON = {"cluster_name", "profile", "timeout", "output", "log_format", "obfuscation_key",
           "obfuscation_map", "format", "max_size", "split_size", "compress_level"}
_NODE_FLAGS = {*_COMMON, "item_timeout", "max_output", "log_window_h", "log_lines",
               "log_bytes", "sysroot", "skip_items"}
# What `tpdump kube` accepts.
_KUBE_FLAGS = {*_COMMON, "log_window_h", *_KUBE}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors read like tpdump's others: one line with the code
    (`tpdump: TPD001: …`) and exit 2, instead of the usage text and `error:`."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("tpdump").strip()
        self.exit(int(ExitCode.USAGE), f"tpdump: TPD001: {command + ': ' if command else ''}"
                  f"{message} (`{self.prog} --help` lists the options)\n")


def _number(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc
    return parse


def _add_run_options(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML file of options (flags override it)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective settings and exit")
    only = {"node": _NODE_FLAGS, "kube": _KUBE_FLAGS}.get(command)
    for flags, dest, text in _VALUE_FLAGS:
        if (only is not None and dest not in only) or (only is None and dest == "sysroot"):
            continue
        kind = int if dest in _INT else float if dest in _FLOAT else str
        p.add_argument(*flags, dest=dest, default=None, help=text,
                       type=_number(kind) if kind is not str else str)
    p.add_argument("--obfuscate", dest="obfuscate", action=argparse.BooleanOptionalAction,
                   default=None, help="replace hostnames, addresses, user names, e-mail "
                   "addresses and cluster names by consistent one-way tokens")
    if command != "kube":
        p.add_argument("--metrics", dest="metrics", action=argparse.BooleanOptionalAction,
                       default=None, help="the diag endpoint's /metrics (profile default)")
        p.add_argument("--journal-json", dest="journal_json",
                       action=argparse.BooleanOptionalAction, default=None,
                       help="the journal in JSON as well as text (profile default)")
    p.add_argument("--obfuscate-uuids", dest="obfuscate_uuids", action="store_true",
                   default=None, help="with --obfuscate: node UUIDs too")
    if command == "cluster":
        p.add_argument("--kube", dest="kube", action=argparse.BooleanOptionalAction,
                       default=None, help="also dump Kubernetes (default: when --kubeconfig "
                       "is given or tpdump runs in a pod)")
    if command == "cluster":
        p.add_argument("--insecure-accept-any-host-key", dest="insecure_accept_any_host_key",
                       action="store_true", default=None,
                       help="DANGEROUS: do not verify node host keys")
    p.add_argument("-q", "--quiet", dest="quiet", action="store_true", default=None,
                   help="no progress output")
    p.add_argument("-v", "--verbose", dest="verbose", action="store_true", default=None,
                   help="log every step on stderr")


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog="tpdump", description="Support dumps of Teleport clusters: one command, "
        "one archive. Exit codes: 0 complete, 1 incomplete, 2 usage, 3 fatal, "
        "130 interrupted.")
    top.add_argument("--version", action="version", version=f"tpdump {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cluster = sub.add_parser("cluster", help="dump every agent of a cluster",
                             description="Enumerate every agent through the auth API (tctl), "
                             "collect each over SSH, write one archive with a report.")
    _add_run_options(cluster, "cluster")
    node = sub.add_parser("node", help="dump this host (or a mounted root: --sysroot)",
                          description="Dump the local host's Teleport: config, processes, "
                          "systemd units, journald or log files, diag endpoints, data_dir "
                          "and process state, into one archive. No SSH, no auth API.")
    _add_run_options(node, "node")
    kube = sub.add_parser("kube", help="dump the Kubernetes namespaces where Teleport runs",
                          description="Every namespaced object and every pod log (with the "
                          "previous container's) of the namespaces where Teleport's Helm "
                          "charts run, events, and the API's discovery; Secret values are "
                          "never written.")
    _add_run_options(kube, "kube")
    ins = sub.add_parser("inspect", help="print an archive's report and verify its checksums",
                         description="Print the report of a dump, verify every file against "
                         "manifest.json, list, print or extract files. Reads tar.gz, zip and "
                         "split archives (give NAME or NAME.001). Exit 0 when whole, 1 when a "
                         "checksum or file is wrong.")
    ins.add_argument("archive", help="the archive (or its first part)")
    ins.add_argument("--list", action="store_true", help="list every file with its size")
    ins.add_argument("--cat", metavar="PATH", help="print one file of the archive")
    ins.add_argument("--extract", metavar="DIR", help="unpack every file under DIR")
    ana = sub.add_parser("analyze", help="findings about the cluster in a dump",
                         description="Run the analyzers (version skew, CAs, heartbeats, "
                         "/readyz, log error bursts, clock offset, reverse tunnels, RBAC, "
                         "unreachable nodes) over an archive and print findings with "
                         "evidence (file:line). Exit 0 without critical findings, 1 with.")
    ana.add_argument("archive", help="the archive (or its first part)")
    ana.add_argument("--json", action="store_true", help="print the findings as JSON")
    dif = sub.add_parser("diff", help="what changed between two dumps",
                         description="Instances added and removed, versions changed, objects "
                         "added/removed/changed per kind, new problem codes and new findings."
                         " Exit 0 when nothing changed, 1 otherwise.")
    dif.add_argument("old", help="the older archive")
    dif.add_argument("new", help="the newer archive")
    dif.add_argument("--json", action="store_true", help="print the differences as JSON")
    exp = sub.add_parser("explain", help="the long explanation of an error code")
    exp.add_argument("code", nargs="?", help="e.g. TPD200; without it, list every code")
    exp.add_argument("--markdown", action="store_true",
                     help="every code as Markdown (the source of docs/codes.md)")
    demo = sub.add_parser("demo", help="start a simulated cluster and dump it")
    demo.add_argument("--scenario", help="scenario file (default: the built-in demo)")
    demo.add_argument("-o", "--output", default=None, help="where to write the archive")
    demo.add_argument("-q", "--quiet", action="store_true")
    sub.add_parser("sim", help="run a simulated cluster from a scenario (see docs/scenario.md)",
                   add_help=False)
    _add_serve_snapshot(sub)
    return top


def _add_serve_snapshot(sub: Any) -> None:
    """`tpdump snapshot` and `tpdump serve` (their code: tpdump/snapshot.py, serve.py)."""
    snap = sub.add_parser("snapshot", help="one scheduled dump into a directory with an "
                          "index and retention",
                          description="One run (by default the cluster dump, with every "
                          "option of `tpdump cluster`) stored in DIR and listed in "
                          "DIR/index.json; then the oldest snapshots beyond --keep, "
                          "--max-age or --max-total-size are deleted (only files the index "
                          "lists; the newest always stays).")
    snap.add_argument("--dir", required=True, metavar="DIR", help="the snapshot directory")
    snap.add_argument("--keep", type=_number(int), default=None, metavar="N",
                      help="keep the N newest snapshots")
    snap.add_argument("--max-age", default=None, metavar="AGE",
                      help="delete snapshots older than this (e.g. 12h, 7d)")
    snap.add_argument("--max-total-size", default=None, metavar="SIZE",
                      help="delete the oldest snapshots beyond this total (e.g. 2GB)")
    snap.add_argument("--scope", choices=("cluster", "node", "kube"), default="cluster",
                      help="what to dump (default: cluster)")
    _add_run_options(snap, "cluster")
    serve = sub.add_parser("serve", help="the web UI: start dumps, watch them, download",
                           description="A web page to start a dump with one button, watch "
                           "its progress and download dumps and snapshots. Every request "
                           "needs the token. Dumps use the settings of --config and the "
                           "flags below (as `tpdump cluster`), with the profile chosen on "
                           "the page.")
    serve.add_argument("--dir", required=True, metavar="DIR",
                       help="where dumps started from the page go (with index.json)")
    serve.add_argument("--snapshot-dir", action="append", default=[], metavar="DIR",
                       help="also list the snapshots of this directory (repeatable)")
    serve.add_argument("--listen", default="127.0.0.1:8765", metavar="HOST:PORT",
                       help="address to listen on (default 127.0.0.1:8765, loopback only)")
    serve.add_argument("--token-file", default=None, metavar="FILE",
                       help="the access token (first line); default: a random one, printed")
    _add_run_options(serve, "cluster")


def settings_from(args: argparse.Namespace) -> Settings:
    file_values = load_file(args.config) if args.config else {}
    flags = {dest: getattr(args, dest) for _, dest, _ in _VALUE_FLAGS if hasattr(args, dest)}
    for dest in ("insecure_accept_any_host_key", "quiet", "verbose", "kube", "obfuscate",
                 "obfuscate_uuids", "metrics", "journal_json"):
        flags[dest] = getattr(args, dest, None)
    return resolve(file_values, flags)


def cmd_cluster(settings: Settings, command: str) -> int:
    from tpdump.report import summary_lines
    from tpdump.runner import run_cluster

    run_log = configure(verbose=settings.verbose, quiet=settings.quiet, fmt=settings.log_format)
    outcome = anyio.run(run_cluster, settings, run_log, command)
    print_archive(outcome)
    if outcome.report:
        for line in summary_lines(outcome.report):
            print(line)
    return int(outcome.exit_code)


def print_archive(outcome: Any) -> None:
    """Where the archive is; for a split archive its parts and the command joining them."""
    if outcome.join_command:
        print(f"archive: {len(outcome.parts)} parts in {outcome.archive.parent}:")
        for part in outcome.parts:
            print(f"  {part.name}")
        print(f"join them with: cd {shlex.quote(str(outcome.archive.parent))} && "
              f"{outcome.join_command}")
    else:
        print(f"archive: {outcome.archive}")


def cmd_kube(settings: Settings, command: str) -> int:
    from tpdump.kuberun import run_kube
    from tpdump.report import summary_lines

    run_log = configure(verbose=settings.verbose, quiet=settings.quiet, fmt=settings.log_format)
    outcome = anyio.run(run_kube, settings, run_log, command)
    print_archive(outcome)
    for line in summary_lines(outcome.report) if outcome.report else []:
        print(line)
    return int(outcome.exit_code)


def cmd_node(settings: Settings, command: str) -> int:
    from tpdump.local import run_node
    from tpdump.report import summary_lines

    if settings.sysroot and not Path(settings.sysroot).is_dir():
        raise UsageError(f"--sysroot {settings.sysroot}: not a directory")
    run_log = configure(verbose=settings.verbose, quiet=settings.quiet, fmt=settings.log_format)
    outcome = anyio.run(run_node, settings, run_log, command)
    print_archive(outcome)
    for line in summary_lines(outcome.report) if outcome.report else []:
        print(line)
    return int(outcome.exit_code)


def codes_markdown() -> str:
    out = ["# tpdump error and warning codes", "",
           "Every problem tpdump reports carries one of these codes. `tpdump explain CODE` "
           "prints the", "same text; `readme.html` in every archive explains the codes that "
           "run met.", "", "Generated by `tpdump explain --markdown`.", ""]
    for c in CODES.values():
        out += [f"## {c.code}: {c.title}", "", f"Severity: {c.severity}.", "", c.explanation,
                "", f"What to do: {c.remedy}", ""]
    return "\n".join(out)


def cmd_explain(code: str | None) -> int:
    if code is None:
        for c in CODES.values():
            print(f"{c.code}  {c.severity:<7}  {c.title}")
        return 0
    found = explain(code)
    if found is None:
        print(f"tpdump: unknown code {code!r}; `tpdump explain` lists them", file=sys.stderr)
        return int(ExitCode.USAGE)
    print(f"{found.code} ({found.severity}): {found.title}\n\n{found.explanation}\n\n"
          f"What to do: {found.remedy}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    sim_cli = importlib.import_module("tpdump.sim.cli")
    scenario = args.scenario or str(Path(__file__).parent / "sim" / "scenarios" / "demo.yaml")
    with tempfile.TemporaryDirectory(prefix="tpdump-demo-") as state:
        print(f"starting the simulated cluster ({scenario}) …", file=sys.stderr)
        proc = sim_cli.start_in_subprocess(scenario, state)
        try:
            file_values = load_file(str(Path(state) / "tpdump.yaml"))
            flags: dict[str, Any] = {"quiet": args.quiet or None,
                                     "output": args.output or str(Path.cwd() / "dumps") + "/",
                                     "connect_timeout": 5.0, "node_timeout": 15.0,
                                     "item_timeout": 4.0}
            settings = resolve(file_values, flags)
            code = cmd_cluster(settings, "tpdump demo")
            if code == ExitCode.INCOMPLETE:
                # The demo cluster is broken on purpose: an incomplete dump is its success.
                print("(the demo cluster has faulty nodes on purpose; a real run would exit "
                      "1 here: incomplete)")
                return 0
            return code
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except Exception:
                proc.kill()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sim":
        sim_cli = importlib.import_module("tpdump.sim.cli")
        return int(sim_cli.main(argv[1:]))
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else int(ExitCode.USAGE)
    try:
        if args.command == "explain":
            if args.markdown:
                print(codes_markdown(), end="")
                return 0
            return cmd_explain(args.code)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "inspect":
            from tpdump.inspect import inspect
            return inspect(args.archive, list_files=args.list, cat=args.cat,
                           extract=args.extract)
        if args.command == "analyze":
            from tpdump.analyze import cmd_analyze
            return cmd_analyze(args.archive, as_json=args.json)
        if args.command == "diff":
            from tpdump.diff import cmd_diff
            return cmd_diff(args.old, args.new, as_json=args.json)
        settings = settings_from(args)
        if args.print_config:
            print(yaml.safe_dump(settings.as_dict(), sort_keys=True), end="")
            return 0
        if args.command in ("snapshot", "serve"):
            return cmd_serve_snapshot(args, settings, "tpdump " + shlex.join(argv))
        if args.command == "node":
            return cmd_node(settings, "tpdump " + shlex.join(argv))
        if args.command == "kube":
            return cmd_kube(settings, "tpdump " + shlex.join(argv))
        _require(settings)
        return cmd_cluster(settings, "tpdump " + shlex.join(argv))
    except TpdumpError as exc:
        print(f"tpdump: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except Exception:  # a bug must not exit 1, which means "archive written, incomplete"
        import traceback

        traceback.print_exc()
        print("tpdump: internal error (a bug); please report the traceback above",
              file=sys.stderr)
        return int(ExitCode.FATAL)


def cmd_serve_snapshot(args: argparse.Namespace, settings: Settings, command: str) -> int:
    """`tpdump snapshot` and `tpdump serve`."""
    if settings.output is not None:
        raise UsageError(f"{args.command}: -o/--output is not used; the archive goes to --dir")
    if args.command == "serve":
        from tpdump.serve import load_token, serve

        flags = {dest: getattr(args, dest) for _, dest, _ in _VALUE_FLAGS
                 if getattr(args, dest, None) is not None}
        for dest in ("insecure_accept_any_host_key", "kube", "obfuscate", "obfuscate_uuids",
                     "metrics", "journal_json"):
            if getattr(args, dest, None) is not None:
                flags[dest] = getattr(args, dest)
        token = load_token(args.token_file)
        dump_dir = Path(args.dir).resolve()
        dump_dir.mkdir(parents=True, exist_ok=True)
        return anyio.run(lambda: serve(
            listen=args.listen, token=token, dump_dir=dump_dir,
            snapshot_dirs=[Path(d).resolve() for d in args.snapshot_dir],
            file_values=load_file(args.config) if args.config else {}, flag_values=flags,
            printed_token=args.token_file is None))
    from tpdump.config import parse_size
    from tpdump.snapshot import parse_age, retention, run_into

    if args.keep is not None and args.keep < 1:
        raise UsageError("--keep: at least 1")
    max_age = parse_age(args.max_age) if args.max_age else None
    max_total = parse_size(args.max_total_size, "--max-total-size") \
        if args.max_total_size else None
    if args.scope == "cluster":
        _require(settings)
    directory = Path(args.dir)
    run_log = configure(verbose=settings.verbose, quiet=settings.quiet, fmt=settings.log_format)
    entry = anyio.run(lambda: run_into(directory, settings, args.scope, run_log, command,
                                       kind="snapshot"))
    print(f"snapshot: {directory / entry['name']} ({entry['verdict']}, "
          f"{entry['bytes']} bytes)")
    removed = retention(directory, keep=args.keep, max_age=max_age, max_total_size=max_total)
    for name in removed:
        print(f"removed: {name}")
    return int(entry["exit_code"])


def _require(settings: Settings) -> None:
    if not settings.proxy and not settings.targets and not settings.ssh_config:
        raise UsageError("--proxy is required (the proxy's SSH address, HOST:3023), "
                         "unless the config file maps nodes in `targets:`")
