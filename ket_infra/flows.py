"""The flow catalog: what KET and each CNI need, in role terms, as data.

Every entry names its protocol, ports, the roles it goes from and to, why it
is needed and where that is written down (PORTS.md cites the same sources).
One table per source; `required_flows` picks the tables a plan needs.
Adding a CNI is adding a table here and its tests.

Protocols: "tcp", "udp", "icmp", an IANA protocol number as a string for
anything else ("4" IP-in-IP, "50" ESP), or "all" (pod CIDR only).
For icmp, `ports` holds (type, code).

Most flows go from roles (or a CIDR) to roles. A few go from roles out of the
cluster, to a CIDR (`dst_cidr`): the downloads `kismatic install` makes. Some
depend on the plan or the environment (the SSH port, the brick port range,
the registry); `install_flows` builds those.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ket_infra.plan import KUBELET_ROLES, ROLES, Node

if TYPE_CHECKING:
    from ket_infra.environment import Environment
    from ket_infra.plan import Plan

KUBELET = KUBELET_ROLES
ALL = ROLES

# Symbolic CIDR sources, resolved by the layout from the plan and environment.
POD_CIDR = "pod_cidr"  # cluster.networking.pod_cidr_block
INSTALLER = "installer_cidr"  # environment: where `kismatic install` runs
INGRESS_CLIENTS = "ingress_cidrs"  # environment: who may reach ingress 80/443
API_CLIENTS = "api_cidrs"  # environment: load balancer, operators -> 6443
PREFLIGHT = "preflight"  # /32 of master[0] and worker[0] (KET's inspector clients)
# Symbolic CIDR destinations of outbound flows.
EGRESS = "egress_cidrs"  # environment: package repositories and registries (or the NAT/proxy to them)
REGISTRY = "registry"  # docker_registry.server when it is an IP address, else egress_cidrs
# Endpoints the plan names (PORTS.md section 8): the address when the plan gives one, else the
# environment's endpoint_cidrs for the kind (the proxy and the AWS API fall back to egress_cidrs).
LOAD_BALANCER = "load_balancer"  # master.load_balancer (also a source: the balancer -> masters 6443)
NFS = "nfs"  # nfs.nfs_volume[].nfs_host
HTTP_PROXY = "http_proxy"  # cluster.networking.http_proxy
HTTPS_PROXY = "https_proxy"  # cluster.networking.https_proxy
AWS_API = "aws_api"  # cluster.cloud_provider.provider: aws
HEAPSTER_SINK = "heapster_sink"  # add_ons.heapster.options.heapster.sink
NODEPORT_CLIENTS = "nodeport_cidrs"  # environment: who may reach the NodePort Services

# GlusterFS gives every brick its own port from 49152 up; KET puts one brick of each volume on
# each storage node the volume uses, so the range bounds the volumes one storage node can serve.
BRICK_PORT_BASE = 49152
BRICK_PORTS_DEFAULT = 100
BRICK_PORTS_MAX = 65535 - BRICK_PORT_BASE + 1

KET_REPO = "kismatic v1.12.0"
ETCD_K8S = f"{KET_REPO} ansible/group_vars/etcd-k8s.yaml"
ETCD_NET = f"{KET_REPO} ansible/group_vars/etcd-networking.yaml"
ALL_YAML = f"{KET_REPO} ansible/group_vars/all.yaml"
RULE_SET = f"{KET_REPO} pkg/inspector/rule/rule_set.go"
PREFLIGHT_TASKS = f"{KET_REPO} ansible/roles/preflight/tasks/main.yaml"
K8S_PORTS = "kubernetes.io docs/reference/networking/ports-and-protocols"
SCHEDULABLE = f"{KET_REPO} ansible/group_vars/all.yaml:122,243 (register-schedulable: workers only)"
INGRESS_PODS = f"{KET_REPO} ansible/roles/nginx-ingress/templates/nginx-ingress-controller.yaml:2,22-23 (DaemonSet)"
SCRAPERS = (
    f"{KET_REPO} ansible/roles/metrics-server/templates/metrics-server.yaml, "
    "ansible/roles/heapster/templates/heapster.yaml (kubeletPort=10250)"
)
GLUSTER_SVC = f"{KET_REPO} ansible/roles/glusterfs-k8s/templates/gluster-service.yaml (kismatic-storage Service)"
GLUSTER_PEERS = f"{KET_REPO} ansible/roles/glusterfs/tasks/main.yaml (gluster peer probe); docs.gluster.org ports"
GLUSTER_BRICKS = f"{KET_REPO} ansible/roles/volume-add/tasks/main.yaml (one brick per node); docs.gluster.org ports"
SSH_PORT = f"{KET_REPO} pkg/install/plan_types.go (cluster.ssh.ssh_port), pkg/ansible/inventory.go (ansible_port)"
DOWNLOADS = f"{KET_REPO} pkg/install/plan_types.go (disconnected_installation), docs/plan-file-reference.md"
REGISTRY_DOC = f"{KET_REPO} pkg/install/plan_types.go (docker_registry.server), docs/disconnected_install.md"
NODE_TO_POD = (
    "kubernetes.io docs/tutorials/services/source-ip (NodePort traffic is masqueraded to the node address); "
    f"{KET_REPO} metrics-server APIService, pkg/cli/dashboard.go (API server proxy to pods)"
)
LB_USERS = (
    f"{KET_REPO} ansible/group_vars/all.yaml:120-121, ansible/roles/kubelet/templates/kubeconfig.j2:7, "
    "ansible/roles/kubeconfig/templates/kubeconfig.j2:7, ansible/_label-nodes.yaml:12, "
    "ansible/roles/kube-proxy/templates/kube-proxy.yaml:74-77, ansible/roles/contiv/templates/configmap.yaml:19, "
    "pkg/install/execute.go:725-731, pkg/install/validate.go:515-519"
)
NFS_MOUNTS = (
    f"{KET_REPO} ansible/_nfs-volumes.yaml:2,6, ansible/roles/nfs-volume/tasks/new-share.yaml:8-13, "
    "ansible/roles/nfs-volume/templates/add-persistent-volume.yaml:13-15, pkg/install/execute.go:767-774; "
    "nfs-utils utils/mount/stropts.c nfs_autonegotiate (no vers= option: NFSv4 first, tcp 2049 only)"
)
PROXY_USERS = (
    f"{KET_REPO} ansible/roles/docker-proxy/templates/http-proxy.conf:1-4, ansible/_docker.yaml:2,15-19, "
    "ansible/roles/packages-repo/tasks/main.yaml:11, ansible/group_vars/all.yaml:344-350, docs/http_proxy.md:11-18"
)
AWS_PROVIDER = (
    f"{KET_REPO} ansible/group_vars/all.yaml:171-172,193-194,226-227, docs/cloud_provider.md:33-94; "
    "kubernetes v1.10 pkg/cloudprovider/providers/aws/aws.go (EC2, ELB, Auto Scaling, KMS APIs over https)"
)
NODEPORTS = (
    f"{KET_REPO} ansible/roles/kube-dashboard/templates/kubernetes-dashboard.yaml:205-211, "
    "ansible/roles/heapster/templates/heapster.yaml:16-21, pkg/install/plan_types.go:502,539-543, "
    "pkg/install/validate.go:351-352; kubernetes.io Service type NodePort (default range 30000-32767)"
)
SINK = f"{KET_REPO} ansible/roles/heapster/templates/heapster.yaml:52, pkg/install/plan.go:202-204"
ON_NODE = f"{KET_REPO} docs/container-registry.md:12-13, ansible/roles/docker/tasks/main.yaml:44-46"
CALICO_REQ = "docs.tigera.io Calico requirements (network requirements)"
CALICO_AWS = "docs.tigera.io Calico reference/public-cloud/aws"
WEAVE_FAQ = "weaveworks/weave site/faq.md#ports"
WEAVE_ENC = "weaveworks/weave site/concepts/encryption-implementation.md"
CONTIV_VXLAN = "contiv/ansible roles/contiv_network/defaults/main.yml"
CONTIV_OFNET = "openshift-ansible roles/contiv/defaults/main.yml"


@dataclass(frozen=True)
class Flow:
    """Traffic that must be allowed: from some roles (or a CIDR) to some roles."""

    name: str
    protocol: str
    ports: tuple[int, int] | None
    to: tuple[str, ...]
    purpose: str
    source: str  # the document that says this flow is needed
    required_by: str
    src: tuple[str, ...] = ()  # roles the traffic comes from
    src_cidr: str | None = None  # or a symbolic CIDR source (above), or a literal CIDR
    dst_cidr: str | None = None  # outbound flows: a symbolic CIDR destination, and `to` is empty
    plan_key: str | None = None  # the plan key that asks for this flow, when one does

    def __post_init__(self) -> None:
        if bool(self.src) == bool(self.src_cidr):
            raise ValueError(f"flow {self.name}: give exactly one of src and src_cidr")
        if bool(self.to) == bool(self.dst_cidr):
            raise ValueError(f"flow {self.name}: give exactly one of to and dst_cidr")
        if self.dst_cidr and not self.src:
            raise ValueError(f"flow {self.name}: an outbound flow goes from roles")
        if self.protocol == "all" and (self.src or self.dst_cidr):
            raise ValueError(f"flow {self.name}: all protocols between roles is never allowed")


_NUMBERED = {"6": "tcp", "17": "udp", "1": "icmp"}
_LABELS = {"4": "IP-in-IP", "50": "ESP"}


def protocol_name(value: object) -> str:
    """AWS's protocol field as this catalog writes it: numbers 6/17/1 become tcp/udp/icmp."""
    text = str(value).lower()
    return _NUMBERED.get(text, text)


