"""Device health for the kubelet (KEP-4680): link state of what the driver put in pods, debounced.

`board` holds each device's health and debounces changes; `links` probes the kernel for it. The gRPC
servicer (draplugin.kubelet.health_service) only streams the board's snapshots.
"""
