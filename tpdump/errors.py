"""Error tree and the registry of stable codes (``TPDnnn``) with their explanations.

    TpdumpError                 exit 2 unless a subclass says otherwise
    ├── UsageError              bad flags or config file (exit 2)
    ├── FatalError              nothing useful could be collected (exit 3)
    │   └── AuthUnreachable     the auth API cannot be reached at all
    └── ArchiveError            the archive cannot be written (exit 3)

Failures of one node, one tctl kind or one item are not exceptions past their task:
they become data (a ``Problem`` with a code) in the results, so one bad target never
stops the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    COMPLETE = 0
    INCOMPLETE = 1
    USAGE = 2
    FATAL = 3
    INTERRUPTED = 130


@dataclass(frozen=True)
class Code:
    """One stable code: its number, a short title, the long explanation and a remedy."""

    code: str
    title: str
    explanation: str
    remedy: str
    severity: str = "error"  # error | warning


_CODES: tuple[Code, ...] = (
    Code("TPD001", "invalid command line or configuration",
         "A flag, the config file or one of its values is not valid. Nothing was collected.",
         "Fix the option named in the message; `tpdump cluster --print-config` shows the "
         "effective settings."),
    Code("TPD100", "auth server unreachable",
         "tctl could not reach the auth API (it printed 'Cannot connect to the auth server' or "
         "the call did not answer within the preflight deadline). Without the auth API tpdump "
         "cannot enumerate the agents, so only an archive with this report is written.",
         "Check --auth-server (the proxy address, e.g. proxy.example.com:443, or the auth "
         "server's 3025), the identity file (-i), and that the auth service is running "
         "(`systemctl status teleport` on the auth host). Run `tpdump node` on the auth host "
         "to collect its logs."),
    Code("TPD101", "access denied by RBAC",
         "The identity tpdump uses is not allowed to list this kind of resource. The dump goes "
         "on without it.",
         "Give the role of the identity the `list` and `read` verbs on the kind, or accept the "
         "gap. tpdump never asks for secrets, so `read` without secrets is enough.",
         "warning"),
    Code("TPD102", "resource kind not supported by this cluster",
         "The cluster's Teleport version does not know this kind (it is newer than the "
         "cluster). This is expected on older clusters.",
         "Nothing to do; exclude it with --exclude-kinds to silence it.", "warning"),
    Code("TPD103", "tctl call timed out",
         "A tctl call did not finish within its deadline and was stopped so that a struggling "
         "auth server is not kept busy.",
         "Retry with a larger --tctl-timeout, or look at the auth server's load."),
    Code("TPD104", "tctl call failed",
         "tctl exited with an error that tpdump does not classify further; its cleaned message "
         "is kept in the .error file.",
         "Read the message; run the same tctl command by hand to reproduce."),
    Code("TPD105", "instance inventory unsupported",
         "`tctl inventory ls` is not available (Teleport older than 12, or disabled). Agents "
         "were enumerated from heartbeats only, so agents without a heartbeat kind are missing.",
         "Upgrade the cluster, or list agents in the config file's `targets:`.", "warning"),
    Code("TPD106", "tctl not found",
         "The tctl executable could not be started.",
         "Install Teleport's tctl on this host or point --tctl at it."),
    Code("TPD107", "unreadable tctl output",
         "tctl answered with output that is not the JSON it promised; nothing of it was kept "
         "(it could hold secrets that cannot be stripped reliably).",
         "Run the tctl command by hand; report the output to support."),
    Code("TPD108", "tctl warnings",
         "tctl succeeded but printed messages on stderr (cluster alerts, deprecation notes). "
         "They are kept in the archive; they are not failures.",
         "Read them in cluster/tctl_stderr.txt.", "warning"),
    Code("TPD200", "connection refused",
         "The proxy could not open a connection to the node's SSH service: nothing listens "
         "on the node's SSH port, or the node is down.",
         "Check that the teleport service runs on the node (`systemctl status teleport`) and "
         "that its ssh_service is enabled; run `tpdump node` there."),
    Code("TPD201", "connect timed out",
         "No SSH session could be set up with the node within --connect-timeout: packets are "
         "dropped, or the node accepts TCP but never speaks SSH.",
         "Check firewalls between the proxy and the node and the node's load; raise "
         "--connect-timeout for slow links."),
    Code("TPD202", "collection timed out",
         "The node accepted the connection but did not finish within --node-timeout (or a "
         "command on it hung). What arrived before the deadline is kept.",
         "Look at the node's load and disks; raise --node-timeout; run `tpdump node` there."),
    Code("TPD203", "host key not trusted",
         "The node's host key is not signed by the cluster's host certificate authority in "
         "--known-hosts. tpdump refuses to talk to it (it may not be the node you think).",
         "Refresh known_hosts from the cluster (`tctl auth export --type=host` / `tsh "
         "login`), or check whether the node was re-provisioned."),
    Code("TPD204", "authentication rejected",
         "The node (or the proxy) rejected the SSH user certificate.",
         "Check that the certificate is not expired (`ssh-keygen -L -f KEY-cert.pub`), that "
         "--ssh-user is one of its principals and allowed by the role's logins."),
    Code("TPD205", "connection lost",
         "The SSH connection to the node broke during collection. What arrived before is kept.",
         "Check the node's network and the proxy's logs; rerun for that node "
         "(--nodes NAME)."),
    Code("TPD206", "output capped",
         "A command or file on the node produced more than its byte cap; the output was cut "
         "and is marked truncated in the manifest.",
         "Usually harmless; raise --max-output if the cut part matters.", "warning"),
    Code("TPD207", "unreachable: no SSH service",
         "This instance runs no SSH service (auth-only, proxy-only or a Kubernetes agent), so "
         "it cannot be reached through Teleport SSH. Its records from the auth API are kept.",
         "Run `tpdump node` on that host, or map it to an SSH address in the config file's "
         "`targets:`.", "warning"),
    Code("TPD208", "proxy unreachable",
         "The SSH connection to the proxy (jump host) failed, so no node could be reached "
         "through it.",
         "Check --proxy (the proxy's SSH port, 3023 by default), the certificate and "
         "known_hosts."),
    Code("TPD209", "item failed",
         "One item on a node (a file or a command) failed; the others were collected.",
         "Read the item's message in node.json."),
    Code("TPD210", "teleport process not found",
         "No running teleport process was found on the node (no pid file, no process named "
         "teleport): the config was read from /etc/teleport.yaml instead.",
         "Check `systemctl status teleport` on the node.", "warning"),
    Code("TPD211", "host key check disabled",
         "--insecure-accept-any-host-key was given: node identities were not verified.",
         "Use --known-hosts with the cluster's host CA.", "warning"),
    Code("TPD212", "SSH error",
         "An SSH error that tpdump does not classify further.",
         "Read the message in error.txt."),
    Code("TPD213", "no Teleport on this host",
         "`tpdump node` found no running teleport process and no readable config file, so "
         "the archive holds only host facts (OS, kernel, memory, disks, systemd units named "
         "teleport*, if any).",
         "Run it on a host that runs Teleport, pass --sysroot for a mounted root file "
         "system, or check the config path in the teleport unit's ExecStart."),
    Code("TPD214", "credential store refused",
         "A file tpdump reads on a node (teleport.yaml, the log file, a unit file, the "
         "process-state database) is in a credential store, or is a symbolic link (or "
         "below one) that leads into one: /etc/shadow, /etc/gshadow, /etc/sudoers*, an "
         "`.ssh` directory, SSH host private keys, tsh keys, `*.key` files, join token "
         "files. Its content was not read into the archive, whatever it holds; the node's "
         "other items were collected.",
         "Check the path named in node.json: a config or log path that leads into a "
         "credential store is a mistake (or an attack) on that node. The full list is "
         "CREDENTIAL_STORES in tpdump/hosts.py."),
    Code("TPD500", "Kubernetes API unreachable",
         "The Kubernetes part could not start: the kubeconfig (or the in-cluster service "
         "account) is missing or unusable, or the API server did not answer. The rest of the "
         "dump is not affected.",
         "Check --kubeconfig and --kube-context (`kubectl --kubeconfig FILE version` must "
         "work from this host), or pass --no-kube."),
    Code("TPD501", "Kubernetes access denied",
         "The Kubernetes identity tpdump uses may not list this resource type (HTTP 403) or "
         "was not accepted (401). The type is recorded in a `.error` file with the API's "
         "message; the dump goes on.",
         "Bind the identity to a role with `get` and `list` on the namespaces where Teleport "
         "runs (the built-in `view` ClusterRole plus `list` on the type), or accept the gap.",
         "warning"),
    Code("TPD502", "Kubernetes API call failed",
         "A Kubernetes API call answered with an error other than access denied (the API's "
         "reason and message are in the `.error` file), or with something that is not JSON.",
         "Read the message; run the same `kubectl get` by hand to reproduce."),
    Code("TPD503", "Kubernetes API call timed out",
         "A Kubernetes API call did not finish within --kube-timeout and was abandoned so "
         "that a struggling API server is not kept busy.",
         "Look at the API server's load; raise --kube-timeout."),
    Code("TPD504", "no Teleport namespace found",
         "No pod in the cluster carries the labels of Teleport's Helm charts "
         "(teleport-cluster, teleport-kube-agent) or runs a container named `teleport`, so "
         "no namespace was dumped.",
         "Name the namespaces with --kube-namespace.", "warning"),
    Code("TPD300", "interrupted",
         "The run was interrupted (Ctrl-C or SIGTERM). Everything collected until then is in "
         "the archive.",
         "Rerun when convenient."),
    Code("TPD301", "run deadline reached",
         "The whole run reached --timeout; collection stopped and what was collected is kept.",
         "Raise --timeout or --concurrency, or select fewer nodes with --nodes."),
    Code("TPD400", "archive write failed",
         "The archive could not be written (disk full, permissions). Collection stops at "
         "once (nothing more could be kept) and the unfinished `NAME.partial` file is "
         "removed: it could not be read and would keep holding the space. No file with the "
         "archive's final name is ever left by a failed run.",
         "Free space or choose another --output (`df -h` on its file system), then run "
         "again."),
    Code("TPD401", "archive damaged or unreadable",
         "`tpdump inspect` could not read the archive, a part of a split archive is missing, "
         "or a file does not match its size or SHA-256 in manifest.json (changed or "
         "truncated in transit).",
         "Copy the archive (all its parts) again and compare their sizes; join split parts "
         "with the command the run printed."),
    Code("TPD402", "archive refused: unsafe or a bomb",
         "`tpdump inspect`, `analyze` or `diff` refused an archive before unpacking the "
         "offending part: a member name that would land outside the archive root (absolute, "
         "`..`, a NUL byte), a symbolic or hard link or device member (tpdump archives hold "
         "only files and directories), or more than the reader allows: over 1,000,000 "
         "members, a member over 1 GiB or all over 4 GiB unpacked, or a stream growing over "
         "100 times its packed size (a tar or zip bomb). Nothing was extracted or written.",
         "Check where the archive came from; a dump made by tpdump never has these. Unpack "
         "it by hand in a scratch directory only if you trust it."),
)

CODES: dict[str, Code] = {c.code: c for c in _CODES}


def explain(code: str) -> Code | None:
    """The registered code, looked up case-insensitively."""
    return CODES.get(code.strip().upper())


class TpdumpError(Exception):
    """Root of tpdump's errors; carries a stable code and the exit code."""

    exit_code: ExitCode = ExitCode.USAGE
    code: str = "TPD001"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.args[0]}"


class UsageError(TpdumpError):
    """Bad flags or configuration."""


class FatalError(TpdumpError):
    """Nothing useful could be collected."""

    exit_code = ExitCode.FATAL
    code = "TPD100"


class AuthUnreachable(FatalError):
    """The auth API cannot be reached."""


class ArchiveError(TpdumpError):
    """The archive cannot be written."""

    exit_code = ExitCode.FATAL
    code = "TPD400"


@dataclass(frozen=True)
class Problem:
    """One failure or warning as data: its code, the target and a one-line message."""

    code: str
    target: str
    message: str

    @property
    def severity(self) -> str:
        known = CODES.get(self.code)
        return known.severity if known else "error"