def protocol_label(protocol: str) -> str:
    """How a person reads a protocol: "IP-in-IP (4)", "ESP (50)", "tcp", "all"."""
    if protocol in ("tcp", "udp", "icmp", "all"):
        return protocol
    name = _LABELS.get(protocol)
    return f"{name} ({protocol})" if name else f"protocol {protocol}"


# The helpers below build the tables when this module is imported, never later: a mutation
# tool that swaps code at run time cannot reach them. tests/test_catalog_oracle.py holds the
# tables' content instead, against PORTS.md written out by hand.
# pragma: no mutate start
def _tcp(
    name: str, lo: int, hi: int, to: tuple[str, ...], src: tuple[str, ...] | str, purpose: str, cite: str, by: str
) -> Flow:
    return _flow(name, "tcp", (lo, hi), to, src, purpose, cite, by)


def _flow(
    name: str,
    protocol: str,
    ports: tuple[int, int] | None,
    to: tuple[str, ...],
    src: tuple[str, ...] | str,
    purpose: str,
    cite: str,
    by: str,
) -> Flow:
    if isinstance(src, str):
        return Flow(name, protocol, ports, to, purpose, cite, by, src_cidr=src)
    return Flow(name, protocol, ports, to, purpose, cite, by, src=src)


# pragma: no mutate end
# KET itself, while the cluster runs (PORTS.md section 1).
KET_RUNTIME: tuple[Flow, ...] = (
    _tcp("etcd-client", 2379, 2379, ("etcd",), ("master",), "Kubernetes etcd, client", ETCD_K8S, "ket"),
    _tcp("etcd-peer", 2380, 2380, ("etcd",), ("etcd",), "Kubernetes etcd, peer", ETCD_K8S, "ket"),
    _tcp("apiserver", 6443, 6443, ("master",), KUBELET, "kube-apiserver", ALL_YAML, "ket"),
    _tcp(
        "apiserver-clients",
        6443,
        6443,
        ("master",),
        API_CLIENTS,
        "kube-apiserver for the load balancer and operators",
        ALL_YAML,
        "ket",
    ),
    _tcp(
        "apiserver-installer", 6443, 6443, ("master",), INSTALLER, "kube-apiserver for the installer", ALL_YAML, "ket"
    ),
    _tcp("kubelet-api", 10250, 10250, KUBELET, ("master",), "kubelet API (logs, exec, metrics)", K8S_PORTS, "ket"),
    _tcp("ingress-http", 80, 80, ("ingress",), INGRESS_CLIENTS, "nginx ingress, http", RULE_SET, "ket"),
    _tcp("ingress-https", 443, 443, ("ingress",), INGRESS_CLIENTS, "nginx ingress, https", RULE_SET, "ket"),
    # The kismatic-storage Service every KET volume mounts through (its ports have no protocol,
    # so TCP only). 38467 is not among them: nothing listens there (only preflight checks it).
    _tcp("storage-rpcbind", 111, 111, ("storage",), KUBELET, "NFS mounts: rpcbind", GLUSTER_SVC, "ket"),
    _tcp("gluster-nfs", 2049, 2049, ("storage",), KUBELET, "NFS mounts: GlusterFS NFS", GLUSTER_SVC, "ket"),
    _tcp("gluster-nfs-aux", 38465, 38466, ("storage",), KUBELET, "NFS mounts: mountd", GLUSTER_SVC, "ket"),
    _tcp("gluster-nfs-nlm", 38468, 38469, ("storage",), KUBELET, "NFS mounts: NLM and NFS ACL", GLUSTER_SVC, "ket"),
    _tcp(
        "gluster-peers",
        24007,
        24008,
        ("storage",),
        ("storage",),
        "GlusterFS management (glusterd: peer probe, volume operations)",
        GLUSTER_PEERS,
        "ket",
    ),
)

