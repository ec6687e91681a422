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


def test_rate_trace_replays_carbon_and_load(tmp_path, capsys):
    out = tmp_path / "sim.json"
    rc = main(["simulate", "--service", "yolo", "--trace", "clover_ciso-sep_49h", "--gpus", "1xA100-40GB",
               "--batch-sizes", "1", "--policy", "base,ours,ours-myopic,ours-mean,hindsight", "--hours", "6",
               "--window-s", "20", "--rate-trace", "azure_llm_2023_conv", "--diurnal", "3", "--rate", "60",
               "--json", str(out), "--plot", str(tmp_path / "plots")])
    assert rc == 0
    printed = capsys.readouterr().out.replace("\n", "")
    assert "load azure_llm_2023_conv" in printed and "busiest minute 60.0 req/s" in printed
    data = json.loads(out.read_text())
    assert data["rate_trace"] == "azure_llm_2023_conv" and data["peak_rate_rps"] == 60
    assert data["rate_rps"] < 60  # the mean of the load
    f = {name: r["objective"] for name, r in data["policies"].items()}
    over = {name: r["over_sla_pct"] for name, r in data["policies"].items()}
    assert f["hindsight"] >= max(f["ours"], f["ours-myopic"]) and f["ours"] >= f["ours-myopic"]
    assert over["ours"] < over["base"] and over["ours"] < over["ours-mean"]
    for r in data["policies"].values():
        assert {"layout_changes", "mig_ops", "swaps", "lost_requests"} <= set(r)
    assert data["timeline"]["ours"][0][0] == 0.0
    assert (tmp_path / "plots" / "carbon_config.png").stat().st_size > 10_000


def test_bad_rate_trace_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "load.csv"
    bad.write_text("TIMESTAMP\n2023-11-16 18:00:00\nlater\n")
    assert main(["simulate", "--service", "yolo", "--trace", "clover_ciso-sep_49h", "--rate-trace", str(bad)]) == 2
    assert f"{bad}: line 3: TIMESTAMP must be a date-time" in capsys.readouterr().err.replace("\n", "")
