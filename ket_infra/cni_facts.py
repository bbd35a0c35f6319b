"""KET's own advice about each CNI provider, and the node-side checks it documents.

Sources (each fact below names its line):
- KET_NET: apprenda/kismatic v1.12.0 (commit 020acfd6) docs/networking.md
- KET_IMAGES: apprenda/kismatic v1.12.0 ansible/group_vars/container_images.yaml (calico/ctl v1.6.4,
  contiv/netplugin 1.1.1, weaveworks/weave-kube 2.3.0: the versions KET deploys)
"""

from __future__ import annotations

from dataclasses import dataclass

from ket_infra.plan import Cni

KET_NET = "kismatic v1.12.0 docs/networking.md"
KET_IMAGES = "kismatic v1.12.0 ansible/group_vars/container_images.yaml"


@dataclass(frozen=True)
class Facts:
    """One column of KET's "CNI Provider Comparison" table (KET_NET lines 22-31), and why one picks it."""

    data_path: str
    requires_etcd: bool
    multicast: bool
    ingress_policy: bool
    egress_policy: bool
    can_encrypt: bool
    reasons: tuple[str, ...] = ()


FACTS: dict[str, Facts] = {
    "calico": Facts(
        data_path="L3 with BGP Peering or IPIP Encapsulation",
        requires_etcd=True,
        multicast=False,
        ingress_policy=True,
        egress_policy=True,
        can_encrypt=False,
    ),
    "weave": Facts(
        data_path="UDP Encapsulation",
        requires_etcd=False,
        multicast=True,
        ingress_policy=True,
        egress_policy=False,
        can_encrypt=True,
        reasons=("needs no etcd cluster and carries multicast; with options.weave.password it encrypts traffic (ESP)",),
    ),
    "contiv": Facts(
        data_path="VXLAN",
        requires_etcd=True,
        multicast=True,
        ingress_policy=True,  # "Yes (1)": not through the Kubernetes Network Policy API (KET_NET line 31)
        egress_policy=True,
        can_encrypt=False,
        reasons=("carries multicast and has egress policy, through Contiv's own policy mechanism",),
    ),
}

DEFAULT = Cni("calico", "overlay", False, False)  # KET_NET line 12; pkg/install/plan.go line 163 (mode overlay)
DEFAULT_REASONS = (  # KET_NET lines 13-15
    "strong network policy support (granular policy at the Pod level)",
    "routable layer 2/3 primitives instead of overlays, so network debugging is easier and predictable",
    "supported by a commercial entity with years of operational experience",
)

CONTIV_ISSUES = (940, 937, 871, 777, 942)  # KET_NET lines 60-65
CONTIV = (
    'KET supports Contiv as a "preview" (still under active development); known issues: '
    + ", ".join(f"contiv/netplugin#{n}" for n in CONTIV_ISSUES)
    + "; Contiv does not support the Kubernetes NetworkPolicy API, it applies policy through its own mechanism "
    "(kismatic docs/networking.md)"
)
WEAVE_EGRESS = "Weave has no egress policy (kismatic docs/networking.md): NetworkPolicy egress rules are not enforced"
CALICO_PLAIN = (
    "Calico cannot encrypt traffic (kismatic docs/networking.md); if pod traffic between nodes must be encrypted, "
    "choose Weave with options.weave.password (ESP)"
)


def notes(cni: Cni) -> tuple[str, ...]:
    """KET's notes about CNI where they matter: Contiv's preview status, Weave's missing egress policy,
    Calico's missing encryption."""
    if cni.disabled:
        return ()
    return {"contiv": (CONTIV,), "weave": (WEAVE_EGRESS,), "calico": (CALICO_PLAIN,)}.get(cni.provider, ())


# Node-side checks, for when the cloud lets a CNI flow through and pods still cannot talk, or when
# verify finds a CNI flow blocked and you want to see what the CNI itself says.
NODE_CHECKS: dict[str, tuple[str, ...]] = {
    # KET_NET lines 39-43 give `docker run -i --net host -v /etc/kubernetes:/etc/kubernetes -v
    # /etc/calico/calicoctl.cfg:/etc/calico/calicoctl.cfg calico/ctl:v1.1.0`; KET v1.12 deploys calico/ctl v1.6.4
    # (KET_IMAGES), whose `node status` reads BIRD's socket /var/run/calico/bird.ctl and looks for calico-felix
    # among the host's processes (projectcalico/calicoctl v1.6.4 calicoctl/commands/node/status.go): hence
    # --pid host and the socket's folder. KET's own diagnostics run `get nodes -o wide`
    # (ansible/group_vars/diagnostics.yaml line 34).
    "calico": (
        "on a node, the BGP peers and their state: docker run -i --net host --pid host -v /etc/kubernetes:/etc/kubernetes "
        "-v /etc/calico/calicoctl.cfg:/etc/calico/calicoctl.cfg -v /var/run/calico:/var/run/calico calico/ctl:v1.6.4 "
        "node status",
        "the nodes Calico knows: docker run -i --net host -v /etc/kubernetes:/etc/kubernetes "
        "-v /etc/calico/calicoctl.cfg:/etc/calico/calicoctl.cfg calico/ctl:v1.6.4 get nodes -o wide",
    ),
    # weaveworks/weave v2.3.0 site/kubernetes/kube-addon.md lines 223, 236-240 (kubectl exec ... /home/weave/weave
    # --local status) and site/troubleshooting.md lines 132, 162 (status connections, status peers); KET's weave-net
    # DaemonSet in kube-system, container weave (kismatic v1.12.0 ansible/roles/weave/templates/weave.yaml)
    "weave": (
        "find the node's Weave pod: kubectl get pods -n kube-system -l name=weave-net -o wide",
        "its peers and connections: kubectl exec -n kube-system WEAVE_POD -c weave -- /home/weave/weave --local "
        "status peers (and status connections)",
    ),
    # kismatic v1.12.0 ansible/roles/contiv/tasks/main.yaml lines 97, 135 (netctl from the netplugin image on a
    # master, netmaster on localhost:9999); contiv/netplugin 1.1.1 netctl/commands.go (global info, net ls)
    "contiv": (
        "on a master: docker run --net host --rm --entrypoint /contiv/bin/netctl contiv/netplugin:1.1.1 "
        "--netmaster http://localhost:9999 global info",
        "and its networks: docker run --net host --rm --entrypoint /contiv/bin/netctl contiv/netplugin:1.1.1 "
        "--netmaster http://localhost:9999 net ls",
    ),
}
