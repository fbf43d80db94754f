#!/usr/bin/env bash
# `make kind-demo`: netclaim in a kind cluster. Builds the image, creates the cluster (DRA on, NRI on),
# loads the image, installs the Helm chart, applies examples/multi-nic/, waits for its pods and prints
# `netclaim status` for each of them.
#
# What the examples assume of a node, made true on each kind node (both inside the node containers,
# nothing on the Docker host):
# - their pods run `localhost/netclaim/busybox:test` with imagePullPolicy Never (the test bed's image
#   name): a public busybox is pulled once, tagged with that name and loaded into the nodes;
# - a macvlan parent that is not the node's uplink (a kind node has only eth0, its uplink, which the
#   driver never offers): a veth pair `ncex-up0`/`ncex-up0p`, both ends up, created in each node's own
#   network namespace, the same stand-in `make demo` uses. Traffic on it stays inside the node.
#
# Needs a working Docker engine, kind, kubectl and helm. It cannot run on the project's test VMs (no
# Docker engine there): it checks everything first and stops with a message naming what is missing,
# before it changes anything. `make demo` is the demo that runs there (local node, no containers).
#
# env: CLUSTER (netclaim), KIND_CONFIG (kind-config/dra-nri.yaml), IMAGE (netclaim:<chart appVersion>),
#      EXAMPLE (examples/multi-nic), DEMO_NAMESPACE (default), HELM (helm on PATH, else the cached build
#      from hack/install-helm.sh), BUSYBOX (busybox:1.36, the public image behind the examples' name),
#      KEEP=1 to keep an existing cluster instead of failing on it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=versions.env
. hack/versions.env
CACHE=${NETCLAIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netclaim}
CHART=deploy/helm/netclaim
CLUSTER=${CLUSTER:-netclaim}
KIND_CONFIG=${KIND_CONFIG:-kind-config/dra-nri.yaml}
APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$CHART/Chart.yaml")
IMAGE=${IMAGE:-netclaim:$APP_VERSION}
EXAMPLE=${EXAMPLE:-examples/multi-nic}
NS=${DEMO_NAMESPACE:-default}
NETCLAIM=${NETCLAIM:-$ROOT/.venv/bin/netclaim}
BUSYBOX=${BUSYBOX:-busybox:1.36}
EXAMPLE_IMAGE=localhost/netclaim/busybox:test   # what examples/*/manifest.yaml name (test bed image)
UPLINK=ncex-up0                                 # the stand-in parent, as in make demo

die() { echo "kind-demo: $*" >&2; exit 1; }
step() { printf '\n=== %s\n' "$*"; }

# --- preflight: everything is checked before anything is built or created -----------------------------
problems=()
if ! command -v docker >/dev/null; then
  problems+=("docker: not installed (a Docker engine is needed to build the image and run kind nodes)")
elif ! docker info >/dev/null 2>&1; then
  problems+=("docker: the CLI is here but no Docker engine answers (docker info failed)")
