"""In-process stand-ins for the loop's ports, so rollout and reconciliation are tested without Ray.

The fleet is NOT a mock of MIG: it drives the real simulated MIG backend (real placement rules,
nvidia-smi's error texts), exactly as a node agent does. The replica runtime and the bus record
every call in one shared `journal`, so a test can assert on the order of operations
(make-before-break) and not only on the end state.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from configs import load_services
from controller.loop.ports import FleetEnergy, NodeLostError
from controller.loop.reconciler import Reconciler
from controller.loop.rollout import Rollout, StepContext
from controller.loop.routes import Routes
from controller.loop.service_model import Workload
from controller.loop.settings import LoopSettings, ServiceSettings
from controller.loop.view import RUNNING, FleetView, GpuHandle, GpuState, ReplicaState
from controller.planning.plan import GpuPlan, Plan, SliceAssignment
from controller.serving.counters import ServingCounters
from controller.serving.replica import ReplicaSpec
from controller.serving.router import RoutingTable
from gpu_node.records import LeaseRecord, MigOpRecord, Reservation, SliceRecord
from mig.errors import MigError, PlacementError
from mig.repartition import apply_plan, plan_repartition
from mig.simulated import SimulatedMigBackend
from mig.types import Layout, Placement
from models.performance import PerformanceModel

P7 = Placement("7g.80gb", 0)
P4 = Placement("4g.40gb", 0)
P3 = Placement("3g.40gb", 4)
T = "H100-80GB"


@dataclass
class Journal:
    entries: list[tuple[str, object]] = field(default_factory=list)

    def add(self, what: str, detail: object) -> None:
        self.entries.append((what, detail))

    def index(self, what: str, pred=lambda d: True) -> int:
        for i, (w, d) in enumerate(self.entries):
            if w == what and pred(d):
                return i
        raise AssertionError(f"no {what} matching in {self.entries}")

    def kinds(self) -> list[str]:
        return [w for w, _ in self.entries]


class FakeFleet:
    """GPU nodes whose agents act on the real simulated MIG backend, one backend per node."""

    def __init__(self, tmp: Path, journal: Journal, nodes: dict[str, int], gpu_type: str = "H100-80GB") -> None:
        self.journal = journal
        self.gpu_type = gpu_type
        self.backends = {n: SimulatedMigBackend([(gpu_type, k)], tmp / f"{n}.json") for n, k in nodes.items()}
        self.down: set[str] = set()  # nodes whose agent does not answer
        self.die_on_apply: set[str] = set()  # nodes whose agent dies during the next re-partition
        self.fail_create: set[str] = set()  # profiles whose next create fails (placement conflict)
        self.leases_by_node: dict[str, list[LeaseRecord]] = {n: [] for n in nodes}
        self.energy = FleetEnergy()
        self.claims: dict[str, dict[int, Layout]] = {}  # the last claim each node received
        self.reservations: dict[str, Reservation] = {}  # what the nodes answer to a claim

    def observe(self) -> FleetView:
        gpus = {}
        for node, b in self.backends.items():
            if node in self.down:
                continue
            for g in b.list_gpus():
                gid = f"{node}/gpu{g.index}"
                slices = tuple(SliceRecord(i.gi_id, i.profile, i.start, i.size, i.uuid, {"CUDA_VISIBLE_DEVICES": i.uuid})
                               for i in b.list_instances(g.index))
                gpus[gid] = GpuState(GpuHandle(gid, node, g.index, g.gpu_type), True, slices)
        return FleetView(gpus, frozenset(self.down))

    def apply_layout(self, gpu: GpuHandle, layout: Layout) -> list[MigOpRecord]:
        if gpu.node in self.down:
            raise NodeLostError(f"{gpu.node} is down")
        b = self.backends[gpu.node]
        ops: list[MigOpRecord] = []

        def on_op(op: str, p: Placement, duration_s: float, error: MigError | None) -> None:
            ops.append(MigOpRecord(gpu.node, gpu.index, op, p.profile, p.start, duration_s, error is None, str(error or "")))

        plan = plan_repartition(b.list_instances(gpu.index), layout)
        try:
            apply_plan(_Flaky(b, self.fail_create), gpu.index, plan, on_op=on_op)
        except MigError:
            pass
        self.journal.add("mig", [(o.op, o.profile, o.start, o.ok) for o in ops])
        if gpu.node in self.die_on_apply:
            self.die_on_apply.discard(gpu.node)
            self.down.add(gpu.node)
            raise NodeLostError(f"{gpu.node} died during the re-partition")
        return ops

    def interval_energy(self) -> FleetEnergy:
        return self.energy

    def leases(self) -> dict[str, list[LeaseRecord]]:
        return {n: list(v) for n, v in self.leases_by_node.items() if n not in self.down}

    def release_leases(self, node: str, owners: list[str]) -> list[LeaseRecord]:
        gone = [x for x in self.leases_by_node[node] if x.owner in owners]
        self.leases_by_node[node] = [x for x in self.leases_by_node[node] if x.owner not in owners]
        self.journal.add("release_leases", (node, sorted(owners)))
        return gone

    def claim(self, claims: Mapping[str, Mapping[int, Layout]]) -> dict[str, Reservation]:
        self.claims.update({n: dict(c) for n, c in claims.items() if n not in self.down})
        self.journal.add("claim", {n: dict(c) for n, c in claims.items()})
        return {n: r for n, r in self.reservations.items() if n in claims and n not in self.down}


class _Flaky:
    """The simulated backend, except that creating a profile in `fail` fails once, as a driver can."""

    def __init__(self, backend: SimulatedMigBackend, fail: set[str]) -> None:
        self._b = backend
        self._fail = fail

    def __getattr__(self, name: str) -> object:
        return getattr(self._b, name)

    def create_instance(self, gpu: int, profile: str, start: int) -> object:
        if profile in self._fail:
            self._fail.discard(profile)
            raise PlacementError(f"Failed to create GPU instance: {profile}@{start}: Insufficient Resources")
        return self._b.create_instance(gpu, profile, start)


class FakeRuntime:
    """Serve applications, in memory. `inflight` drains by one per call, like finishing requests."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.apps: dict[str, ReplicaState] = {}
        self.pending: dict[str, int] = {}  # requests inside a replica
        self.fail_deploy: set[str] = set()  # variants whose deployment fails
        self.deploys = 0

    def list(self) -> dict[str, ReplicaState]:
        return dict(self.apps)

    def statuses(self) -> dict[str, str]:
        return {n: r.status for n, r in self.apps.items()}

    def deploy(self, specs: list[ReplicaSpec], timeout_s: float) -> None:
        self.deploys += len(specs)
        self.journal.add("deploy", [s.app_name for s in specs])
        bad = [s for s in specs if s.variant in self.fail_deploy]
        if bad:
            raise RuntimeError(f"replica {bad[0].app_name} failed to start: simulated failure")
        for s in specs:
            self.apps[s.app_name] = ReplicaState(s, RUNNING)

    def stop(self, names: list[str]) -> None:
        self.journal.add("stop", list(names))
        for n in names:
            self.apps.pop(n, None)
            self.pending.pop(n, None)

    def inflight(self, names: list[str]) -> int:
        total = 0
        for n in names:
            if self.pending.get(n, 0) > 0:
                self.pending[n] -= 1
                total += self.pending[n] + 1
        return total


