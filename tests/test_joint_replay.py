"""Several services replayed on one cluster: idle power counted once, the joint plan no worse than
Base, the static split keeps each service on its part, each service's own load (rate traces), and
the CLI's per-service flags."""
import json

import numpy as np
import pytest

from configs.loader import load_services
from controller.carbon.trace import load_trace
from controller.cli import main
from controller.planning.joint import joint_problem, service_view
from controller.planning.joint_plot import slices_held
from controller.planning.joint_replay import (
    build_problems,
    default_joint_rate_rps,
    joint_plans,
    replay_joint,
    static_split,
)
from controller.planning.model import ReconfigCost, column_of
from controller.planning.replay import SimConfig
from controller.planning.replay_load import time_scaled_config
from models.performance import PerformanceModel

PERF = PerformanceModel.default()
SERVICES = load_services()
TWO = (("gpu0", "H100-80GB"), ("gpu1", "H100-80GB"))
HOURS = list(load_trace("clover_ciso-march_49h").values[:3])
CONFIG = SimConfig(window_s=10.0)


def _problems(names, gpus, rates=None):
    services = tuple(SERVICES.get(n) for n in names)
    rates = rates or tuple(default_joint_rate_rps(s, gpus, PERF, len(services)) for s in services)
    return build_problems(services, gpus, PERF, rates, (None,) * len(services), (0.1,) * len(services),
                          (1, 2, 4, 8), ReconfigCost())


@pytest.fixture(scope="module")
def runs():
    problems = _problems(("yolo", "albert"), TWO)
    return problems, replay_joint(problems, HOURS, ["ours", "static-split"], CONFIG)


def test_services_add_up_to_the_cluster(runs):
    _, out = runs
    assert set(out) == {"ours", "static-split", "base"}
    for run in out.values():
        for key in ("carbon_g", "energy_j", "requests"):
            assert run.cluster[key] == pytest.approx(sum(r[key] for r in run.services.values()))


def test_idle_power_is_counted_once_when_services_share_the_gpus(runs):
    """At a trickle of traffic the cluster draws its idle power, not once per service."""
    problems = tuple(p.with_(rate_rps=0.2) for p in runs[0])  # the same SLAs: the columns are cached
    run = replay_joint(problems, HOURS, ["ours"], CONFIG)["ours"]
    idle_j = sum(PERF.idle_power_w(t) for _, t in TWO) * len(HOURS) * CONFIG.step_s
    assert idle_j <= run.cluster["energy_j"] <= 1.05 * idle_j


def test_joint_plan_is_no_worse_than_base(runs):
    _, out = runs
    ours, base = out["ours"].cluster, out["base"].cluster
    assert ours["carbon_g"] <= base["carbon_g"]
    assert ours["over_sla_pct"] <= base["over_sla_pct"]
    assert ours["accuracy_loss_pct"] <= 1.0
    assert ours["objective"] >= out["static-split"].cluster["objective"] - 1e-3


def test_static_split_keeps_each_service_on_its_part(runs):
    problems, out = runs
    parts = static_split(problems)
    assert [len(p) for p in parts] == [1, 1] and set(parts[0]) | set(parts[1]) == set(TWO)
    for name in ("static-split", "base"):
        for p, part in zip(problems, parts):
            assert out[name].services[p.service.name]["gpus"] == 1
            for plan in out[name].plans[p.service.name]:
                assert {g.gpu_id for g, _ in plan.replicas()} <= {gid for gid, _ in part}
    for plans in out["ours"].plans.values():  # the joint plan spans the cluster: each service sees every GPU
        assert all({g.gpu_id for g in plan.gpus} == {"gpu0", "gpu1"} for plan in plans)


def test_slices_held_never_exceed_what_each_policy_may_use(runs):
    """The plot's stacked panels: together the services never hold more than the cluster's 14
    compute slices, on the static split never more than their own GPU's 7, and the joint plan
    gives each service some capacity every step."""
    problems, out = runs
    held = {name: {p.service.name: slices_held(out[name].plans[p.service.name]) for p in problems} for name in out}
    for name, by_service in held.items():
        assert all(sum(step) <= 14 for step in zip(*by_service.values())), name
    for name in ("static-split", "base"):
        assert all(max(steps) <= 7 for steps in held[name].values())
    assert all(min(steps) >= 1 for steps in held["ours"].values())
    for run in out.values():
        assert sum(run.hourly_carbon_g) == pytest.approx(run.cluster["carbon_g"])


def test_static_split_follows_base_need_with_a_gpu_each():
    eight = tuple((f"gpu{i}", "H100-80GB") for i in range(8))
    yolo = default_joint_rate_rps(SERVICES.get("yolo"), eight, PERF, 1)
    parts = static_split(_problems(("yolo", "albert"), eight, rates=(yolo * 0.9, 0.5)))
    assert [len(p) for p in parts] == [7, 1]
    with pytest.raises(ValueError, match="at least one GPU per service"):
        static_split(_problems(("yolo", "efficientnet", "albert"), TWO, rates=(5.0, 5.0, 5.0)))