# The networking etcd cluster, deployed by KET for calico and contiv only.
NETWORKING_ETCD: tuple[Flow, ...] = (
    _tcp(
        "etcd-networking-client",
        6666,
        6666,
        ("etcd",),
        KUBELET,
        "networking etcd, client (CNI datastore)",
        ETCD_NET,
        "ket",
    ),
    _tcp("etcd-networking-peer", 6660, 6660, ("etcd",), ("etcd",), "networking etcd, peer", ETCD_NET, "ket"),
)


# pragma: no mutate start
def _inspector(name: str, lo: int, hi: int, to: tuple[str, ...], purpose: str) -> Flow:
    return _tcp(name, lo, hi, to, PREFLIGHT, f"preflight: {purpose}", RULE_SET, "ket-preflight")


def _ping(name: str, to: str, src: str) -> Flow:
    return _flow(
        name, "icmp", (8, 0), (to,), (src,), f"preflight: ping {src} to {to}", PREFLIGHT_TASKS, "ket-preflight"
    )


# pragma: no mutate end


# `kismatic install validate`: the inspector client on master[0] and worker[0]
# checks every port of every node (TCPPortAccessible, no CNI condition), and
# the nodes ping each other. Needed before install only (`preflight: false`).
KET_PREFLIGHT: tuple[Flow, ...] = (
    _inspector("inspector", 8888, 8888, ALL, "kismatic-inspector server"),
    _inspector("inspector-etcd", 2379, 2380, ("etcd",), "etcd ports"),
    _inspector("inspector-etcd-networking-client", 6666, 6666, ("etcd",), "networking etcd client port"),
    _inspector("inspector-etcd-networking-peer", 6660, 6660, ("etcd",), "networking etcd peer port"),
    _inspector("inspector-apiserver", 6443, 6443, ("master",), "kube-apiserver port"),
    _inspector("inspector-scheduler-controller", 10251, 10252, ("master",), "scheduler and controller-manager ports"),
    _inspector("inspector-kubelet", 10250, 10250, KUBELET, "kubelet port"),
    _inspector("inspector-kube-proxy", 10256, 10256, KUBELET, "kube-proxy health port"),
    _inspector("inspector-ingress", 80, 80, ("ingress",), "ingress http port"),
    _inspector("inspector-ingress-tls", 443, 443, ("ingress",), "ingress https port"),
    _inspector("inspector-ingress-health", 10254, 10254, ("ingress",), "ingress health port"),
    _inspector("inspector-storage-heketi", 8081, 8081, ("storage",), "storage port 8081"),
    _inspector("inspector-storage-nfs", 2049, 2049, ("storage",), "GlusterFS NFS port"),
    _inspector("inspector-storage-nfs-aux", 38465, 38467, ("storage",), "GlusterFS NFS ports"),
    _ping("ping-etcd-etcd", "etcd", "etcd"),
    _ping("ping-master-etcd", "etcd", "master"),
    _ping("ping-worker-master", "master", "worker"),
    _ping("ping-ingress-master", "master", "ingress"),
    _ping("ping-worker-worker", "worker", "worker"),
    _ping("ping-ingress-worker", "worker", "ingress"),
)

