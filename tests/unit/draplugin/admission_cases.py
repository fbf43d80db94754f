"""Bad and good netclaim configs for the admission tests of every tier, each with the field path
Prepare gives for it: the rules of deploy/README-config.md ("Fields"), one mistake per case, and the
example of examples/bad-config/.

`policy` says whether the ValidatingAdmissionPolicy (CEL) catches the case too; the webhook catches
every case, since it runs Prepare's parser. `device` is the published device (draplugin_builders.DEVICES)
the unit tests allocate the config to when they ask Prepare for its message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
API_VERSION = "netclaim.dev/v1alpha1"


def params(**sections: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "NetworkConfig", **sections}


@dataclass(frozen=True)
class Case:
    id: str
    parameters: object
    path: str
    """Where the mistake is, relative to the config entry (Prepare prefixes `config[i]`)."""
    policy: bool = True
    device: str = "macvlan-up0"


def _bad_config_example() -> object:
    for doc in yaml.safe_load_all((REPO / "examples" / "bad-config" / "manifest.yaml").read_text()):
        if doc and doc["kind"] == "ResourceClaimTemplate":
            (entry,) = doc["spec"]["spec"]["devices"]["config"]
            return entry["opaque"]["parameters"]
    raise AssertionError("examples/bad-config has no ResourceClaimTemplate")


def _addresses(n: int) -> list[str]:
    return [f"203.0.113.{i + 1}/24" for i in range(n)]


def _routes(n: int) -> list[dict[str, str]]:
    return [{"destination": f"198.51.100.{i}/32"} for i in range(n)]


BAD: tuple[Case, ...] = (
    Case("examples-bad-config", _bad_config_example(), "netdev.interfaceName"),
    Case("not-an-object", "netdev: {}", ""),
    Case("apiVersion-missing", {"kind": "NetworkConfig"}, "apiVersion"),
    Case("apiVersion-wrong", params(apiVersion="netclaim.dev/v2"), "apiVersion"),
    Case("kind-wrong", params(kind="NetConfig"), "kind"),
    Case("unknown-top-field", params(netdevs={}), "netdevs"),
    Case("unknown-netdev-field", params(netdev={"interfacename": "net1"}), "netdev.interfacename"),
    Case("netdev-not-object", params(netdev=[]), "netdev"),
    Case("netdev-kind-unknown", params(netdev={"kind": "bridge"}), "netdev.kind"),
    Case("name-too-long", params(netdev={"interfaceName": "x" * 16}), "netdev.interfaceName"),
    Case("name-too-many-bytes", params(netdev={"interfaceName": "é" * 8}), "netdev.interfaceName"),
    Case("name-empty", params(netdev={"interfaceName": ""}), "netdev.interfaceName"),
    Case("name-dot", params(netdev={"interfaceName": ".."}), "netdev.interfaceName"),
    Case("name-slash", params(netdev={"interfaceName": "a/b"}), "netdev.interfaceName"),
    Case("name-colon", params(netdev={"interfaceName": "a:b"}), "netdev.interfaceName"),
    Case("name-space", params(netdev={"interfaceName": "a b"}), "netdev.interfaceName"),
    Case("name-eth0", params(netdev={"interfaceName": "eth0"}), "netdev.interfaceName"),
    Case("name-lo", params(netdev={"interfaceName": "lo"}), "netdev.interfaceName"),
    Case("name-number", params(netdev={"interfaceName": 5}), "netdev.interfaceName"),
    Case("mtu-too-small", params(netdev={"mtu": 67}), "netdev.mtu"),
    Case("mtu-too-big", params(netdev={"mtu": 65536}), "netdev.mtu"),
    Case("mtu-string", params(netdev={"mtu": "1500"}), "netdev.mtu"),
    Case("mac-shape", params(netdev={"hardwareAddress": "02:00:00:00:01"}), "netdev.hardwareAddress"),
    Case("mac-multicast", params(netdev={"hardwareAddress": "03:00:00:00:00:01"}), "netdev.hardwareAddress"),
    Case("mac-zero", params(netdev={"hardwareAddress": "00:00:00:00:00:00"}), "netdev.hardwareAddress"),
    Case("addresses-too-many", params(netdev={"addresses": _addresses(17)}), "netdev.addresses"),
    Case("addresses-not-list", params(netdev={"addresses": "203.0.113.5/24"}), "netdev.addresses"),
    Case("routes-too-many", params(netdev={"routes": _routes(33)}), "netdev.routes"),
    Case("macvlan-mode", params(netdev={"macvlan": {"mode": "fast"}}), "netdev.macvlan.mode"),
    Case("ipvlan-mode", params(netdev={"ipvlan": {"mode": "l4"}}), "netdev.ipvlan.mode", device="ipvlan-up0"),
    Case("vlan-id-zero", params(netdev={"vlan": {"id": 0}}), "netdev.vlan.id", device="vlan-up0"),
    Case("vlan-id-string", params(netdev={"vlan": {"id": "7"}}), "netdev.vlan.id", device="vlan-up0"),
    Case(
        "vlan-protocol",
        params(netdev={"vlan": {"protocol": "QinQ"}}),
        "netdev.vlan.protocol",
        device="vlan-up0",
    ),
    Case("vlan-unknown-field", params(netdev={"vlan": {"vid": 7}}), "netdev.vlan.vid", device="vlan-up0"),
    Case(
        "veth-host-name-long",
        params(netdev={"veth": {"hostInterfaceName": "h" * 16}}),
        "netdev.veth.hostInterfaceName",
        device="veth",
    ),
    Case("ipam-not-object", params(netdev={"ipam": ["203.0.113.0/24"]}), "netdev.ipam"),
    Case("rdma-devices-empty", params(rdma={"devices": []}), "rdma.devices", device="rdma-mlx0"),
    Case(
        "rdma-devices-too-many",
        params(rdma={"devices": [f"uverbs{i}" for i in range(17)]}),
        "rdma.devices",
        device="rdma-mlx0",
    ),
    Case("driver-enum", params(driver="uio"), "driver", device="vf-eth2v0"),
    Case("vhostUser-not-object", params(vhostUser="/run/vhost"), "vhostUser", device="vf-eth2v0"),
    Case(
        "vhostUser-unknown-field",
        params(vhostUser={"hostPath": "/run/netclaim/vhost-user/a", "mountPath": "/run/v", "socket": "x"}),
        "vhostUser.socket",
        device="vf-eth2v0",
    ),
    Case("ipoib-pkey-range", params(netdev={"ipoib": {"pkey": 0}}), "netdev.ipoib.pkey", device="ipoib-ib0"),
    Case(
        "ipoib-mode-enum",
        params(netdev={"ipoib": {"pkey": 5, "mode": "ud"}}),
        "netdev.ipoib.mode",
        device="ipoib-ib0",
    ),
    Case(
        "ipoib-unknown-field",
        params(netdev={"ipoib": {"umcast": 1}}),
        "netdev.ipoib.umcast",
        device="ipoib-ib0",
    ),
    Case("vf-not-object", params(vf=[]), "vf", device="vf-eth3v0"),
    Case("vf-unknown-field", params(vf={"rate": 100}), "vf.rate", device="vf-eth3v0"),
    Case("vf-mac-multicast", params(vf={"mac": "03:00:00:00:00:01"}), "vf.mac", device="vf-eth3v0"),
    Case("vf-vlan-range", params(vf={"vlan": 4095}), "vf.vlan", device="vf-eth3v0"),
    Case("vf-qos-range", params(vf={"vlan": 10, "qos": 8}), "vf.qos", device="vf-eth3v0"),
    Case("vf-trust-type", params(vf={"trust": "yes"}), "vf.trust", device="vf-eth3v0"),
    Case("vf-linkState-enum", params(vf={"linkState": "up"}), "vf.linkState", device="vf-eth3v0"),
    Case("vf-rate-range", params(vf={"maxTxRate": -1}), "vf.maxTxRate", device="vf-eth3v0"),
    # Beyond CEL's cheap checks: only the webhook (Prepare's parser) sees these.
    Case("address-no-prefix", params(netdev={"addresses": ["203.0.113.5"]}), "netdev.addresses[0]", False),
    Case(
        "address-duplicate",
        params(netdev={"addresses": ["2001:db8::5/64", "2001:DB8:0::5/64"]}),
        "netdev.addresses[1]",
        False,
    ),
    Case(
        "route-host-bits",
        params(netdev={"routes": [{"destination": "203.0.113.5/24"}]}),
        "netdev.routes[0].destination",
        False,
    ),
    Case(
        "route-gateway-family",
        params(netdev={"routes": [{"destination": "0.0.0.0/0", "gateway": "2001:db8::1"}]}),
        "netdev.routes[0].gateway",
        False,
    ),
    Case(
        "route-no-destination",
        params(netdev={"routes": [{"metric": 5}]}),
        "netdev.routes[0].destination",
        False,
    ),
    Case(
        "route-metric-negative",
        params(netdev={"routes": [{"destination": "0.0.0.0/0", "metric": -1}]}),
        "netdev.routes[0].metric",
        False,
    ),
    Case(
        "ipvlan-with-mac",
        params(netdev={"kind": "ipvlan", "hardwareAddress": "02:00:00:00:00:01"}),
        "netdev.hardwareAddress",
        False,
        device="ipvlan-up0",
    ),
)

GOOD: tuple[Case, ...] = (
    Case("empty", params(), ""),
    Case(
        "macvlan-full",
        params(
            netdev={
                "kind": "macvlan",
                "interfaceName": "data0",
                "mtu": 9000,
                "hardwareAddress": "02:00:00:00:00:0A",
                "addresses": _addresses(16),
                "routes": [{"destination": "0.0.0.0/0", "gateway": "203.0.113.1", "metric": 100}],
                "macvlan": {"mode": "private"},
            }
        ),
        "",
    ),
    Case("veth", params(netdev={"veth": {"hostInterfaceName": "vh0"}}), "", device="veth"),
    Case(
        "vlan",
        params(netdev={"kind": "vlan", "vlan": {"id": 4094, "protocol": "802.1ad"}}),
        "",
        device="vlan-up0",
    ),
    Case(
        "ipam",
        params(
            netdev={
                "ipam": {
                    "pool": "lab",
                    "subnets": ["203.0.113.0/25", "2001:db8::/64"],
                    "exclude": ["203.0.113.1-203.0.113.9"],
                    "gateways": ["203.0.113.1", "2001:db8::1"],
                    "routes": [{"destination": "203.0.113.128/25"}],
                }
            }
        ),
        "",
    ),
    Case("rdma", params(rdma={"devices": ["uverbs0", "rdma_cm"]}), "", device="rdma-mlx0"),
    Case("utf8-name-15-bytes", params(netdev={"interfaceName": "é" * 7 + "x"}), ""),
    Case(
        "ipoib",
        params(netdev={"interfaceName": "ib1", "ipoib": {"pkey": 0x22, "mode": "connected"}}),
        "",
        device="ipoib-ib0",
    ),
    Case(
        "sriov-vf-settings",
        params(
            vf={
                "mac": "02:00:00:00:03:01",
                "vlan": 100,
                "qos": 5,
                "spoofChk": True,
                "trust": False,
                "linkState": "enable",
                "minTxRate": 100,
                "maxTxRate": 1000,
            }
        ),
        "",
        device="vf-eth3v0",
    ),
    Case(
        "sriov-dpdk",
        params(
            driver="vfio-pci",
            vhostUser={"hostPath": "/var/run/netclaim/vhost-user/ovs", "mountPath": "/var/run/vhost-user"},
        ),
        "",
        device="vf-eth3v0",
    ),
)


def claim_object(parameters: object, *, name: str = "c", driver: str = "netclaim.dev") -> dict[str, Any]:
    """A ResourceClaim whose config[1] holds `parameters`, after an entry of another driver that
    would fail netclaim's parser (proving other drivers' entries are not judged)."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {
            "devices": {
                "requests": [{"name": "nic", "exactly": {"deviceClassName": "macvlan.netclaim.dev"}}],
                "config": [
                    {"opaque": {"driver": "other.example.com", "parameters": {"interfaceName": "x" * 40}}},
                    {"requests": ["nic"], "opaque": {"driver": driver, "parameters": parameters}},
                ],
            }
        },
    }


def template_object(parameters: object, *, name: str = "t") -> dict[str, Any]:
    claim = claim_object(parameters)
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {"spec": claim["spec"]},
    }


def class_object(parameters: object, *, name: str = "k") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {
            "selectors": [{"cel": {"expression": "device.driver == 'netclaim.dev'"}}],
            "config": [{"opaque": {"driver": "netclaim.dev", "parameters": parameters}}],
        },
    }
