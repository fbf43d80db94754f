"""Property tests over the validator: whatever arrives in opaque parameters, the validator answers with
a result or a `ConfigError` whose every entry points at a field that is really in the input."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from draplugin.config import ConfigError, NetworkConfig, parse_network_config

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)

# Values that are close to valid, so the fuzzing reaches the deep checks and not only type errors.
plausible_text = st.sampled_from(
    [
        "eth0",
        "net1",
        "",
        ".",
        "a/b",
        "x" * 15,
        "x" * 16,
        "02:00:00:00:00:01",
        "01:00:00:00:00:00",
        "203.0.113.5/24",
        "203.0.113.5",
        "203.0.113.0/24",
        "2001:db8::1/64",
        "2001:db8::/32",
        "fe80::1%1/64",
        "1.2.3.4/99",
        "bridge",
        "l3s",
        "veth",
        "macvlan",
        "uverbs0",
        "netclaim.dev/v1alpha1",
        "NetworkConfig",
    ]
)
plausible = plausible_text | st.integers(-10, 70000) | json_values
route = st.dictionaries(st.sampled_from(["destination", "gateway", "metric", "via"]), plausible, max_size=4)
netdev = st.dictionaries(
    st.sampled_from(
        [
            "kind",
            "interfaceName",
            "mtu",
            "hardwareAddress",
            "addresses",
            "routes",
            "macvlan",
            "ipvlan",
            "veth",
            "bogus",
        ]
    ),
    plausible
    | st.lists(plausible, max_size=20)
    | st.lists(route, max_size=3)
    | st.dictionaries(st.sampled_from(["mode", "hostInterfaceName", "x"]), plausible, max_size=2),
    max_size=9,
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": plausible,
        "kind": plausible,
        "netdev": netdev | json_values,
        "rdma": st.dictionaries(
            st.sampled_from(["devices", "x"]), st.lists(plausible, max_size=3) | plausible
        ),
        "other": json_values,
    },
)

_SEGMENT = re.compile(r'([^.\[\]"]+)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def resolves(document: dict[str, Any], path: str) -> bool:
    """A path is honest if it walks through the input, allowing the last step to be a missing required key."""
    node: Any = document
    steps = _SEGMENT.findall(path)
    assert "".join(m.group(0) for m in _SEGMENT.finditer(path)).replace(".", "") == path.replace(".", "")
    for position, (plain, index, quoted) in enumerate(steps):
        last = position == len(steps) - 1
        key = json.loads(quoted) if quoted else plain
        if index:
            if not isinstance(node, list) or int(index) >= len(node):
                return False
            node = node[int(index)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return last and key in ("apiVersion", "kind", "destination")
    return True


def check(raw: object) -> None:
    try:
        result = parse_network_config(raw)
    except ConfigError as error:
        assert error.errors
        for problem in error.errors:
            assert problem.message
            if isinstance(raw, dict):
                assert problem.path, problem
                assert resolves(raw, problem.path), problem
            else:
                assert problem.path == ""
        return
    assert isinstance(result, NetworkConfig)
    assert isinstance(raw, dict)


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_structured_documents_never_escape_config_error(document: dict[str, Any]) -> None:
    check(document)


@settings(max_examples=500)
@given(json_values)
def test_arbitrary_json_never_escapes_config_error(raw: object) -> None:
    check(raw)


@settings(max_examples=300)
@given(st.dictionaries(st.integers() | st.none() | st.text(max_size=3), json_values, max_size=3))
def test_non_string_keys_are_reported_not_raised(raw: dict[Any, Any]) -> None:
    try:
        parse_network_config(raw)
    except ConfigError as error:
        assert all(problem.message for problem in error.errors)