CALICO_COMMON: tuple[Flow, ...] = (
    _tcp("calico-bgp", 179, 179, KUBELET, KUBELET, "Calico BGP peering (BIRD mesh)", CALICO_REQ, "calico"),
)

CALICO_OVERLAY: tuple[Flow, ...] = (
    # IP-in-IP is IP protocol 4; the /etc/protocols keyword "ipip" is 94.
    _flow("calico-ipip", "4", None, KUBELET, KUBELET, "Calico IP-in-IP tunnel", CALICO_REQ, "calico"),
)

CALICO_ROUTED: tuple[Flow, ...] = (
    # Unencapsulated pod traffic keeps pod source IPs, which a group reference
    # never matches: the pod CIDR itself must be the source.
    _flow(
        "calico-pod-traffic",
        "all",
        None,
        KUBELET,
        POD_CIDR,
        "Calico routed pod traffic (pod source IPs)",
        CALICO_AWS,
        "calico",
    ),
    # Unencapsulated traffic from a node's own address to a pod on another node: NodePort
    # traffic kube-proxy masquerades, the API server's proxy to pods (metrics-server, the
    # dashboard), host-network clients. A group rule cannot name the pod addresses it goes to,
    # and the pods' ports are the workloads' own: every tcp and udp port between kubelet nodes.
    # In overlay modes the same traffic rides inside the tunnel.
    _flow(
        "calico-node-to-pod-tcp",
        "tcp",
        (0, 65535),
        KUBELET,
        KUBELET,
        "Calico routed: node addresses to pods on other nodes (NodePort, API server proxy)",
        NODE_TO_POD,
        "calico",
    ),
    _flow(
        "calico-node-to-pod-udp",
        "udp",
        (0, 65535),
        KUBELET,
        KUBELET,
        "Calico routed: node addresses to pods on other nodes (NodePort, host-network DNS)",
        NODE_TO_POD,
        "calico",
    ),
)

