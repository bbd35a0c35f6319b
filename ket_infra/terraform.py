"""The one place that runs Terraform (or OpenTofu).

Through python-terraform's generic `Terraform.cmd()` with explicit flags
only: its apply/destroy/output/plan helpers and state reading are broken on
Terraform >= 0.15 (beelit94/python-terraform issues 108, 113, 84, 70, 103).
Always `-input=false -no-color`; plans are saved with `-out` and read back
with `show -json`. Variable values live in the rendered tfvars file and are
never put on a command line or in a message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ket_infra.environment import Environment
from ket_infra.errors import Interrupted, KetInfraError

MIN_VERSION = (1, 5)
PLAN_FILE = "tfplan"
FINGERPRINT = "tfplan.fingerprint"
PLUGIN_DIR_VAR = "KET_INFRA_TF_PLUGIN_DIR"
RULE_TYPES = {
    "aws_vpc_security_group_ingress_rule": "ingress",
    "aws_vpc_security_group_egress_rule": "egress",
}
OTHER_TYPES = {"aws_security_group": "group", "aws_network_interface_sg_attachment": "attachment"}


class TerraformError(KetInfraError):
    """Terraform is missing, too old, or a Terraform command failed."""


@dataclass(frozen=True)
class Change:
    action: str  # create | update | delete | replace
    kind: str  # ingress | egress | group | attachment | other
    name: str
    purpose: str


@dataclass(frozen=True)
class PlanSummary:
    changes: tuple[Change, ...] = field(default_factory=tuple)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "replace": 0, "delete": 0}
        for c in self.changes:
            out[c.action] = out.get(c.action, 0) + 1
        return out


# Commands that change the cloud: a first Ctrl-C lets them finish (see _handing_on_signals).
_CHANGES_THE_CLOUD = ("apply", "destroy")
# Terraform's warning boxes (an unreadable CLI configuration, say) are not why a command failed.
_WARNING_BOX = re.compile(r"(There are some problems with the CLI configuration:\s*)?╷[^╵]*?Warning:[^╵]*╵")


def _last_error(stderr: str, stdout: str) -> str:
    """The meaningful part of Terraform's error output, on one line."""
    text = _WARNING_BOX.sub("", stderr).strip() or _WARNING_BOX.sub("", stdout).strip()
    lines = [ln.strip(" │╷╵") for ln in text.splitlines()]
    start = next((i for i, ln in enumerate(lines) if ln.startswith("Error:")), None)
    picked = lines[start:] if start is not None else lines[-6:]
    words = " ".join(ln for ln in picked if ln)
    return re.sub(r"\s+", " ", words)[:600] or "no error output"


def _lock_holder(stderr: str) -> dict[str, str] | None:
    """The lock info Terraform prints when the state is locked, else None."""
    if "Error acquiring the state lock" not in stderr:
        return None
    info: dict[str, str] = {}
    for line in stderr.splitlines():
        m = re.match(r"^[\s│]*(ID|Path|Operation|Who|Version|Created|Info):\s*(.*?)\s*$", line)
        if m:
            info[m.group(1)] = m.group(2)
    return info