@pytest.mark.parametrize("flags,message", [
    (["--rate", "yolo=abc"], "yolo=abc"),
    (["--service", "yolo,albert,yolo"], "named twice"),
    (["--rate", "yolo=40,efficientnet=8"], "is not served"),
    (["--rate-trace", "albert=no_such_trace"], "--rate-trace 'albert=no_such_trace': rate trace 'no_such_trace'"),
    (["--rate-trace", "efficientnet=azure_llm_2023_conv"], "'efficientnet' is not served"),
    (["--rate-trace", "albert=azure_llm_2023_conv,albert=azure_llm_2023_code"], "'albert' given twice"),
    (["--rate-trace", "bogus=azure_llm_2023_conv"], "--rate-trace 'bogus=azure_llm_2023_conv': unknown service"),
    (["--rate-trace", "albert="], "--rate-trace 'albert=': no value after"),
])
def test_bad_per_service_flags_exit_2(flags, message, capsys):
    argv = ["simulate", "--service", "yolo,albert", "--trace", "clover_ciso-march_49h", "--hours", "1"]
    assert main([*argv, *flags]) == 2
    assert message in " ".join(capsys.readouterr().err.split())  # rich wraps long lines


def test_cli_json_has_a_row_per_service(tmp_path, capsys):
    out = tmp_path / "joint.json"
    rc = main(["simulate", "--service", "yolo,albert", "--lambda", "0.1,albert=0.3", "--trace", "clover_ciso-march_49h",
               "--gpus", "2xH100-80GB", "--policy", "ours,base", "--hours", "2", "--window-s", "10",
               "--json", str(out)])  # default rates and SLAs: the fixture's, so the columns are cached
    assert rc == 0
    assert "req/s (default)" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["services"]["albert"]["lambda"] == 0.3 and data["services"]["yolo"]["lambda"] == 0.1
    assert data["services"]["albert"]["static_gpus"] == 1
    assert set(data["policies"]) == {"ours", "base"}
    for run in data["policies"].values():
        assert set(run["services"]) == {"yolo", "albert"}
        assert run["cluster"]["carbon_g"] == pytest.approx(sum(r["carbon_g"] for r in run["services"].values()))



def _sla_flag(problems) -> str:
    """The fixture's SLAs typed explicitly: a traced run's default SLA (Base's p95 at its mean
    rate) would differ, and the planner's columns (cached per SLA) would be built again."""
    return ",".join(f"{p.service.name}={p.sla_ms!r}" for p in problems)


def test_cli_plays_a_rate_trace_per_service(runs, tmp_path, capsys):
    """Each service plays its own trace, its busiest minute at its (default) rate; without
    --rate-trace the same rates are constant, so every service serves more requests."""
    argv = ["simulate", "--service", "yolo,albert", "--sla-ms", _sla_flag(runs[0]), "--trace", "clover_ciso-march_49h",
            "--gpus", "2xH100-80GB", "--policy", "ours,base", "--hours", "3", "--window-s", "10"]
    traced, constant = tmp_path / "traced.json", tmp_path / "constant.json"
    assert main([*argv, "--rate-trace", "yolo=azure_llm_2023_conv,albert=azure_llm_2023_code", "--diurnal", "2",
                 "--json", str(traced)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "yolo: load azure_llm_2023_conv (mean" in out and "albert: load azure_llm_2023_code (mean" in out
    plots = tmp_path / "plots"
    assert main([*argv, "--json", str(constant), "--plot", str(plots)]) == 0
    assert (plots / "services_slices.png").stat().st_size > 10_000
    assert (plots / "carbon_per_hour.png").stat().st_size > 10_000
    t, c = json.loads(traced.read_text()), json.loads(constant.read_text())
    assert t["diurnal"] == 2 and c["diurnal"] is None
    for name, trace in (("yolo", "azure_llm_2023_conv"), ("albert", "azure_llm_2023_code")):
        svc = t["services"][name]
        assert svc["rate_trace"] == trace and c["services"][name]["rate_trace"] is None
        assert svc["peak_rate_rps"] == pytest.approx(c["services"][name]["rate_rps"])  # the default rate either way
        assert svc["rate_rps"] < svc["peak_rate_rps"]
        for policy in ("ours", "base"):
            assert (t["policies"][policy]["services"][name]["requests"]
                    < c["policies"][policy]["services"][name]["requests"])


def test_joint_plan_sizes_each_service_for_its_forecast_load(runs):
    """albert's traffic is half its rate in the first hour, then 1.5 times it: once its counts show
    the rise the joint plan gives albert more capacity than at the constant rate, enough for the
    new rate; yolo, at its constant rate, keeps what it needs."""
    yolo, albert = problems = joint_problem(runs[0]).problems
    config = time_scaled_config(window_s=10.0)
    bins = round(config.step_s / config.bin_s)
    rising = np.concatenate([np.full(bins, 0.5 * albert.rate_rps), np.full(2 * bins, 1.5 * albert.rate_rps)])
    constant, _ = joint_plans(problems, HOURS, config, "ours")
    loaded, _ = joint_plans(problems, HOURS, config, "ours", (None, rising))

    def capacity(plan, p):
        return sum(column_of(p, g.gpu_type, s).rmax_rps for g, s in service_view(plan, p).replicas() if s.share > 0)

    assert capacity(loaded[0], albert) >= 0.5 * albert.rate_rps
    assert capacity(loaded[-1], albert) > max(1.5 * albert.rate_rps, capacity(constant[-1], albert))
    assert all(capacity(plan, yolo) >= yolo.rate_rps for plan in loaded)
