# netclaim — see README.md. Every target installs what it needs (idempotent, cached outside the repo).
SHELL := /bin/bash
PY ?= $(CURDIR)/.venv/bin/python
VENV_STAMP := .venv/.netclaim-installed
export NETCLAIM_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/netclaim
TIERS := unit netns kernel runtime apiserver node

.PHONY: test test-unit test-netns test-kernel test-runtime test-apiserver test-node lint proto proto-check venv \
        deps-host deps-tools deps-kernel deps-runtime deps-apiserver deps-node bench soak demo demo-down kind-demo clean

venv: $(VENV_STAMP)
$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

proto: venv
	hack/gen-proto.sh

proto-check: venv
	hack/check-proto.sh

lint: venv
	hack/lint.sh

# Components for each tier (cached under $(NETCLAIM_CACHE); never upgrades host libc).
deps-host:
	hack/install-host-deps.sh
deps-runtime: deps-host venv
	hack/install-runtime.sh
	hack/build-containerd.sh
	hack/install-cni-plugins.sh
deps-apiserver: deps-host
	hack/install-etcd.sh
	hack/build-k8s.sh kube-apiserver
# The node tier installs the driver as operators do: the image (make image) with the chart (helm).
deps-node: deps-runtime deps-apiserver deps-tools image
	hack/build-k8s.sh
# The kernel tier's QEMU, Debian kernel + modules and initramfs (hack/install-kernel.sh).
deps-kernel:
	hack/install-kernel.sh
# The driver image as an OCI archive, without Docker (hack/build-image.sh; skipped when its inputs are
# unchanged). tests/runtime/test_image.py builds it on demand; deps-node builds it for the node tier.
image: deps-host venv
	hack/build-image.sh
# Test-side tools of the unit tier (helm for the chart checks).
deps-tools:
	hack/install-helm.sh

test-unit: venv deps-tools
	hack/run-tier.sh unit
test-netns: venv
	hack/run-tier.sh netns
# The netns tier inside a QEMU guest on a Debian kernel: test-results/kernel.xml.
test-kernel: venv deps-kernel
	hack/run-kernel-tier.sh
test-runtime: venv deps-runtime
	hack/run-tier.sh runtime
test-apiserver: venv deps-apiserver
	hack/run-tier.sh apiserver
test-node: venv deps-node
	hack/run-tier.sh node

# Runs every check and tier even when one fails, prints a per-tier summary, fails if anything failed.
test: venv
	hack/run-all.sh

bench: venv deps-runtime deps-apiserver
	$(PY) -m bench $(BENCH_ARGS)

soak: venv deps-node
	hack/run-tier.sh soak

demo: venv deps-node
	hack/demo.sh up

demo-down:
	hack/demo.sh down

kind-demo:
	hack/kind-demo.sh

clean:
	rm -rf test-results bench/out .mypy_cache .ruff_cache .pytest_cache