class _Signals:
    """The signals caught while one Terraform process runs, and the process to hand them to."""

    def __init__(self, what: str, hold: bool) -> None:
        self.what = what
        self.hold = hold
        self.proc: subprocess.Popen[bytes] | None = None
        self.caught: list[tuple[str, bool]] = []  # (signal name, handed on)
        self.pending: list[int] = []  # to hand on once the process exists

    def take(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        held = self.hold and signum == signal.SIGINT and not any(n == "SIGINT" for n, _ in self.caught)
        self.caught.append((name, not held))
        if held:
            os.write(
                2,
                f"interrupt: letting {self.what} finish so that the Terraform state stays whole; "
                "press Ctrl-C again to stop it now\n".encode(),
            )
        elif self.proc is None:
            self.pending.append(signum)
        elif self.proc.poll() is None:
            self.proc.send_signal(signum)

    def started(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        for signum in self.pending:
            proc.send_signal(signum)


@contextmanager
def _handing_on_signals(what: str, hold: bool) -> Iterator[_Signals]:
    """While a Terraform process runs, SIGINT and SIGTERM are ket-infra's to decide on, not Terraform's.

    A command that changes the cloud (HOLD) is let finish on the first Ctrl-C: an AWS call in
    flight when Terraform stops is lost to its state, and the next plan would have to adopt what
    it made. A second Ctrl-C, or SIGTERM (a pipeline cancelling the job), is handed to Terraform,
    which stops gracefully and saves its state; one more makes Terraform exit at once. The
    handlers are in place before the process starts. Only the main thread takes signals.
    """
    signals = _Signals(what, hold)
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return
    saved = {s: signal.signal(s, signals.take) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signals
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def state_addresses(doc: dict[str, Any]) -> list[str]:
    """Every resource address of a `terraform show -json` state document, child modules included."""
    out: list[str] = []
    pending = [doc.get("values", {}).get("root_module", {})]
    while pending:
        module = pending.pop()
        out.extend(str(r["address"]) for r in module.get("resources", []))
        pending.extend(module.get("child_modules", []))
    return out


class Terraform:
    """Terraform in one rendered working folder."""

    def __init__(self, env: Environment, work: Path, progress: Callable[[str], None] = print) -> None:
        self.env = env
        self.work = work
        self.progress = progress
        self.binary = env.terraform.binary
        from ket_infra.aws import credentials_env

        # CHECKPOINT_DISABLE: Terraform would otherwise ask checkpoint-api.hashicorp.com for news on
        # every run; ket-infra talks to no endpoint the user did not configure.
        self.extra_env = {"TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", **credentials_env(env)}

    def _run(self, cmd: str, *args: str, ok: tuple[int, ...] = (0,), **flags: Any) -> tuple[int, str]:
        from python_terraform import IsFlagged
        from python_terraform import Terraform as PyTerraform

        self.work.mkdir(parents=True, exist_ok=True)
        tf = PyTerraform(working_dir=str(self.work), terraform_bin_path=self.binary)
        options = {k: (IsFlagged if v is True else v) for k, v in flags.items()}
        # python-terraform writes the command line; the process is run here, in a session of its
        # own, so that Ctrl-C reaches ket-infra alone and is handed to Terraform exactly once:
        # Terraform then stops what it is doing and saves its state before it exits.
        command = tf.generate_cmd_string(cmd, *args, **options)
        environ = {**os.environ, **self.extra_env}
        what = f"{self.binary} {cmd}"
        with _handing_on_signals(what, hold=cmd in _CHANGES_THE_CLOUD) as signals:
            try:
                proc = subprocess.Popen(
                    command,
                    cwd=self.work,
                    env=environ,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as exc:
                raise TerraformError(f"cannot run {self.binary}: {exc.strerror}; {self._install_hint()}") from None
            signals.started(proc)
            out_bytes, err_bytes = proc.communicate()
        rc = proc.returncode
        out = out_bytes.decode("utf-8", errors="replace")
        err = err_bytes.decode("utf-8", errors="replace")
        caught = signals.caught
        if caught:
            first = caught[0][0]
            again = f"run the same ket-infra command for environment {self.env.name} again, it converges"
            if not any(handed for _, handed in caught):
                raise Interrupted(
                    f"interrupted by {first}: {what} in {self.work} was let finish (exit {rc}), so its state is "
                    f"whole, and nothing after it ran; {again}"
                )
            how = f"exit {rc}" if rc is not None and rc >= 0 else f"killed by {_signal_name(-rc)}"
            raise Interrupted(
                f"interrupted by {first}: {what} in {self.work} was asked to stop, finished the calls it had "
                f"under way and stopped ({how}); {again}"
            )
        if rc is not None and rc < 0:
            raise TerraformError(
                f"{self.binary} {cmd} was killed by {_signal_name(-rc)} in {self.work}; Terraform keeps its state as it goes: "
                f"run the same ket-infra command for environment {self.env.name} again, it converges"
            )
        if rc not in ok:
            locked = _lock_holder(err or "")
            if locked is not None:
                raise TerraformError(self._locked_message(locked))
            raise TerraformError(f"{self.binary} {cmd} failed in {self.work}: {_last_error(err or '', out or '')}")
        return rc, out or ""

    def _locked_message(self, lock: dict[str, str]) -> str:
        who = lock.get("Who", "unknown")
        since = lock.get("Created", "an unknown time")
        lock_id = lock.get("ID", "ID")
        return (
            f"the Terraform state of environment {self.env.name} is locked by {who} since {since} "
            f"(operation {lock.get('Operation', 'unknown')}): another run is still going, or one was killed. "
            f"If none is running, unlock it with: {self.binary} -chdir={self.work} force-unlock -force {lock_id} "
            f"-- then run ket-infra plan --env {self.env.name} again"
        )

    def _install_hint(self) -> str:
        return (
            f"install Terraform >= {'.'.join(map(str, MIN_VERSION))} (or OpenTofu) or set terraform.binary "
            f"in {self.env.path}"
        )

    def check_version(self) -> str:
        if shutil.which(self.binary) is None:
            raise TerraformError(
                f"{self.env.path}: terraform.binary: {self.binary!r} not found on PATH; {self._install_hint()}"
            )
        _, out = self._run("version", json=True)
        try:
            version = str(json.loads(out)["terraform_version"])
        except (ValueError, KeyError, TypeError):
            raise TerraformError(f"{self.binary} version printed no version; {self._install_hint()}") from None
        parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
        if parts < MIN_VERSION:
            raise TerraformError(f"{self.binary} is version {version}, older than 1.5; {self._install_hint()}")
        return version

    def plugin_dir(self) -> str | None:
        return self.env.terraform.plugin_dir or os.environ.get(PLUGIN_DIR_VAR) or None

    def init(self) -> None:
        self.progress(f"terraform init in {self.work}")
        self._run("init", input=False, no_color=True, plugin_dir=self.plugin_dir(), reconfigure=True)

    def plan(self) -> PlanSummary:
        self.progress("terraform plan (saved to tfplan)")
        self._run(
            "plan",
            input=False,
            no_color=True,
            lock_timeout="0s",
            out=PLAN_FILE,
            detailed_exitcode=True,
            ok=(0, 2),
        )
        _, out = self._run("show", PLAN_FILE, json=True, no_color=True)
        return summarize(out)

    def apply(self) -> None:
        self.progress("terraform apply tfplan")
        self._run("apply", PLAN_FILE, input=False, no_color=True, lock_timeout="0s")

    def destroy(self) -> None:
        self.progress("terraform destroy")
        self._run("destroy", input=False, no_color=True, auto_approve=True, lock_timeout="0s")

    def state_resources(self) -> list[str]:
        """The addresses in the state, from `terraform show -json` (never its human output)."""
        rc, out = self._run("show", json=True, no_color=True, ok=(0, 1))
        if rc != 0 or not out.strip():
            return []
        return state_addresses(json.loads(out))

    # Staleness: apply refuses a plan made from other inputs than today's.
    def fingerprint(self, inputs: list[Path]) -> str:
        digest = hashlib.sha256()
        for path in inputs:
            digest.update(str(path).encode())
            digest.update(path.read_bytes() if path.exists() else b"<missing>")
        return digest.hexdigest()

    def save_fingerprint(self, value: str) -> None:
        (self.work / FINGERPRINT).write_text(value + "\n")

    def saved_fingerprint(self) -> str | None:
        path = self.work / FINGERPRINT
        if not path.exists() or not (self.work / PLAN_FILE).exists():
            return None
        return path.read_text().strip()

    def forget_plan(self) -> None:
        for name in (PLAN_FILE, FINGERPRINT):
            (self.work / name).unlink(missing_ok=True)


def summarize(show_json: str) -> PlanSummary:
    """Changes from `terraform show -json tfplan`, rules first, named by rule."""
    try:
        doc = json.loads(show_json)
        changes = [c for rc in doc.get("resource_changes", []) if (c := _change(rc)) is not None]
    except ValueError:
        raise TerraformError("terraform show -json printed no JSON; rerun with --debug") from None
    except (AttributeError, KeyError, IndexError, TypeError):
        raise TerraformError("terraform show -json printed no plan this version can read; rerun with --debug") from None
    order = {"ingress": 0, "egress": 1, "group": 2, "attachment": 3, "other": 4}
    return PlanSummary(tuple(sorted(changes, key=lambda c: (order[c.kind], c.name))))


def _change(rc: dict[str, Any]) -> Change | None:
    """One entry of show -json's resource_changes (always with type, address and change.actions)."""
    change = rc["change"]
    actions = change["actions"]
    if actions in (["no-op"], ["read"]):
        return None
    # Terraform's actions: create, update, delete, a replace as both, or forget (out of the state only).
    action = "replace" if "create" in actions and "delete" in actions else actions[0]
    kind = RULE_TYPES.get(rc["type"]) or OTHER_TYPES.get(rc["type"], "other")
    values = change.get("after") or change.get("before") or {}
    purpose = str(values.get("description") or "") if kind in ("ingress", "egress", "group") else ""
    return Change(action, kind, str(rc.get("index", rc["address"])), purpose)


def summary_lines(summary: PlanSummary) -> list[str]:
    if not summary.has_changes:
        return ["No changes: the cloud already matches the plan file."]
    sign = {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "forget": "."}
    lines = []
    for c in summary.changes:
        what = f"{c.kind} rule" if c.kind in ("ingress", "egress") else c.kind
        tail = f": {c.purpose}" if c.purpose else ""
        lines.append(f"  {sign.get(c.action, '?'):>3} {what} {c.name}{tail}")
    n = summary.counts()
    lines.append(
        f"Plan: {n['create']} to add, {n['update']} to change, {n['replace']} to replace, {n['delete']} to remove."
    )
    return lines
