"""Deployment files (`controller --config`) and per-service flags: good input gives the
DeploymentConfig asked for, and every kind of bad input fails naming the file or flag, the field
or token, and what is allowed."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from configs import ConfigError
from configs.cli import UsageError
from configs.deployment import EXAMPLE_FILE, DeploymentConfig, ServiceSpec, load_deployment
from configs.deployment_flags import (
    DEPLOYMENT_FLAGS,
    add_deployment_arguments,
    add_service_arguments,
    deployment_from_args,
    services_from_flags,
)
from configs.loader import load_services

KNOWN = "albert, efficientnet, yolo"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clover.yaml"
    path.write_text(text)
    return path


def test_the_example_file_loads_with_its_documented_values():
    config = load_deployment(EXAMPLE_FILE)
    assert config.names == ("yolo", "efficientnet", "albert")
    yolo, effnet, albert = config.services
    assert (yolo.rate_rps, yolo.sla_ms, yolo.lam, yolo.variants) == (40.0, 60.0, None, None)
    assert effnet.variants == ("b1", "b3", "b5", "b7") and effnet.lam == 0.3
    assert (albert.rate_rps, albert.sla_ms, albert.min_accuracy) == (8.0, 120.0, 85.0)
    assert config.lam_of("efficientnet") == 0.3 and config.lam_of("yolo") == config.lam == 0.1
    assert (config.carbon_source, config.pue, config.replan_every_s, config.port) == (
        "trace:emaps_us-cal-ciso_2023", 1.5, 300.0, 8000)
    # every field of the model is explained in the example (as a key or a commented-out key)
    text = EXAMPLE_FILE.read_text()
    for name in [*DeploymentConfig.model_fields, *(f for f in ServiceSpec.model_fields if f != "name")]:
        assert f"{name}:" in text, name


def test_a_minimal_file_gets_the_controller_defaults_and_resolves_the_trace_beside_it(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "albert.csv").write_text("t_s,rate_rps\n0,5\n60,9\n")
    config = load_deployment(_file(tmp_path, "services:\n  yolo:\n  albert: {rate_trace: traces/albert.csv}\n"))
    assert config.service("yolo") == ServiceSpec(name="yolo")
    assert config.service("yolo").rate_rps == 20.0 and config.service("yolo").sla_ms is None
    assert config.service("albert").rate_trace == str(tmp_path / "traces" / "albert.csv")
    assert config.model_dump(exclude={"services"}) == DeploymentConfig(services=(ServiceSpec(name="yolo"),)).model_dump(
        exclude={"services"})
    with pytest.raises(KeyError, match="'efficientnet' is not in this deployment; served: yolo, albert"):
        config.service("efficientnet")


@pytest.mark.parametrize(("text", "field", "message"), [
    ("services:\n  resnet: {rate_rps: 5}\n", "services.resnet.name", f"unknown service 'resnet'; configured services: {KNOWN}"),
    ("services:\n  yolo: {rate_rps: 0}\n", "services.yolo.rate_rps", "greater than 0"),
    ("services:\n  yolo: {rate_rps: -3}\n", "services.yolo.rate_rps", "greater than 0"),
    ("services:\n  yolo: {rate_rps: lots}\n", "services.yolo.rate_rps", "valid number"),
    ("services:\n  yolo: {rate_rps: .inf}\n", "services.yolo.rate_rps", "finite number"),
    ("services:\n  yolo: {sla_ms: 0}\n", "services.yolo.sla_ms", "greater than 0"),
    ("services:\n  yolo:\n  albert: {lam: 1.5}\n", "services.albert.lam", "less than or equal to 1"),
    ("services:\n  efficientnet: {variants: [b1, b9]}\n", "services.efficientnet.variants",
     "'b9' is not a variant of 'efficientnet'; known: b0, b1, b2, b3, b4, b5, b6, b7"),
    ("services:\n  efficientnet: {variants: [b1, b1]}\n", "services.efficientnet.variants", "variant 'b1' listed twice"),
    ("services:\n  efficientnet: {variants: []}\n", "services.efficientnet.variants", "at least 1 item"),
    ("services:\n  albert: {variants: [base, large], min_accuracy: 86}\n", "services.albert.min_accuracy",
     "min_accuracy 86 is above every allowed variant of 'albert': the most accurate, large, has 85.2"),
    ("services:\n  albert: {rate_trace: nope.csv}\n", "services.albert.rate_trace", "nope.csv' is not a file"),
    ("services:\n  yolo: {rate: 5}\n", "services.yolo.rate", "Extra inputs are not permitted"),
    ("services:\n  yolo: 5\n", "services.yolo", "valid dictionary"),
    ("services: {}\n", "services", "no service: name at least one under `services:`"),
    ("lam: 0.1\n", "services", "Field required"),
    ("services:\n  yolo:\npue: 0.9\n", "pue", "greater than or equal to 1"),
    ("services:\n  yolo:\nexecution: gpu\n", "execution", "'simulated' or 'real'"),
    ("services:\n  yolo:\nport: 70000\n", "port", "less than or equal to 65535"),
    ("services:\n  yolo:\nreplan_every: 10\n", "replan_every", "Extra inputs are not permitted"),
    ("services:\n  - {name: yolo}\n  - {name: yolo}\n", "services", "service 'yolo' listed twice"),
])
def test_bad_file_names_the_file_the_field_and_what_is_allowed(tmp_path, text, field, message):
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_deployment(path)
    assert str(e.value).startswith(f"{path}: field {field}: ")
    assert message in str(e.value) and "\n" not in str(e.value)  # one problem, one line


@pytest.mark.parametrize(("text", "message"), [
    ("services:\n  yolo: {rate_rps: 5}\n  yolo: {rate_rps: 9}\n", "key 'yolo' appears twice (first on line 2)"),
    ("services: [yolo\n", "not valid YAML"),
    ("- yolo\n", "expected a mapping at the top level, got list"),
])
def test_unreadable_file_says_why(tmp_path, text, message):
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError, match=str(path)) as e:
        load_deployment(path)
    assert message in str(e.value)
    with pytest.raises(ConfigError, match="file not found"):
        load_deployment(tmp_path / "missing.yaml")


def test_flags_give_per_service_values_or_one_for_every_service():
    yolo, albert = services_from_flags("yolo,albert", rate="yolo=40,albert=8", sla_ms="yolo=60,albert=120",
                                       lam="yolo=0.1,albert=0.3", variants="yolo=yolo11n,yolo11s,albert=base,large",
                                       min_accuracy="albert=85")
    assert yolo == ServiceSpec(name="yolo", rate_rps=40, sla_ms=60, lam=0.1, variants=("yolo11n", "yolo11s"))
    assert albert == ServiceSpec(name="albert", rate_rps=8, sla_ms=120, lam=0.3, variants=("base", "large"),
                                 min_accuracy=85)
    # a bare value: every service the flag does not name; rates also inline in --service
    specs = services_from_flags("yolo=40,efficientnet,albert", rate="20,albert=8", sla_ms="100")
    assert [(s.name, s.rate_rps, s.sla_ms) for s in specs] == [
        ("yolo", 40, 100), ("efficientnet", 20, 100), ("albert", 8, 100)]
    # one service: the old single-service forms still mean what they did
    (effnet,) = services_from_flags("efficientnet", rate="5", variants="b0,b1", lam="0.5")
    assert effnet == ServiceSpec(name="efficientnet", rate_rps=5, variants=("b0", "b1"), lam=0.5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rate": "yolo=abc"}, "--rate 'yolo=abc': Input should be a valid number"),
    ({"rate": "yolo=0"}, "--rate 'yolo=0': Input should be greater than 0"),
    ({"rate": "-5"}, "--rate '-5': Input should be greater than 0"),
    ({"rate": "yolo="}, "--rate 'yolo=': no value after 'yolo='"),
    ({"rate": ""}, "--rate '': empty value"),
    ({"rate": "yolo=1,yolo=2"}, "--rate 'yolo=1,yolo=2': service 'yolo' given twice"),
    ({"rate": "efficientnet=5"}, "--rate 'efficientnet=5': 'efficientnet' is not served (served: yolo, albert)"),
    ({"sla_ms": "bert=5"}, f"--sla-ms 'bert=5': unknown service 'bert'; configured services: {KNOWN}"),
    ({"lam": "albert=1.5"}, "--lambda 'albert=1.5': Input should be less than or equal to 1"),
    ({"variants": "b0,b1"}, "--variants 'b0,b1': 'b0', 'b1' are not variants of 'yolo'"),
    ({"variants": "albert=base,xl"}, "--variants 'albert=base,xl': 'xl' is not a variant of 'albert'"),
    ({"min_accuracy": "albert=95"}, "--min-accuracy 'albert=95': min_accuracy 95 is above every allowed variant"),
    ({"service": "yolo,albert,yolo"}, "--service 'yolo,albert,yolo': service 'yolo' named twice"),
    ({"service": "yolo,resnet"}, f"--service 'yolo,resnet': unknown service 'resnet'; configured services: {KNOWN}"),
    ({"service": "yolo,,albert"}, "--service 'yolo,,albert': empty entry"),
    ({"service": "yolo=x"}, "--service 'yolo=x': Input should be a valid number"),
    ({"service": "yolo=40,albert", "rate": "yolo=30"},
     "the rate of 'yolo' is given twice: --service 'yolo=40,albert' and --rate 'yolo=30'"),
    ({"service": None}, "no service to serve: give --service NAME[,NAME...] or a deployment file with --config"),
])
def test_malformed_flags_name_the_offending_token(kwargs, message):
    args = {"service": "yolo,albert", **kwargs}
    with pytest.raises(UsageError) as e:
        services_from_flags(**args)
    assert message in str(e.value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_service_arguments(parser)
    add_deployment_arguments(parser)
    return parser


def _from_argv(argv: list[str], **defaults: object) -> DeploymentConfig:
    return deployment_from_args(_parser().parse_args(argv), **defaults)


def test_flags_override_the_file_field_by_field():
    config = _from_argv(["--config", str(EXAMPLE_FILE), "--rate", "yolo=60", "--sla-ms", "albert=150", "--pue", "1.2"])
    assert config.names == ("yolo", "efficientnet", "albert")
    assert (config.service("yolo").rate_rps, config.service("yolo").sla_ms) == (60.0, 60.0)  # sla kept from the file
    assert (config.service("albert").sla_ms, config.service("albert").min_accuracy) == (150.0, 85.0)
    assert config.service("efficientnet").variants == ("b1", "b3", "b5", "b7")
    assert (config.pue, config.replan_every_s) == (1.2, 300.0)
    # --service replaces the file's list; a service from the file keeps its settings, a new one gets defaults
    config = _from_argv(["--config", str(EXAMPLE_FILE), "--service", "albert,yolo"])
    assert config.names == ("albert", "yolo") and config.service("albert").min_accuracy == 85.0
    # a bare --lambda is every service's λ (the file's per-service λ included) and the deployment's
    config = _from_argv(["--config", str(EXAMPLE_FILE), "--lambda", "0.6"])
    assert config.lam == 0.6 and {config.lam_of(n) for n in config.names} == {0.6}


def test_caller_defaults_sit_between_the_file_and_the_model_defaults(tmp_path):
    assert _from_argv(["--service", "yolo"], lam=0.5, replan_every_s=10.0).lam == 0.5
    path = _file(tmp_path, "services:\n  yolo:\nlam: 0.2\n")
    config = _from_argv(["--config", str(path)], lam=0.5, replan_every_s=10.0)
    assert (config.lam, config.replan_every_s) == (0.2, 10.0)
    assert _from_argv(["--config", str(path), "--replan-every", "30"], replan_every_s=10.0).replan_every_s == 30.0
    assert _from_argv(["--config", str(path), "--trace-start", "18"]).trace_start_h == 18.0


def test_rollout_patience_reaches_the_loop_from_the_file_and_the_flags(tmp_path):
    """How long a drain and a stuck re-partition may take, how long a given-up GPU is left alone
    and how long a split GPU stays idle before it is merged: the loop's settings, set from a
    deployment file and overridden by flags."""
    from controller.loop.run_cmd import loop_settings

    default = loop_settings(_from_argv(["--service", "yolo"]))
    assert (default.drain_timeout_s, default.stuck_after_s, default.hold_intervals,
            default.merge_idle_after_s) == (15.0, 60.0, 12, 1800.0)
    path = _file(tmp_path, "services:\n  yolo:\ndrain_timeout_s: 5\nstuck_after_s: 30\nhold_intervals: 4\n"
                           "merge_idle_after_s: 600\n")
    settings = loop_settings(_from_argv(["--config", str(path), "--hold-intervals", "2"]))
    assert (settings.drain_timeout_s, settings.stuck_after_s, settings.hold_intervals,
            settings.merge_idle_after_s) == (5.0, 30.0, 2, 600.0)
    assert loop_settings(_from_argv(["--config", str(path), "--merge-idle-after", "0"])).merge_idle_after_s == 0.0
    assert default.transition_sla_factor == 2.0
    strict = loop_settings(_from_argv(["--config", str(path), "--transition-sla-factor", "1"]))
    assert strict.transition_sla_factor == 1.0


@pytest.mark.parametrize(("argv", "message"), [
    (["--service", "yolo", "--pue", "0.5"], "--pue 0.5: Input should be greater than or equal to 1"),
    (["--service", "yolo", "--transition-sla-factor", "0.8"],
     "--transition-sla-factor 0.8: Input should be greater than or equal to 1"),
    (["--service", "yolo", "--ingress-replicas", "0"], "--ingress-replicas 0: Input should be greater than or equal to 1"),
    (["--service", "yolo", "--lambda", "2"], "--lambda '2': Input should be less than or equal to 1"),
    (["--service", "yolo", "--trace-start", "-3"], "--trace-start -3.0: Input should be greater than or equal to 0"),
    (["--service", "yolo", "--carbon-source", "constant:300", "--trace-start", "3"],
     "--trace-start 3.0: 3 hours into 'constant:300': only a `trace:` carbon source can start later"),
    (["--service", "yolo", "--hold-intervals", "0"], "--hold-intervals 0: Input should be greater than or equal to 1"),
    (["--config", str(EXAMPLE_FILE), "--variants", "albert=base"],
     "service 'albert' (from the deployment file and --variants 'albert=base'), field min_accuracy: min_accuracy 85"),
    (["--config", str(EXAMPLE_FILE), "--rate", "resnet=3"], "--rate 'resnet=3': unknown service 'resnet'"),
    ([], "no service to serve"),
])
def test_bad_command_lines_say_which_flag(argv, message):
    with pytest.raises(UsageError) as e:
        _from_argv(argv)
    assert message in str(e.value)


def test_bad_file_through_the_flags_is_a_config_error(tmp_path):
    path = _file(tmp_path, "services:\n  yolo: {rate_rps: 0}\n")
    with pytest.raises(ConfigError, match=rf"{path}: field services\.yolo\.rate_rps"):
        _from_argv(["--config", str(path), "--rate", "5"])


def test_every_flag_has_help_and_maps_to_a_field():
    parser = _parser()
    fields = set(DeploymentConfig.model_fields)
    assert {f.field for f in DEPLOYMENT_FLAGS} <= fields
    assert all(a.help for a in parser._actions)
    assert parser.parse_args([]).port is None  # a flag left out never hides the file's value
    # the dests `controller run` has always used, so its other code keeps reading them
    assert {"lam", "sla_ms", "rate", "variants", "service", "replan_every", "carbon_source", "run_dir",
            "ingress_replicas", "on_exit", "address", "host", "port"} <= set(vars(parser.parse_args([])))


def test_another_catalog_can_be_checked_against(tmp_path):
    services = tmp_path / "services.yaml"
    services.write_text("services:\n  ocr:\n    task: t\n    metric: m\n    input: image\n    base_variant: big\n"
                        "    variants:\n      - {name: big, profile_key: 'x:big', accuracy: 50, params_m: 1, "
                        "accuracy_source: paper}\n")
    catalog = load_services(services)
    config = load_deployment(_file(tmp_path, "services:\n  ocr: {variants: [big]}\n"), catalog)
    assert config.names == ("ocr",)
    with pytest.raises(UsageError, match="unknown service 'yolo'; configured services: ocr"):
        services_from_flags("yolo", catalog=catalog)
