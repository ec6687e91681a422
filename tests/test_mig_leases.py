"""Slice leases: renewed by live replicas, stale after the TTL or a new Ray session, never blocking."""
import json
import subprocess
import sys
import time

import pytest

from gpu_node.cli import main
from mig.errors import InstanceInUseError
from mig.leases import LEASE_TTL_S, LeaseBook, LeaseRecord
from mig.placement import parse_layout
from mig.repartition import apply_plan, plan_repartition
from mig.simulated import SimulatedMigBackend
from tests.fake_nvml import FakeClock


def test_a_lease_is_live_until_the_ttl_passes_without_renewal():
    clock = FakeClock(1000.0)
    book = LeaseBook(clock=clock)
    book.acquire(0, 3, "replica-a")
    clock.advance(LEASE_TTL_S - 1)
    assert book.live_owners(0, 3) == ["replica-a"]
    book.acquire(0, 3, "replica-a")  # renewal
    clock.advance(LEASE_TTL_S - 1)
    assert book.leases() == [LeaseRecord(0, 3, "replica-a", 1000.0 + LEASE_TTL_S - 1, False)]
    clock.advance(1)
    assert book.leases()[0].stale and book.live_owners(0, 3) == []


def test_leases_of_another_ray_session_are_stale_at_once(tmp_path):
    path = tmp_path / "leases.json"
    LeaseBook(path, session="session_1").acquire(1, 0, "old-replica")
    fresh = LeaseBook(path, session="session_2")  # `ray stop` + a new cluster on the same state dir
    assert [(x.owner, x.stale) for x in fresh.leases()] == [("old-replica", True)]
    assert [(x.owner, x.stale) for x in LeaseBook(path).leases()] == [("old-replica", False)]  # no session: TTL only


def test_stale_leases_never_block_a_destroy_and_nothing_is_stuck_after_a_restart(tmp_path):
    """After `ray stop` and a fresh start on the same state dir a re-partition just works."""
    state, leases = tmp_path / "mig-state.json", tmp_path / "leases.json"
    before = LeaseBook(leases, session="s1")
    b = SimulatedMigBackend([("H100-80GB", 1)], state, users=before.live_owners)
    apply_plan(b, 0, plan_repartition([], parse_layout("4g@0,3g@4", "H100-80GB")))
    for inst in b.list_instances(0):
        before.acquire(0, inst.gi_id, f"replica-{inst.gi_id}")
    with pytest.raises(InstanceInUseError):
        b.destroy_instance(0, b.list_instances(0)[0].gi_id)
    after = LeaseBook(leases, session="s2")
    restarted = SimulatedMigBackend(state_file=state, users=after.live_owners)
    apply_plan(restarted, 0, plan_repartition(restarted.list_instances(0), parse_layout("7g@0", "H100-80GB")))
    assert [i.profile for i in restarted.list_instances(0)] == ["7g.80gb"]


def test_several_owners_release_by_owner_and_stale_cleanup():
    clock = FakeClock(0.0)
    book = LeaseBook(clock=clock)
    book.acquire(0, 1, "old")
    book.acquire(0, 1, "new")  # make-before-break: the new replica starts on the kept slice
    book.acquire(1, 2, "gone-1")
    book.acquire(1, 3, "gone-2")
    assert [x.owner for x in book.release_owners(["gone-1", "gone-2", "never-had-one"])] == ["gone-1", "gone-2"]
    book.release(0, 1, "old")
    book.release(0, 1, "old")  # idempotent
    assert book.live_owners(0, 1) == ["new"]
    clock.advance(LEASE_TTL_S + 1)
    book.acquire(0, 2, "alive")
    assert [(x.gi_id, x.owner) for x in book.release_stale()] == [(1, "new")]
    assert [x.owner for x in book.leases()] == ["alive"]
    with pytest.raises(ValueError, match="needs an owner"):
        book.acquire(0, 1, "")


def test_leases_are_shared_between_processes_through_the_file(tmp_path):
    path = tmp_path / "leases.json"
    code = ("import sys; from mig.leases import LeaseBook; "
            "LeaseBook(sys.argv[1]).acquire(0, 5, 'from-another-process')")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    assert LeaseBook(path).live_owners(0, 5) == ["from-another-process"]
    assert json.loads(path.read_text())["version"] == 1


def _write_leases(path, entries):
    path.write_text(json.dumps({"version": 1, "leases": [
        {"gpu": g, "gi_id": gi, "owner": o, "renewed_at": t, "session": ""} for g, gi, o, t in entries]}))


def test_cli_lists_leases_with_stale_flags_and_release_stale_clears_them(tmp_path, capsys):
    state = tmp_path / "node" / "mig-state.json"
    assert main(["mig", "apply", "--gpu", "0", "--layout", "4g@0,3g@4", "--state", str(state)]) == 0
    capsys.readouterr()
    leases = state.with_name("leases.json")  # the default: beside --state, as `gpu-node setup` keeps them
    now = time.time()
    _write_leases(leases, [(0, 1, "replica-live", now), (0, 2, "replica-dead", now - 3600),
                           (0, 9, "replica-orphan", now - 3600)])
    assert main(["mig", "list", "--state", str(state)]) == 0
    out = capsys.readouterr().out
    assert "4g.40gb     slots 0-3" in out and "leased by replica-live (renewed " in out
    assert "leased by replica-dead (STALE, renewed 3600 s ago)" in out
    assert "lease on GPU 0 GI 9 (no such slice): replica-orphan (STALE" in out
    assert main(["mig", "list", "--json", "--state", str(state)]) == 0
    gpu = json.loads(capsys.readouterr().out)[0]
    assert {i["profile"]: [(x["owner"], x["stale"]) for x in i["leases"]] for i in gpu["instances"]} == {
        "4g.40gb": [("replica-live", False)], "3g.40gb": [("replica-dead", True)]}

    # a stale lease does not block: the slice it names can be re-partitioned right away
    assert main(["mig", "apply", "--gpu", "0", "--layout", "4g@0,2g@4,1g@6", "--state", str(state)]) == 0
    capsys.readouterr()
    assert main(["mig", "release", "--stale", "--leases", str(leases)]) == 0
    out = capsys.readouterr().out
    assert "released GPU 0 GI 2: replica-dead (STALE" in out and "released GPU 0 GI 9: replica-orphan" in out
    assert f"released 2 stale leases from {leases}" in out
    assert [x["owner"] for x in json.loads(leases.read_text())["leases"]] == ["replica-live"]
    assert main(["mig", "release", "--leases", str(leases)]) == 2
    assert "add --stale" in capsys.readouterr().err


def test_cli_refuses_to_destroy_a_slice_with_a_live_lease(tmp_path, capsys):
    state = tmp_path / "mig-state.json"
    assert main(["mig", "apply", "--gpu", "0", "--layout", "7g@0", "--state", str(state)]) == 0
    _write_leases(state.with_name("leases.json"), [(0, 0, "replica-live", time.time())])
    assert main(["mig", "apply", "--gpu", "0", "--layout", "3g@0", "--state", str(state)]) == 1
    assert "In use by another client (replica-live still" in capsys.readouterr().out
