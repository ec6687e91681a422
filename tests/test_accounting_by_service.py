"""Accounting when several services share the GPUs: who is charged what, and that it adds up."""
import math

import pytest

from configs import load_services
from controller.accounting.attribution import Accountant, HostEnergy, SliceActivity
from controller.accounting.by_service import UNALLOCATED_SERVICE, split_by_service
from models.performance import PerformanceModel

PERF = PerformanceModel.default()
SERVICES = load_services()
YOLO, ALBERT = SERVICES.get("yolo"), SERVICES.get("albert")
GPUS = {"n/gpu0": "H100-80GB", "n/gpu1": "H100-80GB"}
SHARES = {"yolo": 0.75, "albert": 0.25}
# gpu0: yolo on 4g, albert on 2g, one compute slice without an instance; gpu1: an idle 7g slice
SLICES = [
    SliceActivity("n/gpu0", "4g@0", 4, "yolo11x", busy_s=20.0),
    SliceActivity("n/gpu0", "2g@4", 2, "large", busy_s=30.0),
    SliceActivity("n/gpu1", "7g@0", 7, None),
]


def _split():
    acct = Accountant(YOLO, GPUS, PERF, others=[ALBERT])
    cluster = acct.record_interval(60.0, {"n/gpu0": 9000.0, "n/gpu1": 4500.0}, SLICES,
                                   {"yolo11x": 120, "large": 30}, 300.0, 1.5, host=HostEnergy(cpu_j=600.0, ram_j=60.0),
                                   service_shares=SHARES)
    parts = split_by_service(cluster, acct, SHARES, {"yolo": 20.0, "albert": 80.0}, {"yolo": 1, "albert": 0})
    return acct, cluster, parts


def test_rows_add_up_to_the_metered_energy_and_the_cluster_baseline():
    _, cluster, parts = _split()
    assert set(parts) == {"yolo", "albert", UNALLOCATED_SERVICE}
    assert math.fsum(p.energy_j for p in parts.values()) == pytest.approx(13500.0)
    assert math.fsum(p.carbon_g for p in parts.values()) == pytest.approx(cluster.carbon_g)
    assert math.fsum(p.baseline_energy_j for p in parts.values()) == pytest.approx(cluster.baseline_energy_j)
    assert math.fsum(p.cpu_energy_j for p in parts.values()) == pytest.approx(600.0)


def test_each_service_is_charged_its_own_slices_and_requests():
    acct, _, parts = _split()
    yolo, albert, idle = parts["yolo"], parts["albert"], parts[UNALLOCATED_SERVICE]
    assert set(yolo.energy_by_slice) == {"n/gpu0/4g@0"} and set(albert.energy_by_slice) == {"n/gpu0/2g@4"}
    assert (yolo.requests, albert.requests, idle.requests) == (120, 30, 0)
    assert yolo.accuracy == YOLO.variant("yolo11x").accuracy and albert.accuracy == ALBERT.variant("large").accuracy
    assert (yolo.p95_ms, albert.p95_ms, yolo.failed) == (20.0, 80.0, 1)
    # the idle GPU and gpu0's slice without an instance are nobody's: the unallocated bucket
    assert idle.energy_by_gpu["n/gpu1"] == pytest.approx(4500.0) and "n/gpu0" in idle.energy_by_gpu
    assert idle.baseline_carbon_g == 0.0
    # each Base runs on its part of the cluster
    assert yolo.baseline_energy_j == pytest.approx(acct.baseline_energy_j(YOLO, 60.0, 120, 0.75))
    assert yolo.baseline_accuracy == YOLO.base.accuracy


def test_one_service_accounts_as_before():
    alone = Accountant(YOLO, GPUS, PERF)
    slices = [s for s in SLICES if s.variant != "large"]
    a = alone.record_interval(60.0, {"n/gpu0": 9000.0, "n/gpu1": 4500.0}, slices, {"yolo11x": 120}, 300.0, 1.5)
    assert a.baseline_energy_j == alone.baseline_energy_j(YOLO, 60.0, 120)
    assert a.energy_j == pytest.approx(13500.0)