fi
command -v kind >/dev/null || problems+=("kind: not installed (https://kind.sigs.k8s.io/docs/user/quick-start/)")
command -v kubectl >/dev/null || problems+=("kubectl: not installed")
HELM=${HELM:-$(command -v helm || true)}
if [ -z "$HELM" ] && [ -x "$CACHE/helm/$HELM_VERSION/helm" ]; then HELM=$CACHE/helm/$HELM_VERSION/helm; fi
[ -n "$HELM" ] || problems+=("helm: not on PATH and not cached (make deps-tools builds it)")
[ -x "$NETCLAIM" ] || problems+=("netclaim CLI: $NETCLAIM missing (make venv)")
[ -f "$KIND_CONFIG" ] || problems+=("kind config $KIND_CONFIG: no such file")
[ -d "$EXAMPLE" ] || problems+=("example $EXAMPLE: no such directory")
if [ ${#problems[@]} -gt 0 ]; then
  echo "kind-demo: cannot run here:" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  echo "kind-demo needs a machine with a Docker engine; on this VM use 'make demo' instead." >&2
  exit 2
fi
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER" && [ "${KEEP:-}" != 1 ]; then
  die "kind cluster '$CLUSTER' exists: delete it (kind delete cluster --name $CLUSTER) or set KEEP=1"
fi

# --- build, cluster, load, install ---------------------------------------------------------------------
step "build $IMAGE"
docker build -t "$IMAGE" .

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  step "create kind cluster $CLUSTER ($KIND_CONFIG)"
  kind create cluster --name "$CLUSTER" --config "$KIND_CONFIG" --wait 120s
fi
KUBECONFIG_FILE=$(mktemp)
trap 'rm -f "$KUBECONFIG_FILE"' EXIT
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_FILE"
export KUBECONFIG=$KUBECONFIG_FILE

step "load $IMAGE and the examples' $EXAMPLE_IMAGE (from $BUSYBOX) into the nodes"
kind load docker-image "$IMAGE" --name "$CLUSTER"
docker image inspect "$BUSYBOX" >/dev/null 2>&1 || docker pull "$BUSYBOX"
docker tag "$BUSYBOX" "$EXAMPLE_IMAGE"
kind load docker-image "$EXAMPLE_IMAGE" --name "$CLUSTER"

step "a stand-in macvlan parent $UPLINK in each node (the uplink eth0 is never offered)"
for node in $(kind get nodes --name "$CLUSTER"); do
  docker exec "$node" sh -ec "
    ip link show $UPLINK >/dev/null 2>&1 || ip link add $UPLINK type veth peer name ${UPLINK}p
    ip link set ${UPLINK}p up
    ip link set $UPLINK up"
  echo "$node: $(docker exec "$node" ip -br link show "$UPLINK")"
done

step "helm install netclaim"
"$HELM" upgrade --install netclaim "$CHART" --namespace netclaim --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set rdma.enabled=false --set "driver.parents={$UPLINK}" --wait --timeout 5m
kubectl -n netclaim rollout status daemonset/netclaim --timeout=180s

step "ResourceSlices published by netclaim (waiting for the macvlan device on $UPLINK)"
for _ in $(seq 60); do
  kubectl get resourceslices --field-selector spec.driver=netclaim.dev -o yaml | grep -q "macvlan-$UPLINK" && break
  sleep 2
done
kubectl get resourceslices --field-selector spec.driver=netclaim.dev
kubectl get resourceslices --field-selector spec.driver=netclaim.dev -o yaml | grep -q "macvlan-$UPLINK" ||
  die "no node published macvlan-$UPLINK: see kubectl -n netclaim logs daemonset/netclaim"

# --- the example -----------------------------------------------------------------------------------------
step "apply $EXAMPLE"
if [ -f "$EXAMPLE/kustomization.yaml" ]; then
  kubectl apply -n "$NS" -k "$EXAMPLE"
else
  kubectl apply -n "$NS" -f "$EXAMPLE"
fi
# Pods of the example: those in the namespace that hold resource claims.
pods=()
for _ in $(seq 30); do
  mapfile -t pods < <(kubectl get pods -n "$NS" \
    -o jsonpath='{range .items[?(@.spec.resourceClaims)]}{.metadata.name}{"\n"}{end}')
  [ ${#pods[@]} -gt 0 ] && break
  sleep 2
done
[ ${#pods[@]} -gt 0 ] || die "no pod with resource claims appeared in namespace $NS"
kubectl wait -n "$NS" --for=condition=Ready --timeout=300s "${pods[@]/#/pod/}"

step "netclaim status"
for pod in "${pods[@]}"; do
  echo "--- $NS/$pod"
  "$NETCLAIM" status "$pod" -n "$NS" --kubeconfig "$KUBECONFIG_FILE"
done
echo
echo "kind-demo: done. Cluster '$CLUSTER' is left running: kind delete cluster --name $CLUSTER"
echo "(the stand-in $UPLINK lives in the node containers and goes with them)"
