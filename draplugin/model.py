"""The driver's domain vocabulary: what a claim asks for, the plan to satisfy it, and what attach did.

These types are the seam between the slow, fallible half of the driver (NodePrepareResources: read the
claim, validate config, compute plans) and the time-critical half (the NRI hook executes plans inside a
pod's netns). Everything here is plain data with no I/O, so plans can be checkpointed, compared for
idempotency and handed to the hook without touching the Kubernetes API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

DRIVER_NAME = "netclaim.dev"
"""The DRA driver name (kubelet plugin, ResourceSlices, allocation results, status entries, attribute
prefix) and the API group of the opaque config. `--driver-name` may override it at run time; this is
the one place that spells the default."""


class DeviceKind(StrEnum):
    """How a device reaches the pod; chooses the handler that attaches and detaches it."""

    HOST_DEVICE = "host-device"
    SRIOV_VF = "sriov-vf"
    MACVLAN = "macvlan"
    IPVLAN = "ipvlan"
    VLAN = "vlan"
    """An 802.1Q/802.1ad sub-interface of a host parent, created in the pod netns (draplugin/devices/vlan)."""
    IPOIB = "ipoib"
    """An IPoIB child (one InfiniBand partition) of an IPoIB parent, created in the pod netns
    (draplugin/devices/ipoib)."""
    VETH = "veth"
    DUMMY = "dummy"
    RDMA = "rdma"
    ROCE = "roce"
    CNI = "cni"
    """A CNI chain from the claim's config, run in the pod netns by the hook (draplugin/cni)."""

    @property
    def is_virtual(self) -> bool:
        """Virtual links are created in the pod netns and deleted at teardown; others are moved."""
        return self in (
            DeviceKind.MACVLAN,
            DeviceKind.IPVLAN,
            DeviceKind.VLAN,
            DeviceKind.IPOIB,
            DeviceKind.VETH,
            DeviceKind.DUMMY,
        )

    @property
    def stacks_on_parent(self) -> bool:
        """Children of a host parent (`host_name` is the parent, not the device itself)."""
        return self in (DeviceKind.MACVLAN, DeviceKind.IPVLAN, DeviceKind.VLAN, DeviceKind.IPOIB)

    @property
    def has_netdev(self) -> bool:
        """Plain RDMA hands the pod character devices only; every other kind gives it a netdev."""
        return self is not DeviceKind.RDMA


@dataclass(frozen=True)
class ClaimRef:
    """Identity of a ResourceClaim as kubelet names it in NodePrepareResources."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class DeviceRef:
    """One allocation result of this driver: the key of a `status.devices[]` entry."""

    request: str
    driver: str
    pool: str
    device: str
    share_id: str | None = None


@dataclass(frozen=True)
class Route:
    """A route installed in the pod netns; `destination` is a canonical CIDR."""

    destination: str
    gateway: str | None = None
    metric: int | None = None


@dataclass(frozen=True)
class NetdevSpec:
    """Validated, defaulted network settings for one device, as the pod should see it."""

    interface_name: str
    mtu: int | None = None
    hardware_address: str | None = None
    addresses: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()
    mode: str | None = None
    """macvlan mode (bridge, private, vepa, passthru) or ipvlan mode (l2, l3, l3s)."""
    host_interface_name: str | None = None
    """veth only: name of the host-side end."""
    vlan_id: int | None = None
    """vlan only: the VLAN ID (1-4094), required for that kind."""
    vlan_protocol: str | None = None
    """vlan only: `802.1Q` or `802.1ad` (draplugin/devices/modes.VLAN_PROTOCOLS)."""
    pkey: int | None = None
    """ipoib only: the 15-bit partition key (modes.IPOIB_PKEYS), required for that kind; the kernel
    adds the full-membership bit."""


@dataclass(frozen=True)
class CharDevice:
    """A character device injected into containers (RDMA uverbs, rdma_cm)."""

    path: str
    major: int
    minor: int
    file_mode: int = 0o666


VFIO_DRIVER = "vfio-pci"
"""The kernel driver a VF is bound to for userspace (DPDK) use: config `driver` value and sysfs name."""


@dataclass(frozen=True)
class VfioSpec:
    """A VF handed to the pod as a vfio-pci function instead of a netdev.

    `original_driver` is read at Prepare before the VF is rebound and checkpointed with the plan, so
    Unprepare gives the function back to it even after a driver restart. `iommu_group` names
    /dev/vfio/<group>, the node (with /dev/vfio/vfio) the pod's containers get.
    """

    pci_address: str
    iommu_group: str = ""
    original_driver: str | None = None


VF_LINK_STATES = ("auto", "enable", "disable")
"""`vf.linkState` values, in the order of the kernel's IFLA_VF_LINK_STATE_* numbers (0, 1, 2)."""