WEAVE: tuple[Flow, ...] = (
    _tcp("weave-control", 6783, 6783, KUBELET, KUBELET, "Weave control plane and peer mesh", WEAVE_FAQ, "weave"),
    # UDP 6784 is the fast datapath; TCP 6784 is Weave's local API and stays closed.
    _flow(
        "weave-data",
        "udp",
        (6783, 6784),
        KUBELET,
        KUBELET,
        "Weave sleeve (6783) and fast datapath (6784)",
        WEAVE_FAQ,
        "weave",
    ),
)

WEAVE_ENCRYPTED: tuple[Flow, ...] = (
    _flow("weave-esp", "50", None, KUBELET, KUBELET, "Weave encrypted fast datapath (IPsec ESP)", WEAVE_ENC, "weave"),
)

CONTIV: tuple[Flow, ...] = (
    _flow("contiv-vxlan", "udp", (4789, 4789), KUBELET, KUBELET, "Contiv VXLAN data path", CONTIV_VXLAN, "contiv"),
    _tcp(
        "contiv-ofnet-master",
        9001,
        9001,
        ("master",),
        KUBELET,
        "Contiv ofnet master RPC (netmaster)",
        CONTIV_OFNET,
        "contiv",
    ),
    # netmaster (on the masters) calls the agents; agents do not call each other on these ports.
    _tcp(
        "contiv-ofnet-agent",
        9002,
        9003,
        KUBELET,
        ("master",),
        "Contiv ofnet agent RPC (netmaster to agents)",
        CONTIV_OFNET,
        "contiv",
    ),
    _tcp("contiv-netmaster-api", 9999, 9999, ("master",), KUBELET, "Contiv netmaster REST API", CONTIV_VXLAN, "contiv"),
)