class FakeBus:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.tables: list[RoutingTable] = []
        self.counters_by_ingress: dict[str, ServingCounters] = {}

    def publish(self, table: RoutingTable) -> None:
        if not self.tables or self.tables[-1].version != table.version:
            self.journal.add("table", {e.name: (round(e.share, 3), e.draining) for e in table.entries})
        self.tables.append(table)

    def acknowledged(self, version: int) -> bool:
        return True

    def counters(self) -> dict[str, ServingCounters]:
        return dict(self.counters_by_ingress)

    def wait_commands(self, timeout_s: float = 0.0) -> list:
        return []

    def set_status(self, doc: dict, totals: object) -> None:
        self.status = doc

    @property
    def last(self) -> RoutingTable:
        return self.tables[-1]


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def event(self, kind: str, message: str, **fields: object) -> None:
        self.events.append((kind, message, fields))

    def of(self, kind: str) -> list[tuple[str, str, dict]]:
        return [e for e in self.events if e[0] == kind]


class Clock:
    """A monotonic clock the test moves by hand (the reconciler's bounded wait)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Stack:
    """A controller's rollout and reconciler over the fakes: `yolo` at `rate`, plus `more` services."""

    def __init__(self, tmp_path: Path, nodes: dict[str, int] | None = None, rate: float = 20.0,
                 more: tuple[ServiceSettings, ...] = (), **settings: object) -> None:
        self.journal = Journal()
        self.fleet = FakeFleet(tmp_path, self.journal, nodes or {"n0": 1, "n1": 1})
        self.runtime = FakeRuntime(self.journal)
        self.bus = FakeBus(self.journal)
        self.events = Events()
        self.clock = Clock()
        self.routes = Routes(self.bus, self.events)
        self.rollout = Rollout(self.fleet, self.runtime, self.routes, self.events)
        self.reconciler = Reconciler(self.fleet, self.runtime, self.routes, self.rollout, self.events, clock=self.clock)
        loop = LoopSettings("yolo", 0.5, 100.0, 300.0, rate, drain_timeout_s=2.0, more_services=more, **settings)
        catalog = load_services()
        self.ctx = StepContext(Workload.of(loop, {s.name: catalog.get(s.name) for s in loop.services},
                                           PerformanceModel.default()),
                               {s.name: s.rate_rps for s in loop.services}, 300.0)

    def reconcile(self, plan: Plan, plan_id: int = 0):
        return self.reconciler.reconcile(plan, self.ctx, plan_id)

    def layout(self, node: str) -> list[tuple[str, int]]:
        return [(i.profile, i.start) for i in self.fleet.backends[node].list_instances(0)]

    def running(self) -> dict[str, tuple[str, str, int]]:
        return {n: (r.spec.gpu_id, r.spec.variant, r.spec.start) for n, r in self.runtime.apps.items()}


def gpu(gid: str, *slices: tuple) -> GpuPlan:
    """A GPU plan from (placement, variant, batch[, service]) tuples."""
    return GpuPlan(gid, T, tuple(SliceAssignment(s[0], s[1], s[2], 0.5, *s[3:]) for s in slices))


def plan(*gpus: GpuPlan) -> Plan:
    return Plan("yolo", tuple(gpus))
