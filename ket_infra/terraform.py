"""The one place that runs Terraform (or OpenTofu).

python-terraform writes the command line with explicit flags only: its
apply/destroy/output/plan helpers and state reading are broken on Terraform
>= 0.15 (beelit94/python-terraform issues 108, 113, 84, 70, 103). Always
`-input=false -no-color`. plan, apply and destroy run with Terraform's
machine-readable UI (`-json`, one JSON message per line,
https://developer.hashicorp.com/terraform/internals/machine-readable-ui):
their progress is shown live on stderr and the change summary is taken from
the plan's own messages, without a second pass over the saved plan. Plans are
saved with `-out`; destroy is a saved destroy plan too, so that what it
removes can be listed before it runs. Variable values live in the rendered
tfvars file and are never put on a command line or in a message.
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
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ket_infra.environment import Environment
from ket_infra.errors import Interrupted, KetInfraError, denied_action, lacks
from ket_infra.progress import Live, background

MIN_VERSION = (1, 5)
PLAN_FILE = "tfplan"
DESTROY_PLAN = "destroy.tfplan"
FINGERPRINT = "tfplan.fingerprint"
INPUT_DIGESTS = "tfplan.inputs.json"  # a digest per file (per key of the YAML files): what made a saved plan stale
INIT_STAMP = "ket-infra-init.sha256"  # in .terraform/: what the last successful init was run for
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
        out = {"create": 0, "update": 0, "replace": 0, "delete": 0, "import": 0}
        for c in self.changes:
            out[c.action] = out.get(c.action, 0) + 1
        return out


# An init that could not reach a provider registry, or found no provider in its mirror.
_REGISTRY_UNREACHABLE = re.compile(
    r"Failed to query available provider packages|could not connect to registry|Failed to install provider|"
    r"was not found in any of the search locations"
)
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


# How the AWS provider and the s3 backend (aws-sdk-go-v2) report a refused call.
_SDK_ERROR = re.compile(r"operation error ([A-Za-z0-9]+): (\w+), .*?api error ([\w.]+): ([^\n]*)")


def denied(error: str) -> list[str]:
    """The IAM actions Terraform's error output says the identity was refused, in order, once each."""
    found = []
    for service, operation, code, message in _SDK_ERROR.findall(error):
        action = denied_action(code, message, service, operation)
        if action is not None and action not in found:
            found.append(action)
    return found


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
        self.first = 0  # the first signal taken

    def take(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        held = self.hold and signum == signal.SIGINT and not any(n == "SIGINT" for n, _ in self.caught)
        self.caught.append((name, not held))
        if not self.first:
            self.first = signum
        if signum == signal.SIGHUP:
            signum = signal.SIGTERM  # Terraform stops gracefully on SIGTERM; SIGHUP would kill it outright
        if held:
            below_bar = "\n" if os.isatty(2) else ""  # on a terminal, below the progress bar, not on it
            said = (
                f"{below_bar}interrupt: letting {self.what} finish so that the Terraform state stays whole; "
                "press Ctrl-C again to stop it now\n"
            )
            os.write(2, said.encode())
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
    """While a Terraform process runs, SIGINT, SIGTERM and SIGHUP are ket-infra's to decide on, not Terraform's.

    A command that changes the cloud (HOLD) is let finish on the first Ctrl-C: an AWS call in
    flight when Terraform stops is lost to its state, and the next plan would have to adopt what
    it made. A second Ctrl-C, or SIGTERM (a pipeline cancelling the job) or SIGHUP (its terminal
    gone), is handed to Terraform, which stops gracefully and saves its state; one more makes
    Terraform exit at once. The handlers are in place before the process starts. Only the main
    thread takes signals.
    """
    signals = _Signals(what, hold)
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return
    saved = {s: signal.signal(s, signals.take) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
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


# planned_change actions (machine-readable UI) that change nothing in the cloud
_NO_CHANGE = ("noop", "read", "move")
_ACTIONS = {"remove": "forget"}  # Terraform's name for dropping a resource from the state only


class _Watch:
    """What one `-json` run of Terraform reports, fed one stdout line at a time (from a reader thread)."""

    def __init__(self, live: Live, applying: str) -> None:
        self.live = live
        self.applying = applying  # the phase name once resources change: applying | destroying
        self.planned: list[dict[str, Any]] = []  # planned_change.change, in Terraform's order
        self.errors: list[str] = []

    def line(self, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if kind == "refresh_start":
            self.live.enter("refreshing")
        elif kind == "refresh_complete":
            self.live.step()
        elif kind == "planned_change" and isinstance(msg.get("change"), dict):
            if self.applying == "planning":  # an apply of a saved plan lists its changes first, too
                self.live.enter("planning")
            self.planned.append(msg["change"])
        elif kind == "apply_start":
            total = sum(1 for c in self.planned if c.get("action") not in _NO_CHANGE)
            self.live.enter(self.applying, total or None)
        elif kind in ("apply_complete", "apply_errored"):
            self.live.step()
        elif kind == "diagnostic" and msg.get("@level") == "error" and isinstance(msg.get("diagnostic"), dict):
            diag = msg["diagnostic"]
            self.errors.append(f"Error: {diag.get('summary', '')}\n{diag.get('detail', '')}")

    def changes(self) -> list[tuple[str, str, str]]:
        """(action, resource type, address or key) of every planned change that changes something."""
        out = []
        for change in self.planned:
            action = str(change.get("action", ""))
            resource = change.get("resource") or {}
            if action in _NO_CHANGE or not resource:
                continue
            key = resource.get("resource_key")
            out.append((_ACTIONS.get(action, action), str(resource["resource_type"]), str(key or resource["addr"])))
        return out


def _read_lines(pipe: Any, take: Callable[[str], None]) -> None:
    for raw in iter(pipe.readline, b""):
        take(raw.decode("utf-8", errors="replace"))


def _collect(proc: subprocess.Popen[bytes], watch: _Watch | None) -> tuple[bytes, bytes]:
    """Wait for PROC; with WATCH, hand it each stdout line as it comes and tick its progress every second."""
    if watch is None:
        return proc.communicate()
    out: list[str] = []
    err: list[bytes] = []

    def take(line: str) -> None:
        out.append(line)
        watch.line(line)

    readers = [
        background(lambda: _read_lines(proc.stdout, take), "terraform stdout"),
        background(lambda: err.append(proc.stderr.read() if proc.stderr else b""), "terraform stderr"),
    ]
    # Terraform's output ends when it does: wait on the reader (woken by the last line), not on a
    # polling wait of the process, and tick the progress every second meanwhile.
    while readers[0].is_alive():
        readers[0].join(timeout=1.0)
        if readers[0].is_alive():
            watch.live.tick()
    proc.wait()
    readers[1].join()
    return "".join(out).encode(), b"".join(err)


def state_addresses(doc: dict[str, Any]) -> list[str]:
    """Every resource address of a state document as `terraform state pull` prints it (format version 4),
    child modules included, each as Terraform writes it (`module.m.type.name["key"]`)."""
    out: list[str] = []
    for resource in doc.get("resources", []):
        module = f"{resource['module']}." if resource.get("module") else ""
        data = "data." if resource.get("mode") == "data" else ""
        base = f"{module}{data}{resource['type']}.{resource['name']}"
        for instance in resource.get("instances", []):
            key = instance.get("index_key")
            if key is None:
                out.append(base)
            else:
                out.append(f"{base}[{json.dumps(key, ensure_ascii=False) if isinstance(key, str) else key}]")
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

    def _run(
        self,
        cmd: str,
        *args: str,
        ok: tuple[int, ...] = (0,),
        watch: _Watch | None = None,
        label: str | None = None,
        on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
        **flags: Any,
    ) -> tuple[int, str]:
        """Run one Terraform command; LABEL names it in messages (`destroy` for an apply of a destroy plan).

        ON_START is handed the process once it runs.
        """
        from python_terraform import IsFlagged
        from python_terraform import Terraform as PyTerraform

        class CommandLine(PyTerraform):  # type: ignore[misc]
            """python-terraform for the command line alone: its constructor would read terraform.tfstate,
            which fails while another Terraform is writing it (and ket-infra never uses what it read)."""

            def read_state_file(self, file_path: str | None = None) -> None:
                self.tfstate = None

        self.work.mkdir(parents=True, exist_ok=True)
        tf = CommandLine(working_dir=str(self.work), terraform_bin_path=self.binary)
        options = {k: (IsFlagged if v is True else v) for k, v in flags.items()}
        # python-terraform writes the command line; the process is run here, in a session of its
        # own, so that Ctrl-C reaches ket-infra alone and is handed to Terraform exactly once:
        # Terraform then stops what it is doing and saves its state before it exits.
        command = tf.generate_cmd_string(cmd, *args, **options)
        environ = {**os.environ, **self.extra_env}
        label = label or cmd
        what = f"{self.binary} {label}"
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
            if on_start is not None:
                on_start(proc)
            out_bytes, err_bytes = _collect(proc, watch)
        rc = proc.returncode
        out = out_bytes.decode("utf-8", errors="replace")
        err = err_bytes.decode("utf-8", errors="replace")
        if signals.caught:
            raise self._interrupted(what, signals, rc)
        if rc is not None and rc < 0:
            raise TerraformError(
                f"{what} was killed by {_signal_name(-rc)} in {self.work}; Terraform keeps its state as it goes: "
                f"run the same ket-infra command for environment {self.env.name} again, it converges"
            )
        if rc not in ok:
            if watch is not None and watch.errors:  # -json: the errors are diagnostics on stdout
                err = "\n".join(watch.errors)
            locked = _lock_holder(err or "")
            if locked is not None:
                raise TerraformError(self._locked_message(locked))
            refused = denied(err or out or "")
            if refused:
                raise TerraformError(f"{self.binary} {label} in {self.work}: {lacks(refused)}")
            raise TerraformError(self._failure(label, _last_error(err or "", out or "")))
        return rc, out or ""

    def _interrupted(self, what: str, signals: _Signals, rc: int | None) -> Interrupted:
        """What to say when a signal came while WHAT ran: let finish, or handed on and stopped."""
        first = signals.caught[0][0]
        again = f"run the same ket-infra command for environment {self.env.name} again, it converges"
        if not any(handed for _, handed in signals.caught):
            return Interrupted(
                f"interrupted by {first}: {what} in {self.work} was let finish (exit {rc}), so its state is "
                f"whole, and nothing after it ran; {again}",
                signals.first,
            )
        how = f"exit {rc}" if rc is None or rc >= 0 else f"killed by {_signal_name(-rc)}"
        return Interrupted(
            f"interrupted by {first}: {what} in {self.work} was asked to stop, finished the calls it had "
            f"under way and stopped ({how}); {again}",
            signals.first,
        )

    def _failure(self, cmd: str, error: str) -> str:
        if cmd == "init" and _REGISTRY_UNREACHABLE.search(error):
            where = (
                f"plugin_dir {self.plugin_dir()} lacks it"
                if self.plugin_dir()
                else "no provider mirror is set: terraform.plugin_dir is unset and so is $" + PLUGIN_DIR_VAR
            )
            return (
                f"{self.binary} init in {self.work} could not get the AWS provider ({where}): {error} -- "
                f"offline, set terraform.plugin_dir in {self.env.path} (or {PLUGIN_DIR_VAR}) to a mirror made "
                "with `terraform providers mirror DIR` on a connected machine"
            )
        return f"{self.binary} {cmd} failed in {self.work}: {error}"

    def _locked_message(self, lock: dict[str, str]) -> str:
        who = lock.get("Who", "unknown")
        since = lock.get("Created", "an unknown time")
        lock_id = lock.get("ID", "ID")
        return (
            f"the Terraform state of environment {self.env.name} is locked by {who} since {since} "
            f"(operation {lock.get('Operation', 'unknown')}): another run is still going, or one was killed. "
            f"If none is running, unlock it with: {self.binary} -chdir={self.work} force-unlock -force {lock_id} "
            f"-- then run ket-infra plan --env {self.env.arg} again"
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

    def _init_inputs(self) -> str:
        """What init depends on: the root module's files, the module copy, the mirror and the binary."""
        digest = hashlib.sha256()
        for path in [*sorted(self.work.glob("*.tf")), *sorted((self.work / "modules").rglob("*.tf"))]:
            digest.update(str(path.relative_to(self.work)).encode())
            digest.update(path.read_bytes() if path.exists() else b"<missing>")
        digest.update(f"{self.plugin_dir()}|{shutil.which(self.binary)}".encode())
        return digest.hexdigest()

    def _stamp(self) -> Path:
        return self.work / ".terraform" / INIT_STAMP

    def initialised(self, inputs: str | None = None) -> bool:
        """Whether the last successful init was run for the folder as it is (INPUTS: its _init_inputs())."""
        stamp = self._stamp()
        return stamp.exists() and stamp.read_text().strip() == (inputs or self._init_inputs())

    def init(self) -> None:
        """terraform init, skipped when nothing it depends on changed since the last one succeeded."""
        wanted = self._init_inputs()
        if self.initialised(wanted):
            self.progress(f"terraform init: up to date in {self.work}")
            return
        self.progress(f"terraform init in {self.work}")
        stamp = self._stamp()
        stamp.unlink(missing_ok=True)
        self._run("init", input=False, no_color=True, plugin_dir=self.plugin_dir(), reconfigure=True)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(wanted + "\n")

    def _watched(
        self,
        cmd: str,
        *args: str,
        label: str,
        applying: str,
        purposes: dict[str, str] | None = None,
        ok: tuple[int, ...] = (0,),
        **flags: Any,
    ) -> PlanSummary:
        """Run a plan or an apply with the machine-readable UI, its progress live on stderr; what it changes.

        PURPOSES maps a resource (type/key) to what it is for, for the summary's lines.
        """
        watch = _Watch(Live(f"{self.binary} {label}"), applying)
        watch.live.enter("starting")
        self._run_watched(cmd, *args, watch=watch, label=label, ok=ok, **flags)
        return _summarized(watch, purposes)

    def _run_watched(self, cmd: str, *args: str, watch: _Watch, label: str, ok: tuple[int, ...], **flags: Any) -> None:
        self._run(
            cmd,
            *args,
            ok=ok,
            watch=watch,
            label=label,
            json=True,
            input=False,
            no_color=True,
            lock_timeout="0s",
            **flags,
        )

    def plan(self, purposes: dict[str, str] | None = None) -> PlanSummary:
        """Plan and save it; the summary comes from the plan's own messages."""
        self.progress("terraform plan (saved to tfplan)")
        return self._watched("plan", label="plan", applying="planning", purposes=purposes, ok=(0, 2), **_PLAN_FLAGS)

    def plan_ahead(self) -> Ahead | None:
        """Start the plan in the background, or None when it cannot be stopped cleanly at any moment.

        That needs a folder rendered and initialised by an earlier run, and the local backend:
        its state lock is the operating system's, gone with the process. A lock in S3 would
        outlive a stopped run; there, and in a fresh folder, the plan waits for discovery.
        """
        if self.env.terraform.backend.type != "local" or not self.initialised():
            return None
        return Ahead(self)

    def apply(self) -> PlanSummary:
        """Apply the saved plan; what it changed."""
        self.progress("terraform apply tfplan")
        return self._watched("apply", PLAN_FILE, label="apply", applying="applying")

    def plan_destroy(self) -> PlanSummary:
        """Plan the removal of everything in the state, saved for destroy(); what it would remove."""
        self.progress("terraform plan -destroy (saved to destroy.tfplan)")
        (self.work / DESTROY_PLAN).unlink(missing_ok=True)
        return self._watched("plan", label="plan -destroy", applying="planning", destroy=True, out=DESTROY_PLAN)

    def destroy(self) -> None:
        """Apply the saved destroy plan (plan_destroy first)."""
        self.progress("terraform apply destroy.tfplan")
        try:
            self._watched("apply", DESTROY_PLAN, label="destroy", applying="destroying")
        finally:
            (self.work / DESTROY_PLAN).unlink(missing_ok=True)

    def state_resources(self) -> list[str]:
        """The addresses in the state, from the state document itself (`terraform state pull`: no provider
        is started, unlike `terraform show -json`; never a human-readable listing)."""
        rc, out = self._run("state", "pull", ok=(0, 1))
        if rc != 0 or not out.strip():
            return []
        return state_addresses(json.loads(out))

    def planned_values(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(resource type, key) -> {"before", "after"}: each change's attributes, from `terraform show -json` of
        the saved plan (never its human output); empty when there is none to read."""
        rc, out = self._run("show", PLAN_FILE, json=True, no_color=True, ok=(0, 1))
        try:
            doc = json.loads(out) if rc == 0 and out.strip() else {}
        except ValueError:
            return {}
        values: dict[tuple[str, str], dict[str, Any]] = {}
        for rc_ in doc.get("resource_changes", []) if isinstance(doc, dict) else []:
            change = rc_.get("change") if isinstance(rc_, dict) else None
            if isinstance(change, dict):
                key = (str(rc_.get("type", "")), str(rc_.get("index", rc_.get("address", ""))))
                values[key] = {"before": change.get("before"), "after": change.get("after")}
        return values

    # Staleness: apply refuses a plan made from other inputs than today's.
    def fingerprint(self, inputs: list[tuple[str, bytes]]) -> str:
        """One digest of what a saved plan was made from: (name, content) pairs."""
        digest = hashlib.sha256()
        for name, content in inputs:
            digest.update(name.encode())
            digest.update(hashlib.sha256(content).digest())
        return digest.hexdigest()

    def save_fingerprint(self, value: str) -> None:
        (self.work / FINGERPRINT).write_text(value + "\n")

    def saved_fingerprint(self) -> str | None:
        path = self.work / FINGERPRINT
        if not path.exists() or not (self.work / PLAN_FILE).exists():
            return None
        return path.read_text().strip()

    def forget_plan(self) -> None:
        """Remove the saved plans (apply's and destroy's) and the fingerprint."""
        for name in (PLAN_FILE, FINGERPRINT, INPUT_DIGESTS, DESTROY_PLAN):
            (self.work / name).unlink(missing_ok=True)


_PLAN_FLAGS: dict[str, Any] = {"out": PLAN_FILE, "detailed_exitcode": True}


def _summarized(watch: _Watch, purposes: dict[str, str] | None) -> PlanSummary:
    """The changes WATCH saw, its progress closed with their counts."""
    summary = summarize_changes(watch.changes(), purposes or {})
    words = ("to add", "to change", "to remove") if watch.applying == "planning" else ("added", "changed", "removed")
    watch.live.show()
    watch.live.finish(_counted(summary, *words))
    return summary


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL PROC's process group (Terraform leads its own session, its provider in it).

    Not once PROC has ended and been waited for: its number may then be another's.
    """
    if proc.poll() is None:
        with suppress(ProcessLookupError):  # ended meanwhile
            os.killpg(proc.pid, signal.SIGKILL)


class Ahead:
    """A `terraform plan` started before discovery has confirmed what it reads, in a thread of its own.

    Between two plans of one environment the rendered folder seldom changes, and Terraform takes
    seconds to start (provider, schemas, graph): the nodes are looked up meanwhile. Its progress
    stays hidden until result(). Whatever is about to change a file of the folder calls cancel()
    first (render does): the run is stopped as Ctrl-C stops a plan, its saved plan removed, and a
    fresh plan is made. So result() is always the plan of the folder as it now is.
    """

    def __init__(self, tf: Terraform) -> None:
        self.tf = tf
        self.watch = _Watch(Live(f"{tf.binary} plan", shown=False), "planning")
        self.watch.live.enter("starting")
        self.cancelled = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread = background(self._go, "terraform plan ahead")

    def _go(self) -> None:
        try:
            self.tf._run_watched(
                "plan", watch=self.watch, label="plan", ok=(0, 2), on_start=self._started, **_PLAN_FLAGS
            )
        except BaseException as exc:  # handed to result(), in the main thread
            self._error = exc

    def _started(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._proc = proc
            if self.cancelled:
                _kill_group(proc)

    def cancel(self) -> None:
        """Stop the run at once and wait until it has: Terraform and its provider are killed.

        A plan changes nothing in the cloud or the state, and the local state lock goes with
        the process; a graceful stop would take as long as finishing the plan.
        """
        with self._lock:
            first, self.cancelled = not self.cancelled, True
            proc = self._proc
        if first and proc is not None:
            _kill_group(proc)
        self._thread.join()
        if first:
            (self.tf.work / PLAN_FILE).unlink(missing_ok=True)

    def result(self, purposes: dict[str, str] | None = None) -> PlanSummary:
        """Wait for the run, its progress shown from now on; Ctrl-C is handed to Terraform as plan's is."""
        self.tf.progress("terraform plan (saved to tfplan), started while the nodes were looked up")
        self.watch.live.show()
        what = f"{self.tf.binary} plan"
        with _handing_on_signals(what, hold=False) as signals:
            while self._thread.is_alive():
                if signals.proc is None and self._proc is not None:
                    signals.started(self._proc)
                self._thread.join(timeout=0.1)
        if signals.caught:
            raise self.tf._interrupted(what, signals, self._proc.returncode if self._proc else None)
        if self._error is not None:
            raise self._error
        return _summarized(self.watch, purposes)


def _counted(summary: PlanSummary, add: str, change: str, remove: str) -> str:
    n = summary.counts()
    return f"{n['create'] + n['replace']} {add}, {n['update']} {change}, {n['delete'] + n['replace']} {remove}"


def summarize_changes(changes: list[tuple[str, str, str]], purposes: dict[str, str]) -> PlanSummary:
    """A summary from a plan's planned_change messages: (action, resource type, key), rules first.

    PURPOSES maps a resource's address to what it is for (the rendered rule and group
    descriptions); what the messages do not name has no purpose shown.
    """
    out = []
    for action, resource_type, key in changes:
        kind = RULE_TYPES.get(resource_type) or OTHER_TYPES.get(resource_type, "other")
        out.append(Change(action, kind, key, purposes.get(f"{resource_type}/{key}", "")))
    order = {"ingress": 0, "egress": 1, "group": 2, "attachment": 3, "other": 4}
    return PlanSummary(tuple(sorted(out, key=lambda c: (order[c.kind], c.name))))


def summary_lines(summary: PlanSummary) -> list[str]:
    if not summary.has_changes:
        return ["No changes: the cloud already matches the plan file."]
    sign = {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "forget": ".", "import": "<="}
    lines = []
    for c in summary.changes:
        what = f"{c.kind} rule" if c.kind in ("ingress", "egress") else c.kind
        tail = f": {c.purpose}" if c.purpose else ""
        lines.append(f"  {sign.get(c.action, '?'):>3} {what} {c.name}{tail}")
    n = summary.counts()
    imports = f", {n['import']} to import" if n["import"] else ""
    lines.append(
        f"Plan: {n['create']} to add, {n['update']} to change, {n['replace']} to replace, {n['delete']} to remove{imports}."
    )
    return lines
