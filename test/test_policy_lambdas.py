"""core.policy.lambdas: how λ1/λ2 follow the battery and the charger."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaspring_ros.core.policy.context import Context
from adaspring_ros.core.policy.lambdas import LambdaParams, Lambdas, adapt_lambdas

NAN = float("nan")



# -- λ --------------------------------------------------------------------------------------
def test_lambda_rules():
    p = LambdaParams(lambda2_min=0.1, lambda2_max=0.5, battery_high_percent=80,
                     battery_low_percent=20, hot_temperature_c=85, lambda2_hot=0.4)
    assert adapt_lambdas(Context(battery_percent=95), p).lambda2 == pytest.approx(0.1)
    assert adapt_lambdas(Context(battery_percent=10), p).lambda2 == pytest.approx(0.5)
    assert adapt_lambdas(Context(battery_percent=50), p).lambda2 == pytest.approx(0.3)
    # external power: energy is free by default, so accuracy alone decides
    assert adapt_lambdas(Context(battery_percent=10, charging=True), p).lambda2 == 0.0
    assert adapt_lambdas(Context(), p).rule == "no battery"
    assert adapt_lambdas(Context(), p).lambda2 == 0.0
    assert adapt_lambdas(Context(charging=True),
                         LambdaParams(lambda2_external=0.05)).lambda2 == 0.05
    hot = adapt_lambdas(Context(battery_percent=95, cpu_temperature_c=90), p)
    assert hot.lambda2 == pytest.approx(0.4) and "hot" in hot.rule
    lam = adapt_lambdas(Context(battery_percent=50), p)
    assert lam.lambda1 + lam.lambda2 == pytest.approx(1.0)



@given(st.floats(0, 100), st.floats(0, 100))
def test_lambda2_never_falls_as_the_battery_drains(a, b):
    high, low = max(a, b), min(a, b)
    l_high = adapt_lambdas(Context(battery_percent=high)).lambda2
    l_low = adapt_lambdas(Context(battery_percent=low)).lambda2
    p = LambdaParams()
    assert p.lambda2_min <= l_high <= l_low <= p.lambda2_max



@pytest.mark.parametrize("kwargs, field", [
    ({"lambda2_min": 0.6, "lambda2_max": 0.5}, "lambda2_min"),
    ({"lambda2_max": 1.2}, "lambda2_max"),
    ({"battery_low_percent": 90}, "battery_low_percent"),
    ({"hot_temperature_c": NAN}, "hot_temperature_c"),
])
def test_lambda_params_are_validated(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LambdaParams(**kwargs)
    with pytest.raises(ValueError, match="both be 0"):
        Lambdas(0.0, 0.0)