@dataclass(frozen=True)
class VfSettings:
    """What the PF programs for one of its VFs (IFLA_VF_*), applied by the hook once the VF is placed
    (before the pod's containers start) and put back at teardown. These live on the PF, not on the
    VF: they hold for a VF bound to vfio-pci as well, and a pod cannot undo them from inside (trust,
    spoof check, VLAN, rates).

    Unset fields are left as the PF has them. `vlan` 0 means untagged; `qos` needs a VLAN."""

    pf_name: str
    vf_index: int
    mac: str | None = None
    vlan: int | None = None
    qos: int | None = None
    spoof_check: bool | None = None
    trust: bool | None = None
    link_state: str | None = None
    min_tx_rate: int | None = None
    """Mbit/s; 0 = no guarantee."""
    max_tx_rate: int | None = None
    """Mbit/s; 0 = no limit."""


@dataclass(frozen=True)
class HostMount:
    """A host directory bind-mounted into every container of the pod (vhost-user sockets), its host
    path checked at Prepare against the daemon's allowed root."""

    host_path: str
    container_path: str


@dataclass(frozen=True)
class CniSpec:
    """The CNI network a `cni` device runs, resolved at Prepare (a NetworkAttachmentDefinition is read
    then) and validated there; the hook only executes it.

    `network` is the network configuration list as canonical JSON text: text rather than a nested
    dict so plans stay plain, comparable values and the checkpoint carries the bytes the plugins get.
    """

    network: str
    """`{"cniVersion", "name", "plugins": [...]}`; empty while a NetworkAttachmentDefinition is unread."""
    interface_name: str
    """CNI_IFNAME."""
    network_attachment: str | None = None
    """`namespace/name` of the NetworkAttachmentDefinition the network came from, if any."""
    args: tuple[tuple[str, str], ...] = ()
    """CNI_ARGS pairs."""
    capabilities: str = "{}"
    """runtimeConfig values (`ips`, `mac`) as canonical JSON text, handed to plugins that declare them."""


@dataclass(frozen=True)
class DevicePlan:
    """Everything the NRI hook needs to attach one device, computed ahead of time.

    `host_name` is the host netdev the plan starts from: the device itself for host-device/sriov-vf,
    the parent for macvlan/ipvlan/vlan, unset for veth/dummy/rdma.
    """

    ref: DeviceRef
    kind: DeviceKind
    netdev: NetdevSpec | None
    host_name: str | None = None
    char_devices: tuple[CharDevice, ...] = ()
    attributes: dict[str, str] = field(default_factory=dict)
    """Published device facts copied into status `data` (pci address, parent, vf index...)."""
    cni: CniSpec | None = None
    """Only for the `cni` kind: the chain to run."""
    vfio: VfioSpec | None = None
    """Only for sriov-vf with `driver: vfio-pci`: then there is no netdev; Prepare binds the function."""
    mounts: tuple[HostMount, ...] = ()
    """Host directories (vhost-user sockets) every container of the pod gets through CreateContainer."""
    vf: VfSettings | None = None
    """Only for sriov-vf with a `vf` config: what the PF sets for this VF while the pod holds it."""


@dataclass(frozen=True)
class ClaimPlan:
    """The attach plans of one prepared claim, linked to pods through `status.reservedFor`."""

    claim: ClaimRef
    pod_uids: tuple[str, ...]
    devices: tuple[DevicePlan, ...]
    generation: int = 0
    confirmed: bool = True
    """False while the plan rests on the watch cache's copy of the claim and the driver's own GET has
    not yet confirmed that allocation (draplugin.confirm): no hook attaches it until then."""


@dataclass(frozen=True)
class AttachResult:
    """What the pod really got for one device, read back from the kernel after attach.

    `restore` carries what detach needs to undo the attach (original name and MTU of a moved host
    device, the host-side veth name...), so teardown never depends on recomputing the plan.
    """

    ref: DeviceRef
    kind: DeviceKind
    interface_name: str | None
    hardware_address: str | None
    ips: tuple[str, ...]
    netns_path: str
    restore: dict[str, Any] = field(default_factory=dict)


AttributeValue = str | int | bool


@dataclass(frozen=True)
class PublishedDevice:
    """A device as discovery sees it and the ResourceSlice publishes it.

    The planner resolves an allocation result (pool, device name) to one of these to learn the kind
    and the host netdev, so claims never have to name host interfaces themselves.
    `multi_allocatable` marks the consumable-capacity entries (one per macvlan/ipvlan parent, one
    for veth, one per RDMA device) that many claims share.
    """

    name: str
    kind: DeviceKind
    host_name: str | None
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    capacity: dict[str, str] = field(default_factory=dict)
    multi_allocatable: bool = False
    char_devices: tuple[CharDevice, ...] = ()
    exclusive_group: str | None = None
    """Devices sharing a group are two views of one piece of hardware (a RoCE NIC offered as a plain
    netdev and as `roce`): at most one of them may be allocated. Published as a shared counter, so the
    scheduler itself keeps them apart."""
