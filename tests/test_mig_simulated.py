"""The simulated MIG backend: real placement rules, the driver's error cases, persisted state."""
import json
import re
import threading

import pytest

from mig.backend import MigBackend, make_backend
from mig.errors import (
    InstanceInUseError,
    MigDisabledError,
    MigError,
    PlacementError,
    UnknownProfileError,
)
from mig.leases import LEASE_TTL_S, LeaseBook
from mig.placement import all_profile_names, enumerate_layouts
from mig.simulated import SimulatedMigBackend, parse_gpus_spec
from tests.fake_nvml import FakeClock

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def test_is_a_mig_backend_with_real_looking_uuids():
    b = SimulatedMigBackend([("H100-80GB", 2), ("A100-40GB", 1)])
    assert isinstance(b, MigBackend)
    gpus = b.list_gpus()
    assert [(g.index, g.gpu_type, g.name) for g in gpus] == [
        (0, "H100-80GB", "NVIDIA H100 80GB HBM3"), (1, "H100-80GB", "NVIDIA H100 80GB HBM3"),
        (2, "A100-40GB", "NVIDIA A100-SXM4-40GB")]
    assert all(re.fullmatch(f"GPU-{UUID}", g.uuid) for g in gpus)
    assert len({g.uuid for g in gpus}) == 3
    inst = b.create_instance(2, "3g.20gb", 4)
    assert re.fullmatch(f"MIG-{UUID}", inst.uuid)
    assert (inst.profile_id, inst.size) == (9, 4)
    # same seed, same GPUs: same UUIDs (a restarted simulation matches); other seed: different
    assert [g.uuid for g in SimulatedMigBackend([("H100-80GB", 2), ("A100-40GB", 1)]).list_gpus()] == [g.uuid for g in gpus]
    assert SimulatedMigBackend(["H100-80GB"], seed=1).list_gpus()[0].uuid != gpus[0].uuid


@pytest.mark.parametrize("gpu_type", ["H100-80GB", "A100-40GB", "A100-80GB", "H200-141GB"])
def test_every_enumerated_layout_is_accepted(gpu_type):
    b = SimulatedMigBackend([gpu_type])
    for layout in enumerate_layouts(gpu_type, all_profile_names(gpu_type)):
        for p in layout:
            b.create_instance(0, p.profile, p.start)
        insts = b.list_instances(0)
        assert sorted(i.placement for i in insts) == sorted(layout)
        assert len({i.gi_id for i in insts}) == len(insts)
        for i in insts:
            b.destroy_instance(0, i.gi_id)
        assert b.list_instances(0) == []


def test_gi_ids_follow_the_drivers_placement_tree():
    b = SimulatedMigBackend(["A100-40GB"])
    # NVIDIA MIG user guide, example 2 (-cgi 9,19,14,19 -> 3g@4 GI 2, 1g@0 GI 7, 2g@2 GI 4, 1g@1 GI 8)
    got = [b.create_instance(0, p, s).gi_id for p, s in [("3g.20gb", 4), ("1g.5gb", 0), ("2g.10gb", 2), ("1g.5gb", 1)]]
    assert got == [2, 7, 4, 8]
    b2 = SimulatedMigBackend(["H100-80GB"])
    assert b2.create_instance(0, "7g.80gb", 0).gi_id == 0


