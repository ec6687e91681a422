"""The bundled configuration validates, and bad files fail with file, field and reason."""
from pathlib import Path

import pytest

from configs import ConfigError, load_gpu_catalog, load_services, resolve_trace
from controller.carbon.trace import load_trace


def test_catalog_has_the_four_gpu_types_with_h100_values_from_nvidia_smi():
    cat = load_gpu_catalog()
    assert {k for k, gt in cat.gpu_types.items() if gt.partitioning == "mig"} == {
        "H100-80GB", "A100-40GB", "A100-80GB", "H200-141GB"}
    h100 = cat.get("H100-80GB")
    # verbatim from tests/fixtures/nvidia-smi/h100-sxm_mig-disabled.txt (-lgip, -lgipp)
    assert [(p.id, p.name, p.sms, p.memory_gib, p.max_instances) for p in h100.profiles] == [
        (19, "1g.10gb", 16, 9.75, 7), (20, "1g.10gb+me", 16, 9.75, 1), (15, "1g.20gb", 26, 19.62, 4),
        (14, "2g.20gb", 32, 19.62, 3), (9, "3g.40gb", 60, 39.5, 2), (5, "4g.40gb", 64, 39.5, 1),
        (0, "7g.80gb", 132, 79.25, 1),
    ]
    assert h100.profile("3g").name == "3g.40gb"
    assert h100.profile(15).starts == (0, 2, 4, 6)
    assert [p.name for p in cat.main_profiles("A100-40GB")] == ["1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"]


def test_mps_types_cover_gpus_without_mig_in_mig_shapes():
    cat = load_gpu_catalog()
    mps = {k for k, gt in cat.gpu_types.items() if gt.partitioning == "mps"}
    assert {"L4-24GB", "A10-24GB", "A100-40GB-MPS", "A100-80GB-MPS", "H100-80GB-MPS", "H200-141GB-MPS"} <= mps
    for key in mps:
        gt = cat.get(key)
        assert gt.source, key  # every entry cites where its numbers come from
        main = cat.main_profiles(key)
        assert [p.compute_slices for p in main] == [1, 2, 3, 4, 7]
        assert [gt.mps_percent(p) for p in main] == [14, 29, 43, 57, 100]
        assert [p.size for p in main] == [1, 2, 4, 4, 8] and main[-1].sms == gt.total_sms
    l4 = cat.get("L4-24GB")
    assert (l4.total_sms, [p.name for p in cat.main_profiles("L4-24GB")]) == (
        58, ["1g.3gb", "2g.6gb", "3g.12gb", "4g.12gb", "7g.23gb"])
    # an H100 with MIG off has the MIG names, so plans read the same
    assert [p.name for p in cat.main_profiles("H100-80GB-MPS")] == [p.name for p in cat.main_profiles("H100-80GB")]
    assert cat.for_partitioning("H100-80GB", "mps") == "H100-80GB-MPS"
    assert cat.for_partitioning("H100-80GB-MPS", "mig") == "H100-80GB"
    with pytest.raises(KeyError, match="'L4-24GB' has no MIG entry"):
        cat.for_partitioning("L4-24GB", "mig")


def test_services_have_sources_and_base_variants():
    svcs = load_services()
    assert set(svcs.services) == {"yolo", "efficientnet", "albert"}
    assert svcs.get("efficientnet").base.name == "b7"
    for svc in svcs.services.values():
        for v in svc.variants:
            assert v.accuracy_source


def test_bad_gpu_catalog_names_file_field_and_reason(tmp_path: Path):
    bad = tmp_path / "gpus.yaml"
    bad.write_text(
        "gpu_types:\n  X:\n    memory_gib: 10\n    total_sms: 10\n    idle_power_w: 5\n    max_power_w: 100\n"
        "    profiles:\n      - {id: 1, name: 1g, compute_slices: 9, sms: 1, memory_gib: 1, max_instances: 1, starts: [0], size: 1}\n"
        "main_profile_ids: [1]\n"
    )
    with pytest.raises(ConfigError) as e:
        load_gpu_catalog(bad)
    msg = str(e.value)
    assert str(bad) in msg and "gpu_types.X.profiles.0.compute_slices" in msg and "less than or equal to 7" in msg


def test_bad_service_base_variant(tmp_path: Path):
    bad = tmp_path / "services.yaml"
    bad.write_text(
        "services:\n  s:\n    task: t\n    metric: m\n    input: image\n    base_variant: nope\n"
        "    variants:\n      - {name: a, profile_key: 'x:a', accuracy: 50, params_m: 1, accuracy_source: paper}\n"
    )
    with pytest.raises(ConfigError, match=r"services\.s.*base_variant 'nope' is not one of"):
        load_services(bad)


def test_traces_load_by_name_and_reject_bad_rows(tmp_path: Path):
    t = load_trace("clover_ciso-march_49h")
    assert len(t) == 49 and t.values[0] == pytest.approx(124.57)
    bad = tmp_path / "t.csv"
    bad.write_text("timestamp,carbon_intensity_gco2_per_kwh\n2022-01-01T00:00:00Z,10\n2022-01-01T01:00:00Z,abc\n")
    with pytest.raises(ConfigError, match="line 3"):
        load_trace(bad)
    with pytest.raises(ConfigError, match="not found"):
        resolve_trace("no_such_trace")
