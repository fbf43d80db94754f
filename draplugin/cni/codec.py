"""A CniSpec in the plans file: field by field, like the rest of `draplugin.state.plans`.

The key is written only for `cni` devices, so plans without one keep their exact bytes and an older
driver's file (no key) reads back with `cni` unset.
"""

from __future__ import annotations

from typing import Any

from draplugin.model import CniSpec
from draplugin.state.fields import array, obj, opt_string, string


def cni_to_dict(spec: CniSpec) -> dict[str, Any]:
    return {
        "network": spec.network,
        "interfaceName": spec.interface_name,
        "networkAttachment": spec.network_attachment,
        "args": [[key, value] for key, value in spec.args],
        "capabilities": spec.capabilities,
    }


def cni_from_dict(value: object) -> CniSpec:
    data = obj(value)
    args = []
    for pair in array(data["args"]):
        key, arg = array(pair)
        args.append((string(key), string(arg)))
    return CniSpec(
        network=string(data["network"]),
        interface_name=string(data["interfaceName"]),
        network_attachment=opt_string(data["networkAttachment"]),
        args=tuple(args),
        capabilities=string(data["capabilities"]),
    )
