"""nvidia-smi parsers on real captured output (H100, driver 580) and published samples."""
from pathlib import Path

import pytest

from configs.loader import load_gpu_catalog
from mig.smi_parse import (
    has_no_mig_devices,
    mig_mode_enabled,
    parse_created,
    parse_destroyed,
    parse_failures,
    parse_lci,
    parse_lgi,
    parse_lgip,
    parse_lgipp,
    parse_list,
    parse_query_csv,
    profiles_from_smi,
)

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"


def captures(name: str) -> dict[str, str]:
    """Split a capture file into {command: output}: from a `### command` header to its `rc=` line."""
    out: dict[str, list[str]] = {}
    current = None
    for line in (FIXTURES / name).read_text().splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
            out[current] = []
        elif line.startswith("rc="):
            current = None  # what follows the last rc= line (NVML readings) belongs to no command
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


H100 = captures("h100-sxm_mig-disabled.txt")
SAMPLES = captures("public-samples_a100-rtxpro.txt")
SYNTH = captures("synthetic_h100_mig-enabled.txt")


def test_lgip_and_lgipp_reproduce_the_catalog_h100_profiles_exactly():
    profiles = profiles_from_smi(H100["nvidia-smi mig -lgip"], H100["nvidia-smi mig -lgipp"])
    assert tuple(profiles) == load_gpu_catalog().get("H100-80GB").profiles


def test_lgip_columns():
    rows = parse_lgip(H100["nvidia-smi mig -lgip"])
    assert len(rows) == 7
    full = rows[-1]
    assert (full.name, full.id, full.free, full.total, full.memory_gib, full.sms, full.dec, full.enc) == (
        "7g.80gb", 0, 1, 1, 79.25, 132, 7, 0)
    assert (full.ce, full.jpeg, full.ofa) == (8, 7, 1)
    assert [p.starts for p in parse_lgipp(H100["nvidia-smi mig -lgipp"])][-3:] == [(0, 4), (0,), (0,)]


def test_mig_disabled_outputs():
    for cmd in ("nvidia-smi mig -lgi", "nvidia-smi mig -lci", "nvidia-smi mig -lcip"):
        assert has_no_mig_devices(H100[cmd])
        assert parse_lgi(H100[cmd]) == [] and parse_lci(H100[cmd]) == []
    assert not has_no_mig_devices(H100["nvidia-smi mig -lgip"])


def test_list_and_query_of_the_real_h100():
    (gpu,) = parse_list(H100["nvidia-smi -L"])
    assert (gpu.index, gpu.name, gpu.uuid, gpu.mig_devices) == (
        0, "NVIDIA H100 80GB HBM3", "GPU-141b1e27-9509-36f7-00c3-10e68a6753fa", ())
    key = next(k for k in H100 if k.startswith("nvidia-smi --query-gpu"))
    (row,) = parse_query_csv(H100[key])
    assert row["name"] == "NVIDIA H100 80GB HBM3" and row["memory.total"] == "81559 MiB"
    assert row["clocks.current.sm"] == "345 MHz"
    assert not mig_mode_enabled(row["mig.mode.current"])
    assert mig_mode_enabled("Enabled") and not mig_mode_enabled("[N/A]")
    with pytest.raises(ValueError, match="CSV row has 2 fields"):
        parse_query_csv("a, b, c\n1, 2")


def test_published_a100_and_rtx_samples():
    gis = parse_lgi(SAMPLES["a100: nvidia-smi mig -lgi"])
    assert [(g.profile, g.profile_id, g.gi_id, g.start, g.size) for g in gis] == [
        ("3g.20gb", 9, 1, 4, 4), ("3g.20gb", 9, 2, 0, 4)]
    rtx = parse_lgi(SAMPLES["rtxpro: nvidia-smi mig -i 0 -lgi"])
    assert [(g.gi_id, g.start, g.size) for g in rtx] == [(5, 6, 3), (6, 9, 3), (1, 0, 6)]
    old_ci = parse_lci(SAMPLES["a100: nvidia-smi mig -lci -gi 1"])
    assert [(c.gi_id, c.profile, c.ci_id, c.start) for c in old_ci] == [(1, "1c.3g.20gb", i, None) for i in range(3)]
    new_ci = parse_lci(SAMPLES["rtxpro: nvidia-smi mig -i 0 -lci"])
    assert [(c.gi_id, c.profile_id, c.ci_id, c.start, c.size) for c in new_ci] == [(3, 0, 0, 0, 1), (4, 0, 0, 0, 1)]
    a100 = parse_list(SAMPLES["a100: nvidia-smi -L"])[0]
    assert [(d.profile, d.device_index) for d in a100.mig_devices] == [("3g.20gb", 0), ("3g.20gb", 1)]
    assert a100.mig_devices[0].uuid == "MIG-c7384736-a75d-5afc-978f-d2f1294409fd"
    rtx_l = parse_list(SAMPLES["rtxpro: nvidia-smi -L"])
    assert [len(g.mig_devices) for g in rtx_l] == [2, 0]


def test_created_destroyed_and_failures():
    made = parse_created(SAMPLES["a100: nvidia-smi mig -cgi 9,3g.20gb -C"])
    assert [(c.kind, c.gi_id, c.profile, c.profile_id, c.ci_id) for c in made] == [
        ("gi", 2, "3g.20gb", 9, None), ("ci", 2, "3g.20gb", 2, 0), ("gi", 1, "3g.20gb", 9, None), ("ci", 1, "3g.20gb", 2, 0)]
    partial = SAMPLES["a100: nvidia-smi mig -cgi 19,19,14,9"]
    assert [c.gi_id for c in parse_created(partial)] == [13, 11, 3]
    assert parse_failures(partial)[0].reason == "Insufficient Resources"
    assert parse_failures(partial)[0].what == "create a GPU instance on GPU  0 using profile 9"
    assert [(d.kind, d.gi_id, d.ci_id) for d in parse_destroyed(SAMPLES["rtxpro: nvidia-smi mig -i 0 -dci"])] == [
        ("ci", 3, 0), ("ci", 4, 0)]
    assert [d.gi_id for d in parse_destroyed(SAMPLES["rtxpro: nvidia-smi mig -i 0 -dgi"])] == [3, 4]
    busy = parse_failures(SAMPLES["rtxpro: nvidia-smi mig -i 0 -dgi (compute instances still present)"])
    assert [f.reason for f in busy] == ["In use by another client"] * 2


def test_synthetic_mig_enabled_h100():
    gis = parse_lgi(SYNTH["nvidia-smi mig -i 0 -lgi"])
    assert sorted((g.profile, g.gi_id, g.start, g.size) for g in gis) == [
        ("1g.10gb", 13, 6, 1), ("2g.20gb", 5, 4, 2), ("3g.40gb", 1, 0, 4)]
    cis = parse_lci(SYNTH["nvidia-smi mig -i 0 -lci"])
    assert sorted((c.gi_id, c.profile_id, c.size) for c in cis) == [(1, 2, 3), (5, 1, 2), (13, 0, 1)]
    assert [d.profile for d in parse_list(SYNTH["nvidia-smi -L"])[0].mig_devices] == ["3g.40gb", "2g.20gb", "1g.10gb"]
