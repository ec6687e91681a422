"""The desired state file: round trip, pin, and a clear error for a damaged file."""
from __future__ import annotations

import json

import pytest

from controller.loop.state import DesiredState, StateFileError, StateStore
from controller.planning.plan import Plan


def test_round_trip_keeps_the_pin_and_old_files_read_as_unpinned(tmp_path):
    store = StateStore(tmp_path / "desired.json")
    plan = Plan.from_json({"service": "yolo", "gpus": [{"gpu_id": "n/gpu0", "gpu_type": "H100-80GB", "slices": [
        {"profile": "7g.80gb", "start": 0, "variant": "yolo11n", "batch": 1, "share": 1.0}]}]})
    state = DesiredState(0, None, 0.5, 60.0, 20.0, 1.0).with_plan(plan, {"yolo": 25.0}, pinned=True)
    store.save(state)
    back = store.load()
    assert back is not None and back.pinned and back.version == 1 and back.rate_rps == 25.0
    assert back.plan is not None and back.plan.to_json() == plan.to_json()
    doc = json.loads(store.path.read_text())
    del doc["pinned"]  # written before pins existed
    store.path.write_text(json.dumps(doc))
    assert store.load().pinned is False
    assert back.with_plan(plan, {"yolo": 20.0}).pinned is False  # an automatic plan ends the pin


def test_damaged_file_names_itself_and_the_way_out(tmp_path):
    store = StateStore(tmp_path / "desired.json")
    store.path.write_text("{not json")
    with pytest.raises(StateFileError, match="desired.json.*move the file away"):
        store.load()
