# syntax=docker/dockerfile:1
# netclaim driver image: `docker build -t netclaim:0.1.0 .` (hack/kind-demo.sh does it).
#
# The same image hack/build-image.sh builds without Docker (the test bed's path): Debian bookworm with
# Debian's python3, the netclaim wheel and its dependency wheels in a venv at /opt/netclaim, the console
# scripts in /usr/local/bin, the same ENV, labels and ENTRYPOINT. tests/unit/deploy/test_image_drift.py
# keeps the two from drifting: change both together.
#
# Stage 1 builds the netclaim wheel and wheels for all its dependencies; stage 2 installs only those
# wheels (no compiler, no pip cache, no source tree).
#
# The image runs as root because the driver must: it enters pod network namespaces (setns) and changes
# links over netlink, and it uses root-owned host paths (kubelet plugin sockets, the NRI socket, netns
# bind mounts). The DaemonSet drops every capability except NET_ADMIN and SYS_ADMIN and mounts the root
# filesystem read-only (deploy/daemonset.yaml).
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY draplugin ./draplugin
COPY nriplugin ./nriplugin
# The generated protobuf modules are committed (make proto-check keeps them fresh), so no protoc here.
RUN python3 -m venv /opt/build && /opt/build/bin/pip wheel --wheel-dir /wheels .

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="netclaim" \
      org.opencontainers.image.description="Kubernetes DRA network driver (kubelet DRA plugin + containerd NRI plugin)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV LANG=C.UTF-8 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    GRPC_ENABLE_FORK_SUPPORT=0
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv /opt/netclaim \
    && /opt/netclaim/bin/pip install --no-index --find-links /wheels netclaim \
    && ln -s /opt/netclaim/bin/netclaim /usr/local/bin/netclaim \
    && ln -s /opt/netclaim/bin/kubectl-netclaim /usr/local/bin/kubectl-netclaim \
    && netclaim --help >/dev/null
USER 0:0
ENTRYPOINT ["netclaim", "run"]
