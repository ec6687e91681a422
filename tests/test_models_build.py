"""Every configured variant builds offline with the parameter count of the profiled network."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from configs.loader import PROFILE_DIR, load_services
from models import build
from models.build import build_model
from models.registry import get_spec, service_specs, spec_for_profile_key

PROFILED = json.loads((PROFILE_DIR / "h100-sxm_full-gpu.json").read_text())["variants"]
HEAVY = {"yolo:yolo11x", "yolo:yolov5lu", "yolo:yolov5xu", "albert:xlarge", "albert:xxlarge"}
ALL_KEYS = [(svc, v.name, v.profile_key) for svc, s in load_services().services.items() for v in s.variants]


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CLOVER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "clover-cache"))


def test_every_configured_variant_has_a_spec_and_a_profile():
    for svc, name, key in ALL_KEYS:
        spec = get_spec(svc, name)
        assert spec.profile_key == key
        assert key in PROFILED, f"{key} missing from the bundled profile"
        assert spec_for_profile_key(key) == spec
    assert [s.name for s in service_specs("efficientnet")] == [f"b{i}" for i in range(8)]


def test_unknown_names_are_rejected_with_the_known_ones():
    with pytest.raises(KeyError, match="known"):
        get_spec("efficientnet", "b9")
    with pytest.raises(KeyError, match="known"):
        get_spec("resnet", "50")


@pytest.mark.parametrize(
    "service,variant,key",
    [pytest.param(*k, marks=pytest.mark.slow) if k[2] in HEAVY else k for k in ALL_KEYS],
    ids=[k[2] for k in ALL_KEYS],
)
def test_parameter_count_matches_profile_and_config(service, variant, key):
    built = build_model(get_spec(service, variant))
    assert built.params == pytest.approx(PROFILED[key]["params"], rel=1e-3)
    assert built.params / 1e6 == pytest.approx(built.spec.variant.params_m, rel=0.01)
    assert not built.module.training
    assert built.weights == "random"


def test_random_weights_warning_is_logged_once_per_process(caplog, monkeypatch):
    monkeypatch.setattr(build, "_warned", type(build._warned)())  # a fresh "process"
    with caplog.at_level(logging.WARNING, logger="models.build"):
        build_model(get_spec("efficientnet", "b0"))
        build_model(get_spec("efficientnet", "b1"))
    warnings = [r for r in caplog.records if "RANDOM WEIGHTS" in r.getMessage()]
    assert len(warnings) == 1
    assert "MEANINGLESS" in warnings[0].getMessage()


def test_build_forces_offline_mode(monkeypatch):
    for var in ("YOLO_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    build.force_offline()
    import os

    assert os.environ["YOLO_OFFLINE"] == os.environ["HF_HUB_OFFLINE"] == "1"


def test_missing_local_weights_name_the_expected_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="efficientnet_b0.pth"):
        build_model(get_spec("efficientnet", "b0"), weights_dir=tmp_path)


def test_local_effnet_state_dict_is_loaded(tmp_path):
    reference = build_model(get_spec("efficientnet", "b0")).module
    torch.save(reference.state_dict(), tmp_path / "efficientnet_b0.pth")
    loaded = build_model(get_spec("efficientnet", "b0"), weights_dir=tmp_path)
    assert loaded.weights.endswith("efficientnet_b0.pth")
    for (name, a), b in zip(reference.state_dict().items(), loaded.module.state_dict().values()):
        assert torch.equal(a, b), name


def test_local_yolo_checkpoint_is_loaded_and_fused(tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolo11n.yaml", verbose=False)
    model.names = {i: f"thing{i}" for i in range(80)}
    torch.save({"model": model}, tmp_path / "yolo11n.pt")
    loaded = build_model(get_spec("yolo", "yolo11n"), weights_dir=tmp_path)
    assert loaded.params == PROFILED["yolo:yolo11n"]["params"]  # fused, like the profile
    assert loaded.class_names[:2] == ["thing0", "thing1"]


NO_NETWORK_BUILD = """
import socket
attempts = []
def refuse(*args, **kwargs):  # recorded, because libraries swallow connection errors
    attempts.append(repr(args[1:] or args))
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
from models.build import build_model
from models.registry import get_spec
from models.runner import ModelRunner
for service, variant in [("yolo", "yolo11n"), ("efficientnet", "b0")]:
    build_model(get_spec(service, variant))
ModelRunner("albert", "base")  # also trains the fallback tokenizer
print("ATTEMPTS", attempts)
"""


def test_first_use_builds_without_any_network_access(tmp_path):
    """A fresh cache (new ultralytics settings, untrained tokenizer) and sockets that refuse to connect."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "HF_", "TRANSFORMERS_"))}
    env["CLOVER_CACHE_DIR"] = str(tmp_path / "fresh-cache")
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", NO_NETWORK_BUILD], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ATTEMPTS []" in proc.stdout, proc.stdout
    assert (tmp_path / "fresh-cache" / "ultralytics").is_dir()  # settings kept out of ~/.config
    assert list((tmp_path / "fresh-cache").glob("qa-tokenizer-*.json"))
