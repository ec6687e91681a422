"""Clover's objective (docs/background.md §1): normalisation at CI 250 g/kWh and PUE 1.5."""
import pytest

from configs.units import carbon_g
from controller.planning.objective import Objective, clover_score


def test_base_configuration_scores_zero_only_at_reference_intensity():
    at_ref = Objective(lam=0.1, base_power_w=300.0, base_accuracy=54.7, carbon_intensity=250.0, pue=1.5)
    assert at_ref.value(300.0, 54.7) == pytest.approx(0.0, abs=1e-12)
    # ΔC is measured against C_base at 250 g/kWh: twice the intensity, same energy → ΔC = −1
    at_500 = Objective(lam=0.1, base_power_w=300.0, base_accuracy=54.7, carbon_intensity=500.0, pue=1.5)
    assert at_500.value(300.0, 54.7) == pytest.approx(-0.1)


def test_linear_form_matches_value():
    obj = Objective(lam=0.3, base_power_w=250.0, base_accuracy=80.0, carbon_intensity=137.0, pue=1.2)
    for power, acc in [(100.0, 70.0), (250.0, 80.0), (612.5, 84.5)]:
        linear = obj.constant + obj.power_coef * power + obj.accuracy_coef * acc
        assert linear == pytest.approx(obj.value(power, acc), rel=1e-12)


def test_accuracy_loss_and_carbon_gain_trade_by_lambda():
    # 10 % less carbon and 1 % less accuracy: worth it at λ = 0.5, not at λ = 0.05
    assert clover_score(0.5, 90.0, 99.0, 100.0, 100.0) == pytest.approx(0.5 * 0.1 - 0.5 * 0.01)
    assert clover_score(0.05, 90.0, 99.0, 100.0, 100.0) < 0


def test_carbon_of_one_kwh():
    assert carbon_g(3.6e6, 250.0, 1.5) == pytest.approx(375.0)


def test_lambda_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="λ"):
        Objective(lam=1.5, base_power_w=1.0, base_accuracy=1.0, carbon_intensity=1.0)
