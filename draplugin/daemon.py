"""Wiring: one process that is both the DRA kubelet plugin and the containerd NRI plugin.

Start order matters. Plans and attachment records are loaded first (a corrupt checkpoint stops the
daemon with the file named, rather than running with a partial view of what pods should have). The NRI
stub starts before the kubelet sockets, so a pod whose claims get prepared is never started by the
runtime while we are not yet listening; ResourceSlices are published last and kept published.
Shutdown runs in reverse: the registration socket goes first (kubelet stops sending work), in-flight
prepares finish, then NRI disconnects, and the checkpoint writer flushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping, Sequence

from kubernetes.aio import client as kclient

from draplugin.allocation import AllocatedClaim
from draplugin.attach import Executor
from draplugin.attachments import AttachmentStore
from draplugin.cdi.mode import AttachMode
from draplugin.cdi.moves import RuntimeMoves
from draplugin.cdi.specdir import CdiSpecDir
from draplugin.checkpoint import Checkpoint
from draplugin.claimcache import ClaimCache
from draplugin.cni.maintenance import CniMaintenance
from draplugin.cni.nad import KubeNadReader
from draplugin.cni.prepare import CniFinisher
from draplugin.confirm import Confirmations
from draplugin.devicehealth import links as device_links
from draplugin.devicehealth.board import HealthBoard
from draplugin.devices.cni import CniHandler
from draplugin.devices.registry import default_registry
from draplugin.devices.sriov_vf import SriovVfHandler
from draplugin.discovery.filters import MULTI_KINDS, FilterPolicy
from draplugin.discovery.inventory import Inventory
from draplugin.discovery.netlink import LinkJudge, link_events
from draplugin.discovery.sysfs import SysfsReader
from draplugin.gcsweep import sweep_forever
from draplugin.health import HealthServer
from draplugin.hooks import NetworkHooks
from draplugin.ipam.allocator import Allocator
from draplugin.ipam.api import IPAddressApi
from draplugin.ipam.gc import collect_forever
from draplugin.kube.claims import KubeClaimReader
from draplugin.kube.connect import connect
from draplugin.kube.policies import PolicyEvents, PolicyWatcher
from draplugin.kube.reservations import ReservationWatcher
from draplugin.kube.slices_api import SliceApi
from draplugin.kubelet.server import KubeletServers, SocketPaths
from draplugin.metrics import ClaimCacheCollector, Metrics
from draplugin.model import ClaimRef, PublishedDevice
from draplugin.nodesetup import NodeSetup
from draplugin.planstore import PlanStore
from draplugin.policy.book import PolicyBook
from draplugin.prepare import Preparer, PrepareResult
from draplugin.publisher import Publisher
from draplugin.settings import Settings
from draplugin.state.vfledger import VfLedger
from draplugin.status.queue import StatusQueue
from draplugin.status.reporter import StatusReporter
from draplugin.status.writer import ApiStatusSink
from nriplugin import Stub

log = logging.getLogger(__name__)


def _bound_for_vfio(plans: PlanStore) -> set[str]:
    """Host names of VFs a prepared claim bound to vfio-pci: their netdev is gone from the host until
    Unprepare, yet the device stays allocated and must stay published (like a netdev in a pod)."""
    return {d.host_name for p in plans.all() for d in p.devices if d.vfio is not None and d.host_name}


class ReportingPreparer(Preparer):
    """Counts and times kubelet calls, and reports freshly prepared claims at once (`Ready=False,
    AttachPending` until a pod has them) so nobody reading the claim mistakes "not attached yet" for
    "nothing to report"."""

    def __init__(self, *, metrics: Metrics, status: StatusReporter, **kw: object):
        super().__init__(**kw)  # type: ignore[arg-type]
        self.metrics = metrics
        self.status = status

    async def prepare(
        self, claims: Sequence[ClaimRef], given: Mapping[str, AllocatedClaim] | None = None
    ) -> dict[str, PrepareResult]:
        with self.metrics.timed("NodePrepareResources") as result:
            results = await super().prepare(claims, given)
            if any(r.error for r in results.values()):
                result("partial" if any(not r.error for r in results.values()) else "error")
        for ref in claims:
            plan = self._store.get(ref.uid)
            if plan is not None and not results[ref.uid].error:
                self.status.prepared(plan)
        return results

    async def unprepare(self, claims: Sequence[ClaimRef]) -> dict[str, str | None]:
        with self.metrics.timed("NodeUnprepareResources") as result:
            errors = await super().unprepare(claims)
            if any(errors.values()):
                result("error")
        return errors


def _moved_devices(plans: PlanStore) -> list[PublishedDevice]:
    """Host devices of prepared claims: after a restart those already inside a pod are invisible on the
    host, yet must stay published while allocated. Only kind and name are carried: the plan keeps the
    other attributes as strings, and republishing an int attribute as a string would break selectors."""
    return [
        PublishedDevice(
            name=d.ref.device,
            kind=d.kind,
            host_name=d.host_name,
            attributes={"kind": d.kind.value, "ifName": d.host_name},
        )
        for plan in plans.all()
        for d in plan.devices
        if not d.kind.is_virtual and d.host_name is not None
    ]


def _stacking_parents(inventory: Inventory) -> set[str]:
    """Interfaces a CNI macvlan/ipvlan/vlan may name as `master`: the parents this node publishes."""
    return {d.host_name for d in inventory.devices if d.kind in MULTI_KINDS and d.host_name is not None}


async def _api_client(settings: Settings, configuration: kclient.Configuration | None) -> kclient.ApiClient:
    """The one client the daemon uses; `configuration` is what the CLI already loaded (and checked)."""
    if configuration is None:
        kubeconfig = str(settings.kubeconfig) if settings.kubeconfig else None
        configuration = (await connect(kubeconfig, search=False)).configuration
    configuration.proxy = None
    return kclient.ApiClient(configuration)


class Daemon:
    def __init__(self, settings: Settings, configuration: kclient.Configuration | None = None) -> None:
        self.settings = settings
        self._configuration = configuration
        self.metrics = Metrics()
        self.stopping = asyncio.Event()
        self.stub: Stub | None = None
        self.kubelet: KubeletServers | None = None

    def readiness(self) -> list[str]:
        reasons = []
        if self.kubelet is None or not self.kubelet.registration.registered.is_set():
            reasons.append("not registered with kubelet")
        if self.stub is None or not self.stub.synchronized:
            reasons.append("not connected to the NRI runtime")
        return reasons

    async def run(self) -> None:
        s = self.settings
        plans = PlanStore.open(Checkpoint(s.plans_path))
        attachments = AttachmentStore.open(s.attachments_path)
        api = await _api_client(s, self._configuration)
        status = StatusQueue(ApiStatusSink(api, driver=s.driver, node=s.node_name), driver=s.driver)
        self.metrics.watch_status(status)
        reporter = StatusReporter(plans, attachments, status)
        cni = CniHandler(s.cni_bin_dirs, s.state_dir / "cni")
        sriov = SriovVfHandler(VfLedger(s.vf_ledger_path))
        executor = Executor(registry=default_registry(cni, sriov))
        hooks = NetworkHooks(plans, executor, attachments, self.metrics, reporter)
        hooks.sandboxes.maintenance = CniMaintenance(cni, self.metrics)  # CHECK and GC on Synchronize
        policy = FilterPolicy(
            virtual_kinds=s.virtual_kinds,
            parents=s.parents,
            offer=s.offer,
            rdma=s.rdma,
            device_filter=s.device_filter,
        )
        policy_events = PolicyEvents(api, s.driver, s.node_name)
        device_policies = PolicyBook(s.node_name, report=policy_events)
        inventory = Inventory(
            sysfs=SysfsReader(s.sysfs_root),
            policy=policy,
            allocated=lambda: attachments.in_use_host_names() | _bound_for_vfio(plans),
            dev_root=s.dev_root,
            device_policy=device_policies,
        )
        moves = await self._attach_mode(hooks, plans)
        allocator = Allocator(IPAddressApi(api, manager=s.driver), node=s.node_name)
        claim_reader = KubeClaimReader(kclient.ResourceV1Api(api))
        claim_cache = ClaimCache()
        confirmations = Confirmations()
        hooks.sandboxes.confirmations = confirmations
        preparer = ReportingPreparer(
            metrics=self.metrics,
            status=reporter,
            driver=s.driver,
            node=s.node_name,
            reader=claim_reader,
            lookup=inventory,
            store=plans,
            cleanup=hooks.sandboxes.cleanup_for_unprepare,
            settled=hooks.sandboxes.forget_idle,
            allocator=allocator,
            finish=CniFinisher(s.cni_bin_dirs, lambda: _stacking_parents(inventory), KubeNadReader(api)),
            cdi=moves,
            node_setup=NodeSetup(s.sysfs_root, s.dev_root, s.vhost_user_root),
            cache=claim_cache,
            confirmations=confirmations,
        )
        self.metrics.watch_claim_cache(
            ClaimCacheCollector(claim_cache, confirmations, lambda: preparer.replanned)
        )
        health = HealthServer(s.http_address, self.metrics.registry, self.readiness)
        self.stub = Stub(
            hooks, s.nri_plugin_name, s.nri_plugin_index, socket_path=str(s.nri_socket), watchdog_share=0.25
        )
        device_health = HealthBoard()
        self.kubelet = KubeletServers(
            SocketPaths(s.driver, s.registry_dir, s.plugins_dir), preparer, health=device_health
        )
        publisher = Publisher(
            SliceApi(api, s.driver, s.node_name, lookup_owner=True),
            inventory.refresh,
            node=s.node_name,
            driver=s.driver,
            resync_seconds=s.resync_seconds,
        )
        policy_watcher = PolicyWatcher.over(api, s.node_name, device_policies, publisher.poke)
        inventory.seed(_moved_devices(plans))
        await inventory.refresh()  # the planner needs the inventory before the first prepare
        await _load_addresses(allocator)
        tasks: list[asyncio.Task[None]] = []
        try:
            tasks.append(asyncio.create_task(policy_watcher.run(), name="device-policies"))
            attachments.start()
            status.start()
            await health.start()
            for plan in plans.all():  # checkpointed before a crash cut its confirmation short
                if not plan.confirmed:
                    preparer.confirm(plan, None)
            tasks.append(asyncio.create_task(self.stub.run(), name="nri"))
            await _nri_first(self.stub, within=NRI_FIRST_SECONDS)
            await self.kubelet.start()
            publishing = _publish(publisher, device_policies, inventory.notice_matters)
            tasks.append(asyncio.create_task(publishing, name="publisher"))
            watcher = ReservationWatcher(api, plans, cache=claim_cache)
            tasks.append(asyncio.create_task(watcher.run(), name="reservations"))
            tasks.append(asyncio.create_task(self._gauges(status, publisher, inventory), name="gauges"))
            tasks.append(asyncio.create_task(_resync(reporter, s.resync_seconds), name="status-resync"))
            health_task = device_links.watch(device_health, attachments.all, pool=s.node_name)
            tasks.append(asyncio.create_task(health_task, name="device-health"))
            prepared = lambda uid: plans.get(uid) is not None  # noqa: E731
            tasks.append(
                asyncio.create_task(collect_forever(allocator, claim_reader, prepared), name="ipam-gc")
            )
            tasks.append(asyncio.create_task(sweep_forever(), name="gc-sweep"))  # start-up is over
            log.info("netclaim %s running on node %s", s.driver, s.node_name)
            await self._wait(tasks)
        finally:
            log.info("netclaim stopping")
            # Publishing, watches and GC stop first: at `helm uninstall` the RBAC goes at the same time
            # as the pod, and a publish racing it only logs a 403. The NRI task serves the drain.
            background = [task for task in tasks if task.get_name() != "nri"]
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.kubelet.stop(grace=10.0)
            await confirmations.aclose()
            if self.stub.synchronized:  # without a runtime connection no RunPodSandbox can come
                await _drain(plans, attachments, s.drain_seconds)
            await self.stub.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await hooks.aclose()
            await policy_events.aclose()
            await status.wait_idle(within=2.0)
            await status.aclose()
            await attachments.aclose()
            try:
                await plans.fold()
            except OSError as error:  # the journal still holds every change; the next start folds it
                log.warning("folding the plans journal into %s failed: %s", s.plans_path, error)
            await health.stop()
            executor.close()
            await api.close()

    async def _attach_mode(self, hooks: NetworkHooks, plans: PlanStore) -> RuntimeMoves | None:
        """None in nri mode; else the CDI side, its spec dir synced with the prepared plans, told the
        runtime's name and version at each NRI Configure (auto decides from them)."""
        s = self.settings
        if s.attach_mode is AttachMode.NRI:
            log.info("attach mode nri: the hook moves every device")
            self.metrics.set_attach_mode("nri")
            return None
        moves = RuntimeMoves(CdiSpecDir(s.cdi_spec_dir, s.driver), s.attach_mode)
        await moves.start(plans.all())
        moves.serve(hooks, self.metrics)
        log.info(
            "attach mode %s (%s until the runtime reports itself), CDI specs in %s",
            s.attach_mode,
            moves.active,
            s.cdi_spec_dir,
        )
        return moves

    async def _wait(self, tasks: list[asyncio.Task[None]]) -> None:
        """Until a signal asks to stop or a component dies (which is a bug: crash loudly)."""
        stop = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        for task in done:
            if task is not stop and task.exception() is not None:
                raise RuntimeError(f"component {task.get_name()} failed") from task.exception()

    async def _gauges(self, status: StatusQueue, publisher: Publisher, inventory: Inventory) -> None:
        while True:
            if publisher.last is not None:
                self.metrics.devices_published.set(len(inventory.devices))
            await asyncio.sleep(1.0)