def cni_flows(plan: Plan) -> tuple[Flow, ...]:
    """The CNI's own flows, including the networking etcd it needs."""
    cni = plan.cni
    if cni.disabled or cni.provider == "custom":
        return ()
    if cni.provider == "calico":
        mode = CALICO_OVERLAY if cni.mode == "overlay" else routed_pod_flows(plan)
        return CALICO_COMMON + mode + NETWORKING_ETCD
    if cni.provider == "weave":
        return WEAVE + (WEAVE_ENCRYPTED if cni.encrypted else ())
    if cni.provider == "contiv":
        return CONTIV + NETWORKING_ETCD
    raise ValueError(f"no flow table for CNI provider {cni.provider!r}")


def routed_pod_flows(plan: Plan) -> tuple[Flow, ...]:
    """Calico routed mode's node-to-pod rules, only towards nodes where pod-network pods run."""
    pods = plan.endpoints.pod_roles
    out = []
    for f in CALICO_ROUTED:
        if f.name.startswith("calico-node-to-pod"):
            if not pods:
                continue
            f = replace(f, to=pods, source=f"{f.source}; {SCHEDULABLE}; {INGRESS_PODS}")
        out.append(f)
    return tuple(out)


def install_flows(plan: Plan, env: Environment | None = None) -> tuple[Flow, ...]:
    """KET's flows whose ports or destinations come from the plan and the environment."""
    install = plan.install
    bricks = env.gluster_brick_ports if env is not None else BRICK_PORTS_DEFAULT
    out = [
        _tcp(
            "ssh",
            install.ssh_port,
            install.ssh_port,
            ALL,
            INSTALLER,
            "ansible over SSH from the installer (cluster.ssh.ssh_port)",
            SSH_PORT,
            "ket",
        ),
        _tcp(
            "gluster-bricks",
            BRICK_PORT_BASE,
            BRICK_PORT_BASE + bricks - 1,
            ("storage",),
            ("storage",),
            f"GlusterFS bricks, one port each from {BRICK_PORT_BASE} (gluster_brick_ports: {bricks})",
            GLUSTER_BRICKS,
            "ket",
        ),
    ]
    # Where `kismatic install` downloads from: a connected install reaches package repositories
    # and public registries; a disconnected one its internal repositories (unless packages are
    # preinstalled) and the private registry.
    proxied = {p.key.rpartition(".")[2] for p in plan.endpoints.proxies}
    direct = not proxied or (plan.endpoints.no_proxy and env is not None and env.egress_cidrs)
    if (not install.disconnected or install.packages) and (direct or len(proxied) < 2):
        what = (
            "package repositories and image registries" if not install.disconnected else "internal package repositories"
        )
        for port, scheme in ((80, "http"), (443, "https")):
            # Through the proxy for its scheme, except what no_proxy names (reached directly, at egress_cidrs).
            if direct or f"{scheme}_proxy" not in proxied:
                out.append(_outbound(f"downloads-{scheme}", port, EGRESS, f"install: {what}, {scheme}", DOWNLOADS))
    r = install.registry
    if r is not None and node_at(plan, r.host) is None and (direct or not _via_https_proxy(plan, r.host)):
        out.append(
            _outbound("registry", r.port, REGISTRY, f"install: private image registry {r.host}:{r.port}", REGISTRY_DOC)
        )
    return tuple(out)


