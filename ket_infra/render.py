"""Write the per-environment Terraform root module.

The root module (ket_infra/templates/main.tf.j2) holds the backend, the
provider and the call of the static module ket_infra/modules/ket-cni-network;
the rules themselves go in a generated `ket-infra.auto.tfvars.json` as data.
Templates format; they decide nothing. Both ship inside the package and are
read through importlib.resources, so an installed ket-infra works from any
directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from ket_infra.environment import Environment
from ket_infra.errors import KetInfraError
from ket_infra.layout import Rule, RuleSet

TEMPLATE = "main.tf.j2"
MODULE_NAME = "ket-cni-network"
TFVARS = "ket-infra.auto.tfvars.json"
MAIN = "main.tf"
IMPORTS = "imports.tf"
MODULE_ADDRESS = "module.ket_cni_network"
STATE_ONLY_VPC = "vpc-00000000"  # a well-formed VPC ID for a root module that creates nothing
# Characters AWS accepts in a security-group rule description.
_DESCRIPTION_BAD = re.compile(r"[^a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]")


@dataclass(frozen=True)
class Attachment:
    host: str
    group: str
    network_interface_id: str


def work_root(env: Environment) -> Path:
    """The work folder of ENV, anchored to its environment file, never to the current directory.

    `environments/NAME.yaml` works in `.work/` beside `environments/`; a file elsewhere in `.work/`
    beside itself. One environment file thus has one work folder, and one local state, wherever
    ket-infra runs from.
    """
    folder = Path(env.path).resolve().parent
    return (folder.parent if folder.name == "environments" else folder) / ".work"


def work_dir(env: Environment, base: Path | None = None) -> Path:
    """Where the root module of ENV is rendered (git-ignored): one folder inside the work folder."""
    root = base or work_root(env)
    out = root / env.name
    if out.resolve().parent != root.resolve():
        raise KetInfraError(f"environment name {env.name!r} is not one folder name; rename its environment file")
    return out


def state_identity(env: Environment, work: Path) -> str:
    """Which Terraform state owns what this environment makes: its s3 object or local file, as an AWS tag value."""
    backend = env.terraform.backend
    if backend.type == "s3":
        where = f"s3://{backend.bucket}/{backend.key}"
    else:
        where = f"local:{(work / (backend.path or 'terraform.tfstate')).resolve()}"
    tag = re.sub(r"[^\w .:/=+\-@]", "_", where)
    return tag if len(tag) <= 256 else "sha256:" + hashlib.sha256(where.encode()).hexdigest()


def _description(rule: Rule) -> str:
    text = f"{rule.purpose} [{', '.join(rule.required_by)}]"
    return _DESCRIPTION_BAD.sub("_", text)[:255]


def _protocol(protocol: str) -> str:
    return "-1" if protocol == "all" else protocol


def _ports(rule: Rule) -> dict[str, int | None]:
    if rule.protocol in ("tcp", "udp", "icmp"):
        return {"from_port": rule.from_port, "to_port": rule.to_port}
    return {"from_port": None, "to_port": None}  # the module sends -1/-1 where AWS needs it


def tfvars(rs: RuleSet, vpc_id: str, attachments: list[Attachment]) -> dict[str, Any]:
    """The module's input as data: groups, rules and attachments."""
    ingress: dict[str, Any] = {}
    egress: dict[str, Any] = {}
    for r in rs.rules:
        entry: dict[str, Any] = {"group": r.group, "protocol": _protocol(r.protocol), **_ports(r)}
        peer_key = "source_group" if r.direction == "ingress" else "destination_group"
        entry["cidr"] = r.peer.cidr
        entry[peer_key] = r.peer.group
        entry["description"] = _description(r)
        (ingress if r.direction == "ingress" else egress)[r.name] = entry
    return {
        "cluster_name": rs.cluster,
        "vpc_id": vpc_id,
        "groups": {
            g.name: {
                "roles": list(g.roles),
                "description": f"ket-infra {rs.cluster}: nodes with roles {', '.join(g.roles)}",
            }
            for g in rs.groups
        },
        "ingress_rules": ingress,
        "egress_rules": egress,
        "attachments": {
            a.host: {"group": a.group, "network_interface_id": a.network_interface_id}
            for a in sorted(attachments, key=lambda a: a.host)
        },
    }


def module_files() -> Traversable:
    """The static Terraform module, as shipped in the package."""
    return resources.files("ket_infra") / "modules" / MODULE_NAME


def _packaged(what: Traversable) -> Traversable:
    if not what.is_file() and not what.is_dir():
        raise KetInfraError(
            f"{what} is missing from the installed ket-infra package; reinstall it (pip install ket-infra)"
        )
    return what


Changing = Callable[[], None]  # called once before the first write that changes the work folder


def no_hook() -> None:
    """The CHANGING of a render nothing reads meanwhile."""


def _put(path: Path, data: bytes | None, changing: Changing) -> None:
    """Make PATH hold DATA (None: no file); call CHANGING first when that changes anything.

    A file whose content is already right is left alone: a Terraform run that reads the
    folder meanwhile (workflow.plan starts one ahead of discovery) never sees it half-written.
    """
    try:
        current: bytes | None = path.read_bytes()
    except FileNotFoundError:
        current = None
    if current == data:
        return
    changing()
    if data is None:
        path.unlink()
    else:
        path.write_bytes(data)
        os.chmod(path, 0o644)