async def _load_addresses(allocator: Allocator) -> None:
    """The allocator's view before the first Prepare, so a claim kubelet prepares again after a restart
    gets back the addresses it already holds. Without the API the first creates fill the view."""
    try:
        await asyncio.wait_for(allocator.refresh(), timeout=10.0)
    except Exception as error:  # start anyway; the GC task retries the list
        log.warning("cannot list IPAddresses at start: %s", error)


NRI_FIRST_SECONDS = 10.0
"""How long start waits for the runtime's NRI Synchronize before registering with the kubelet anyway."""


async def _nri_first(stub: Stub, within: float) -> None:
    """Register with the kubelet only once NRI is synchronized (bounded): registered first, the kubelet
    could prepare a pod whose RunPodSandbox then arrives before this instance hears NRI events, and the
    pod would start without its devices until a late attach (a rolling upgrade's new pod hit that)."""
    try:
        await asyncio.wait_for(stub.wait_synchronized(), within)
    except TimeoutError:
        log.warning("NRI not synchronized after %.0fs; registering with the kubelet anyway", within)


POLICY_FIRST_SECONDS = 5.0
"""How long the first publish waits for the DevicePolicies and the Node's labels."""


async def _publish(
    publisher: Publisher,
    book: PolicyBook,
    link_matters: LinkJudge,
    within: float = POLICY_FIRST_SECONDS,
) -> None:
    """Publish the first time with the policies applied: published before them, every device would be
    offered for a moment and the scheduler could allocate one that a policy withholds."""
    try:
        await asyncio.wait_for(book.ready.wait(), within)
    except TimeoutError:
        log.warning("DevicePolicies or the Node's labels not read after %.0fs; publishing anyway", within)
    await publisher.run(link_events(link_matters=link_matters))