def _via_https_proxy(plan: Plan, host: str) -> bool:
    """dockerd sends a registry's https through HTTPS_PROXY unless NO_PROXY names it (KET adds every node
    address to NO_PROXY: pkg/install/execute.go:709-712)."""
    if not any(p.key.endswith("https_proxy") for p in plan.endpoints.proxies):
        return False
    for entry in plan.endpoints.no_proxy:
        entry = entry.lower()
        if entry == "*" or host.lower() == entry.lstrip(".") or host.lower().endswith("." + entry.lstrip(".")):
            return False
    return True


def node_at(plan: Plan, host: str) -> Node | None:
    """The plan's node a host name or address names, if any."""
    return next((n for n in plan.nodes if host in (n.host, n.ip, n.internalip)), None)


def _outbound(
    name: str, port: int, dst: str, purpose: str, cite: str, src: tuple[str, ...] = ALL, key: str | None = None
) -> Flow:
    return Flow(name, "tcp", (port, port), (), purpose, cite, "ket", src=src, dst_cidr=dst, plan_key=key)


def endpoint_flows(plan: Plan) -> tuple[Flow, ...]:
    """The flows to and from endpoints the plan names (PORTS.md section 8), each with its plan key."""
    ep = plan.endpoints
    out: list[Flow] = []
    lb = ep.load_balancer
    if lb is not None and lb_master(plan) is None:
        key = "master.load_balancer"
        out.append(
            _outbound(
                "apiserver-lb",
                lb.port,
                LOAD_BALANCER,
                f"kube-apiserver through {key} {lb.host}:{lb.port}",
                LB_USERS,
                KUBELET,
                key,
            )
        )
        if not lb_public_master(plan):
            out.append(
                replace(
                    _tcp(
                        "apiserver-from-lb",
                        6443,
                        6443,
                        ("master",),
                        LOAD_BALANCER,
                        f"kube-apiserver for {key} (its proxied connections and health checks)",
                        LB_USERS,
                        "ket",
                    ),
                    plan_key=key,
                )
            )
    # master[0] mounts each share at install; kubelet mounts it wherever a claiming pod runs.
    nfs_src = tuple(r for r in ROLES if r == "master" or r in ep.schedulable)
    key = "nfs.nfs_volume[].nfs_host"
    on_nodes = [n for n in (node_at(plan, v.host) for v in ep.nfs) if n is not None]
    if len(on_nodes) < len(ep.nfs):
        out.append(_outbound("nfs", 2049, NFS, f"NFSv4 mounts of the volumes {key} names", NFS_MOUNTS, nfs_src, key))
    for n in dict.fromkeys(on_nodes):
        out.append(
            replace(
                _tcp(
                    f"nfs-on-{n.host}",
                    2049,
                    2049,
                    tuple(sorted(n.roles, key=ROLES.index)),
                    nfs_src,
                    f"NFSv4 server on {n.host} ({key})",
                    NFS_MOUNTS,
                    "ket",
                ),
                plan_key=key,
            )
        )
    for proxy in ep.proxies:
        kind = proxy.key.rpartition(".")[2]
        for i, port in enumerate(proxy.ports):
            name = kind.replace("_", "-") + (f"-{port}" if i else "")
            out.append(
                _outbound(
                    name,
                    port,
                    kind,
                    f"{proxy.key} {proxy.host}: docker pulls and packages",
                    PROXY_USERS,
                    ALL,
                    proxy.key,
                )
            )
    if ep.cloud_provider == "aws":
        out.append(
            _outbound(
                "aws-api",
                443,
                AWS_API,
                "AWS APIs for the cloud provider (cluster.cloud_provider)",
                AWS_PROVIDER,
                KUBELET,
                "cluster.cloud_provider.provider",
            )
        )
    for np in ep.nodeports:
        what = np.key.split(".")[1]
        out.append(
            replace(
                _tcp(
                    f"nodeport-{what}",
                    np.lo,
                    np.hi,
                    KUBELET,
                    NODEPORT_CLIENTS,
                    f"{what} NodePort Service ({np.key})",
                    NODEPORTS,
                    "ket",
                ),
                plan_key=np.key,
            )
        )
    if ep.heapster_sink is not None and ep.schedulable:
        sink = ep.heapster_sink
        key = "add_ons.heapster.options.heapster.sink"
        out.append(
            _outbound(
                "heapster-sink",
                sink.port,
                HEAPSTER_SINK,
                f"heapster's sink {sink.host}:{sink.port}",
                SINK,
                ep.schedulable,
                key,
            )
        )
    # Deployments run on schedulable nodes; metrics-server and heapster among them scrape every kubelet,
    # their pod addresses masqueraded to their node's.
    if (ep.heapster or ep.metrics_server) and ep.schedulable:
        out.append(
            replace(
                _tcp(
                    "kubelet-scrape",
                    10250,
                    10250,
                    KUBELET,
                    ep.schedulable,
                    "kubelet API for metrics-server and heapster (they run on schedulable nodes)",
                    f"{SCRAPERS}; {SCHEDULABLE}",
                    "ket",
                ),
                plan_key="add_ons.heapster.disable, add_ons.metrics_server.disable",
            )
        )
    registry = plan.install.registry
    host = node_at(plan, registry.host) if registry is not None else None
    if registry is not None and host is not None:
        # KET deploys no registry (v1.6 dropped it); one at a node's address is someone's own.
        out.append(
            replace(
                _tcp(
                    f"registry-on-{host.host}",
                    registry.port,
                    registry.port,
                    tuple(sorted(host.roles, key=ROLES.index)),
                    ALL,
                    f"image registry on {host.host} (docker_registry.server)",
                    ON_NODE,
                    "ket",
                ),
                plan_key="docker_registry.server",
            )
        )
    return tuple(out)  # fmt: skip


