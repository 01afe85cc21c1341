"""Flagger's load tester ``type: kubectl`` task (``pkg/loadtester/kubectl.go``): ``kubectl <cmd>`` with ``cmd``
split on white space (Go's ``strings.Fields``: no quoting), run before answering, against pitwall's own
Kubernetes API as the load tester's ServiceAccount.

Flagger runs it in the load tester's pod, as that pod's ServiceAccount, whose RBAC the operator sets up. Here the
ServiceAccount is ``releases.loadtester.kubectl_service_account`` (``namespace/name``; unset: kubectl tasks are
refused), its token a short-lived one from the TokenRequest machinery, written with the server's address into a
kubeconfig of its own (0600, in a private directory removed afterwards) so it is never on a command line or in a
log. kubectl gets no other environment than ``PATH``, so it finds no other credential either. Kubernetes RBAC
(RoleBindings to that ServiceAccount) then decides what the commands may do, as in Flagger.

What runs here runs on the server's host, not in a pod of its own, so arguments that would reach beyond the API
are refused: other credentials or servers (``--kubeconfig``, ``--token``, ``--server``, ``--as``...), local
files (``-f``, ``-k``, ``--from-file``, ``-o *-file``, ``--template``...), files written (``--cache-dir``,
``--log-file``, ``--profile-output``), and subcommands that read or serve local things or run other programs
(``cp``, ``edit``, ``proxy``, ``port-forward``, ``config``, ``plugin``, ``kustomize``; any name that is not a
kubectl command would be a plugin). kubectl talks HTTPS with a token only: on a server without TLS it sends none,
so there it works only when the server asks for no credentials.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from pitwall.releases._proc import run_process

__all__ = ["KubectlRunner", "kubectl_args"]

MAX_OUTPUT = 64 << 10
TOKEN_SECONDS = 3600  # the TokenRequest default; a command longer than this loses its credential
Issuer = Callable[[str, str, int], Awaitable[str]]  # (namespace, name, seconds) -> token

COMMANDS = frozenset({
    "annotate", "api-resources", "api-versions", "apply", "attach", "auth", "autoscale", "certificate",
    "cluster-info", "cordon", "create", "debug", "delete", "describe", "diff", "drain", "events", "exec",
    "explain", "expose", "get", "label", "logs", "patch", "replace", "rollout", "run", "scale", "set", "taint",
    "top", "uncordon", "version", "wait"})
# Long flags refused (with or without ``=value``); pflag takes any unambiguous spelling only in full.
REFUSED = frozenset({
    "kubeconfig", "server", "token", "as", "as-group", "as-uid", "user", "cluster", "context",
    "certificate-authority", "client-certificate", "client-key", "insecure-skip-tls-verify", "tls-server-name",
    "username", "password", "kuberc", "cache-dir", "log-file", "log-dir", "log-flush-frequency", "profile",
    "profile-output", "filename", "kustomize", "from-file", "from-env-file", "env-file", "template", "v",
    "vmodule", "follow"})
REFUSED_SHORT = frozenset("fksv")  # -f/--filename, -k/--kustomize, -s/--server, -v (verbosity shows requests)
VALUE_SHORT = frozenset("onlcLpe")  # short flags that take a value: the rest of their word is not flags


def kubectl_args(cmd: str) -> list[str]:
    """kubectl's arguments for ``cmd`` as Flagger splits it; ValueError naming what is refused."""
    args = cmd.split()
    if not args:
        raise ValueError("cmd not found in metadata")
    for i, a in enumerate(args):
        if a == "--":
            break  # what follows goes to the command exec runs in a container
        if a.startswith("--"):
            name, _, value = a[2:].partition("=")
            if name in REFUSED:
                raise ValueError(f"kubectl flag --{name} is not allowed in pitwall's load tester")
            if name == "output" and "-file" in (value or (args[i + 1] if i + 1 < len(args) else "")):
                raise ValueError("kubectl output formats that read a file are not allowed")
        elif a.startswith("-") and len(a) > 1:
            _short(a, args[i + 1] if i + 1 < len(args) else "")
    # The command first (kubectl would run a plugin for an unknown one; flags before it are not taken here).
    if args[0] not in COMMANDS:
        raise ValueError(f"kubectl {args[0]!r} is not allowed in pitwall's load tester: cmd must start with one "
                         f"of {', '.join(sorted(COMMANDS))}")
    return args


def _short(a: str, following: str) -> None:
    """A cluster of short flags (``-Rf``, ``-ojson``, ``-n test``): pflag reads bool letters until one that takes
    a value, which is the rest of the word or the next one."""
    for j, ch in enumerate(a[1:], start=1):
        if ch in REFUSED_SHORT:
            raise ValueError(f"kubectl flag -{ch} is not allowed in pitwall's load tester")
        if ch in VALUE_SHORT:
            if ch == "o" and "-file" in (a[j + 1:].lstrip("=") or following):
                raise ValueError("kubectl output formats that read a file are not allowed")
            return


@dataclass
class KubectlRunner:
    """Runs kubectl against ``server`` (this server's own API) with a token ``issue`` makes for the load
    tester's ServiceAccount."""

    server: str
    issue: Issuer | None = None
    binary: str = "kubectl"
    tmp_dir: Path | None = None  # where each run's private directory goes (the system's by default)

    async def run(self, service_account: str, args: list[str]) -> tuple[int, bytes]:
        """(exit status, output); ValueError when kubectl cannot run here at all."""
        ns, _, name = service_account.partition("/")
        if not ns or not name:
            raise ValueError("kubectl tasks need releases.loadtester.kubectl_service_account (namespace/name)")
        exe = shutil.which(self.binary)
        if exe is None:
            raise ValueError(f"{self.binary} is not installed on the pitwall server")
        if self.issue is None:
            raise ValueError("kubectl tasks need pitwall's Kubernetes API")
        token = await self.issue(ns, name, TOKEN_SECONDS)
        home = Path(tempfile.mkdtemp(prefix="pitwall-kubectl-", dir=self.tmp_dir))  # 0700
        try:
            config = home / "config"
            fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                yaml.safe_dump(self._kubeconfig(ns, token), f)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "KUBECONFIG": str(config)}
            return await run_process([exe, *args], MAX_OUTPUT, env=env, cwd=home)
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(home)

    def _kubeconfig(self, namespace: str, token: str) -> dict[str, object]:
        cluster: dict[str, object] = {"server": self.server}
        if self.server.startswith("https://"):
            # our own listening address: the certificate may name other hosts than the one we dial
            cluster["insecure-skip-tls-verify"] = True
        return {"apiVersion": "v1", "kind": "Config", "current-context": "pitwall",
                "clusters": [{"name": "pitwall", "cluster": cluster}],
                "users": [{"name": "flagger-loadtester", "user": {"token": token}}],
                "contexts": [{"name": "pitwall", "context": {"cluster": "pitwall", "user": "flagger-loadtester",
                                                             "namespace": namespace}}]}
