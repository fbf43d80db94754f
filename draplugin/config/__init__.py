"""The NetworkConfig opaque-parameter schema: parsing with field-path errors, and layering of configs."""

from draplugin.config.errors import ConfigError, FieldError
from draplugin.config.merge import merge_configs
from draplugin.config.parse import parse_network_config
from draplugin.config.types import (
    API_VERSION,
    KIND,
    IpamConfig,
    IpoibConfig,
    IpvlanConfig,
    MacvlanConfig,
    NetdevConfig,
    NetworkConfig,
    RdmaConfig,
    VethConfig,
    VhostUserConfig,
    VlanConfig,
)

__all__ = [
    "API_VERSION",
    "KIND",
    "ConfigError",
    "FieldError",
    "IpamConfig",
    "IpoibConfig",
    "IpvlanConfig",
    "MacvlanConfig",
    "NetdevConfig",
    "NetworkConfig",
    "RdmaConfig",
    "VethConfig",
    "VhostUserConfig",
    "VlanConfig",
    "merge_configs",
    "parse_network_config",
]