def test_error_cases_use_nvidia_smi_wording():
    clock = FakeClock()
    leases = LeaseBook(clock=clock)
    b = SimulatedMigBackend(["H100-80GB"], mig_enabled=False, users=leases.live_owners)
    with pytest.raises(MigDisabledError, match="No MIG-enabled devices found"):
        b.create_instance(0, "3g.40gb", 0)
    assert b.list_instances(0) == []
    assert b.set_mig_mode(0, True) == "Enabled MIG Mode for GPU 00000000:18:00.0\nAll done."

    b.create_instance(0, "2g.20gb", 4)
    with pytest.raises(PlacementError) as e:
        b.create_instance(0, "3g.40gb", 4)
    assert str(e.value) == ("Unable to create a GPU instance on GPU 0 using profile 3g.40gb: Insufficient Resources "
                            "(3g.40gb at slot 4 overlaps 2g.20gb at slot 4 (slots 4-5))")
    with pytest.raises(UnknownProfileError, match="using profile 5g.40gb: Invalid Argument .*known profiles: 1g.10gb"):
        b.create_instance(0, "5g.40gb", 0)
    with pytest.raises(MigError, match="Unable to destroy GPU instance ID 3 from GPU 0: Not Found"):
        b.destroy_instance(0, 3)
    with pytest.raises(MigError, match="GPU 4 not found: this node has GPUs 0-0"):
        b.list_instances(4)

    gi = b.list_instances(0)[0].gi_id
    leases.acquire(0, gi, "replica-a")
    leases.acquire(0, gi, "replica-b")  # make-before-break: two owners on one slice
    with pytest.raises(InstanceInUseError) as e:
        b.destroy_instance(0, gi)
    assert str(e.value).startswith(f"Unable to destroy compute instance ID 0 from GPU 0 GPU instance ID {gi}: "
                                   "In use by another client (replica-a, replica-b still runs")
    with pytest.raises(InstanceInUseError, match=f"Unable to disable MIG Mode .*GI {gi} by replica-a and replica-b"):
        b.set_mig_mode(0, False)
    leases.release(0, gi, "replica-b")
    leases.release(0, gi, "someone-else")  # not a holder: nothing changes
    assert leases.live_owners(0, gi) == ["replica-a"]
    with pytest.raises(InstanceInUseError):
        b.destroy_instance(0, gi)
    clock.t += LEASE_TTL_S  # replica-a stopped renewing: its lease is stale and blocks nothing
    b.destroy_instance(0, gi)
    assert b.list_instances(0) == []


def test_compute_instance_must_go_before_its_gpu_instance():
    b = SimulatedMigBackend(["H100-80GB"])
    gi = b.create_gpu_instance(0, "1g.10gb", None, with_ci=True).gi_id
    with pytest.raises(InstanceInUseError, match=f"Unable to destroy GPU instance ID {gi} from GPU 0: In use"):
        b.destroy_gpu_instance(0, gi)
    b.destroy_compute_instance(0, gi)
    b.destroy_gpu_instance(0, gi)


def test_state_survives_a_restart_and_is_shared(tmp_path):
    state = tmp_path / "node" / "mig.json"
    a = SimulatedMigBackend([("H100-80GB", 2)], state_file=state)
    made = a.create_instance(1, "4g.40gb", 0)
    b = SimulatedMigBackend(state_file=state)  # the restarted agent
    assert b.list_instances(1) == [made]
    assert b.list_gpus() == a.list_gpus()
    b.create_instance(1, "3g.40gb", 4)  # seen by the first object too: every op re-reads the file
    assert len(a.list_instances(1)) == 2
    assert json.loads(state.read_text())["version"] == 1
    assert not list(state.parent.glob("*.tmp"))
    with pytest.raises(MigError, match="describes GPUs"):
        SimulatedMigBackend(["A100-40GB"], state_file=state)


def test_failed_operation_writes_nothing(tmp_path):
    state = tmp_path / "mig.json"
    b = SimulatedMigBackend(["H100-80GB"], state_file=state)
    b.create_instance(0, "7g.80gb", 0)
    text = state.read_text()
    with pytest.raises(PlacementError):
        b.create_instance(0, "1g.10gb", 0)
    assert state.read_text() == text


def test_corrupt_state_file_is_a_clear_error(tmp_path):
    state = tmp_path / "mig.json"
    state.write_text("{not json")
    with pytest.raises(MigError, match="not valid JSON .*delete it"):
        SimulatedMigBackend(state_file=state)


def test_concurrent_creates_from_threads_never_overlap(tmp_path):
    b = SimulatedMigBackend(["H100-80GB"], state_file=tmp_path / "mig.json")
    errors = []

    def create(start):
        try:
            b.create_instance(0, "1g.10gb", start)
        except MigError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(s % 7,)) for s in range(14)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(i.start for i in b.list_instances(0)) == list(range(7))
    assert len(errors) == 7


def test_gpus_spec_and_factory():
    assert parse_gpus_spec("H100-80GB:2, A100-40GB") == [("H100-80GB", 2), ("A100-40GB", 1)]
    with pytest.raises(ValueError, match="unknown GPU type 'V100'"):
        parse_gpus_spec("V100:1")
    with pytest.raises(ValueError, match="bad GPU count"):
        parse_gpus_spec("H100-80GB:x")
    assert isinstance(make_backend("simulated", gpus=[("H200-141GB", 1)]), SimulatedMigBackend)
    with pytest.raises(ValueError, match="unknown GPU backend 'cuda'"):
        make_backend("cuda")
    with pytest.raises(ValueError, match="unknown partitioning 'vgpu'"):
        make_backend("simulated", "vgpu")