def unstarted_pods(plans: PlanStore, attachments: AttachmentStore) -> set[str]:
    """Pods with a prepared claim whose sandbox has not reached RunPodSandbox here yet."""
    return {uid for plan in plans.all() for uid in plan.pod_uids if not attachments.for_pod(uid)}


async def _drain(plans: PlanStore, attachments: AttachmentStore, within: float) -> None:
    """Keep NRI served (the kubelet is already left, so nothing new gets prepared) until every pod
    prepared here has had its RunPodSandbox, or `within` seconds. Without it, a pod prepared just before
    a rolling upgrade's SIGTERM starts in the gap before the next instance connects and runs without its
    devices until that instance's late attach."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    waiting = unstarted_pods(plans, attachments)
    if waiting and within > 0:
        log.info("waiting up to %.0fs for %d prepared pods to start", within, len(waiting))
    while waiting and loop.time() < deadline:
        await asyncio.sleep(0.1)
        waiting = unstarted_pods(plans, attachments)
    if waiting:
        log.warning(
            "stopping with %d prepared pods not started here; the next instance attaches them late",
            len(waiting),
        )


async def _resync(reporter: StatusReporter, every: float) -> None:
    """Send again what the apiserver does not have: states refused until an admin fixed the cause,
    and any claim the queue could not hold. After each Synchronize the reconcile resyncs too."""
    while True:
        await asyncio.sleep(every)
        queued = reporter.resync()
        if queued:
            log.info("status resync queued %d claims", queued)


def run(settings: Settings, configuration: kclient.Configuration | None = None) -> int:
    async def main() -> None:
        daemon = Daemon(settings, configuration)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stopping.set)
        await daemon.run()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
