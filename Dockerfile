# syntax=docker/dockerfile:1
# netclaim driver image: `docker build -t netclaim:0.1.0 .` (hack/kind-demo.sh does it).
#
# Stage 1 builds the netclaim wheel and wheels for all its dependencies; stage 2 installs only those
# wheels (no compiler, no pip cache, no source tree) into a slim Python of the same version.
#
# The image runs as root because the driver must: it enters pod network namespaces (setns) and changes
# links over netlink, and it uses root-owned host paths (kubelet plugin sockets, the NRI socket, netns
# bind mounts). The DaemonSet drops every capability except NET_ADMIN and SYS_ADMIN and mounts the root
# filesystem read-only (deploy/daemonset.yaml).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY draplugin ./draplugin
COPY nriplugin ./nriplugin
# The generated protobuf modules are committed (make proto-check keeps them fresh), so no protoc here.
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="netclaim" \
      org.opencontainers.image.description="Kubernetes DRA network driver (kubelet DRA plugin + containerd NRI plugin)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    GRPC_ENABLE_FORK_SUPPORT=0
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels netclaim \
    && netclaim --help >/dev/null
USER 0:0
ENTRYPOINT ["netclaim", "run"]