def copy_module(out_dir: Path, changing: Changing = no_hook) -> Path:
    """Copy the static module into OUT_DIR/modules/ (the .tf files only): the folder stays self-contained."""
    source = _packaged(module_files())
    target = out_dir / "modules" / MODULE_NAME
    target.mkdir(parents=True, exist_ok=True)
    wanted = {item.name: item.read_bytes() for item in source.iterdir() if item.is_file() and item.name.endswith(".tf")}
    for stale in sorted(p for p in target.iterdir() if p.name not in wanted):
        changing()
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()
    for name, data in sorted(wanted.items()):
        _put(target / name, data, changing)
    return target


def root_module(rs: RuleSet, env: Environment, state: str = "") -> str:
    import jinja2

    template = _packaged(resources.files("ket_infra") / "templates" / TEMPLATE)
    jenv = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    jenv.filters["hcl"] = _hcl_string
    return jenv.from_string(template.read_text(encoding="utf-8")).render(
        env_name=env.name,
        state=state,
        cluster=rs.cluster,
        region=env.aws.region,
        account_id=env.aws.account_id,
        endpoint_url=env.aws.endpoint_url,
        backend=env.terraform.backend,
        module_source=f"./modules/{MODULE_NAME}",
    )


def render(
    rs: RuleSet,
    env: Environment,
    vpc_id: str,
    attachments: list[Attachment],
    out_dir: Path,
    changing: Changing = no_hook,
) -> list[Path]:
    """Write main.tf and the tfvars JSON into OUT_DIR; return their paths.

    Only what differs is written, and CHANGING is called before the first change.
    """
    return _write(rs, env, tfvars(rs, vpc_id, attachments), out_dir, changing)


def render_state_only(rs: RuleSet, env: Environment, out_dir: Path) -> list[Path]:
    """A root module that wants nothing: enough for Terraform to read the state and plan its removal.

    destroy uses it when the work folder is gone (a fresh checkout): the backend, the provider
    and the module are what they always are; the groups, rules and attachments are empty, and
    no node has to be found.
    """
    empty = {**tfvars(rs, STATE_ONLY_VPC, []), "groups": {}, "ingress_rules": {}, "egress_rules": {}}
    return _write(rs, env, empty, out_dir, no_hook)


def _write(rs: RuleSet, env: Environment, wanted: dict[str, Any], out_dir: Path, changing: Changing) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o755)
    # A copy of the static module keeps the folder self-contained and its source path stable.
    copy_module(out_dir, changing)
    files = {
        out_dir / MAIN: root_module(rs, env, state_identity(env, out_dir)),
        out_dir / TFVARS: json.dumps(wanted, indent=2, sort_keys=False) + "\n",
    }
    for path, text in files.items():
        _put(path, text.encode(), changing)
    # import blocks belong to one plan; workflow.plan writes them anew
    _put(out_dir / IMPORTS, None, changing)
    return list(files)


# --- import blocks: adopt what a killed Terraform created but never wrote to its state ------------------


@dataclass(frozen=True)
class Import:
    address: str  # e.g. module.ket_cni_network.aws_security_group.this["worker"]
    id: str  # the provider's import id
    kind: str  # group | ingress | egress | attachment


def _hcl_string(text: str) -> str:
    """A quoted HCL string: JSON escapes, and no template interpolation.

    Characters outside ASCII stay as they are: HCL reads \\uNNNN, but not JSON's surrogate pairs.
    """
    return json.dumps(text, ensure_ascii=False).replace("${", "$${").replace("%{", "%%{")


def address(resource_type: str, key: str) -> str:
    """The address of one instance of the static module's for_each resources."""
    return f"{MODULE_ADDRESS}.{resource_type}.this[{_hcl_string(key)}]"


def group_address(key: str) -> str:
    return address("aws_security_group", key)


def rule_address(direction: str, key: str) -> str:
    return address(f"aws_vpc_security_group_{direction}_rule", key)


def attachment_address(host: str) -> str:
    return address("aws_network_interface_sg_attachment", host)


def attachment_import_id(network_interface_id: str, security_group_id: str) -> str:
    """The AWS provider imports aws_network_interface_sg_attachment as ENI-ID_SG-ID."""
    return f"{network_interface_id}_{security_group_id}"


def imports_tf(imports: list[Import]) -> str:
    lines = [
        "# Generated by ket-infra: resources it made in AWS that are missing from the Terraform state",
        "# (a run was killed during apply). Terraform adopts them instead of creating duplicates.",
    ]
    for imp in imports:
        lines += ["", "import {", f"  to = {imp.address}", f"  id = {_hcl_string(imp.id)}", "}"]
    return "\n".join(lines) + "\n"


def write_imports(out_dir: Path, imports: list[Import], changing: Changing = no_hook) -> Path | None:
    """Write OUT_DIR/imports.tf for IMPORTS, or remove it when there is nothing to import."""
    path = out_dir / IMPORTS
    _put(path, imports_tf(imports).encode() if imports else None, changing)
    return path if imports else None