def lb_master(plan: Plan) -> Node | None:
    """The master master.load_balancer names by its host name or internal address (the apiserver flow covers it)."""
    lb = plan.endpoints.load_balancer
    if lb is None:
        return None
    return next((plan.node(h) for h in plan.hosts("master") if lb.host in (h, plan.node(h).address)), None)


def lb_public_master(plan: Plan) -> Node | None:
    """The master whose public ip master.load_balancer names (KET's own tests do this)."""
    lb = plan.endpoints.load_balancer
    if lb is None:
        return None
    return next((plan.node(h) for h in plan.hosts("master") if lb.host == plan.node(h).ip), None)


def required_flows(plan: Plan, env: Environment | None = None) -> tuple[Flow, ...]:
    """Every flow this plan needs, KET's own first, without duplicates."""
    preflight = env.preflight if env is not None else True
    extra = env.extra_flows if env is not None else ()
    flows = (
        KET_RUNTIME
        + install_flows(plan, env)
        + endpoint_flows(plan)
        + (KET_PREFLIGHT if preflight else ())
        + cni_flows(plan)
        + tuple(extra)
    )
    return tuple({f.name: f for f in flows}.values())


TABLES: tuple[tuple[Flow, ...], ...] = (
    KET_RUNTIME,
    NETWORKING_ETCD,
    KET_PREFLIGHT,
    CALICO_COMMON,
    CALICO_OVERLAY,
    CALICO_ROUTED,
    WEAVE,
    WEAVE_ENCRYPTED,
    CONTIV,
)
INSTALL_NAMES = ("ssh", "gluster-bricks", "downloads-http", "downloads-https", "registry")
# Named by endpoint_flows (some end in a host name or a port: extra_rules may not start with these).
ENDPOINT_NAMES = (
    "apiserver-lb", "apiserver-from-lb", "nfs", "http-proxy", "https-proxy", "aws-api", "nodeport-dashboard",
    "nodeport-heapster", "heapster-sink", "kubelet-scrape",
)  # fmt: skip
ENDPOINT_PREFIXES = ("nfs-on-", "registry-on-", "http-proxy-", "https-proxy-")
CATALOG_NAMES: frozenset[str] = (
    frozenset(f.name for table in TABLES for f in table) | frozenset(INSTALL_NAMES) | frozenset(ENDPOINT_NAMES)
)
