"""`controller simulate` end to end through the real CLI dispatcher."""
import json

import pytest

from controller.cli import main

KEYS = {"carbon_g", "carbon_saving_pct", "accuracy", "accuracy_loss_pct", "p95_ms", "sla_ms", "over_sla_pct",
        "reconfigurations", "exploration_requests", "objective", "solve_ms_p50"}


def test_simulate_writes_json_and_plots(tmp_path, capsys):
    out = tmp_path / "sim.json"
    rc = main(["simulate", "--service", "yolo", "--trace", "clover_ciso-march_49h", "--gpus", "2xH100-80GB",
               "--policy", "base,clover-sa,ours", "--hours", "4", "--window-s", "20",
               "--json", str(out), "--plot", str(tmp_path / "plots")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "req/s (default: 50% of Base capacity)" in printed and "clover-sa" in printed
    data = json.loads(out.read_text())
    assert set(data["policies"]) == {"base", "clover-sa", "ours"}
    for r in data["policies"].values():
        assert KEYS <= set(r)
    ours, sa, base = (data["policies"][k] for k in ("ours", "clover-sa", "base"))
    assert ours["exploration_requests"] == 0 and sa["exploration_requests"] > 0
    assert ours["objective"] >= sa["objective"]
    assert ours["over_sla_pct"] <= base["over_sla_pct"]
    assert (tmp_path / "plots" / "carbon_config.png").stat().st_size > 10_000
    assert (tmp_path / "plots" / "carbon_per_hour.png").stat().st_size > 10_000


def test_heterogeneous_gpus_and_explicit_rate(tmp_path):
    out = tmp_path / "sim.json"
    rc = main(["simulate", "--service", "efficientnet", "--trace", "clover_gb-eso-march_49h",
               "--gpus", "1xH100-80GB,1xA100-40GB", "--policy", "ours,energy-only", "--rate", "40",
               "--sla-ms", "80", "--hours", "3", "--window-s", "20", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["rate_rps"] == 40 and data["sla_ms"] == 80
    assert set(data["policies"]) == {"base", "ours", "energy-only"}


@pytest.mark.parametrize("argv,message", [
    (["--service", "resnet", "--trace", "clover_ciso-sep_49h"], "unknown service 'resnet'"),
    (["--service", "yolo", "--trace", "mars"], "carbon trace 'mars' not found"),
    (["--service", "yolo", "--trace", "clover_ciso-sep_49h", "--gpus", "2xB200"], "unknown GPU type 'B200'"),
    (["--service", "yolo", "--trace", "clover_ciso-sep_49h", "--gpus", "two"], "write COUNTxTYPE"),
    (["--service", "yolo", "--trace", "clover_ciso-sep_49h", "--policy", "ours,magic"], "unknown policy magic"),
])
def test_bad_input_is_a_clear_error(argv, message, capsys):
    assert main(["simulate", *argv]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
