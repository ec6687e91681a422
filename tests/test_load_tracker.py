"""The live loop's planning rate and band re-plans (controller/loop/load.py over load_forecast)."""
from controller.loop.load import LoadTracker
from controller.planning.load_forecast import ForecastParams

P = ForecastParams(block_s=10.0, peak_window_s=30.0)


def test_never_below_the_expected_rate_and_no_band_verdict_before_a_block_of_history():
    t = LoadTracker(20.0, 2.0, P)
    assert t.plan_rps() == 20.0 and t.replan_reason(20.0) is None
    for _ in range(3):
        t.observe(2, 2.0)  # 1 req/s, less than a block so far
    assert t.plan_rps() == 20.0 and t.replan_reason(20.0) is None


def test_a_surge_raises_the_rate_at_once_and_leaves_the_band():
    t = LoadTracker(5.0, 2.0, P)
    for _ in range(6):
        t.observe(20, 2.0)  # 10 req/s
    assert t.plan_rps() >= 10.0
    assert "above the band" in (t.replan_reason(5.0) or "")
    assert t.replan_reason(t.plan_rps()) is None  # a plan sized for it is in its band


def test_capacity_comes_down_only_after_the_peak_window_and_then_says_so():
    t = LoadTracker(1.0, 2.0, P)
    for _ in range(6):
        t.observe(40, 2.0)  # 20 req/s
    sized = t.plan_rps()
    for _ in range(5):
        t.observe(4, 2.0)  # 2 req/s: the recent peak still holds the rate up
    assert t.plan_rps() >= 20.0 and t.replan_reason(sized) is None
    for _ in range(20):
        t.observe(4, 2.0)
    assert t.plan_rps() < 0.6 * sized and "below the band" in t.replan_reason(sized)


def test_an_overload_floor_holds_for_one_peak_window():
    t = LoadTracker(1.0, 2.0, P)
    t.raise_floor(30.0)
    for _ in range(10):
        t.observe(2, 2.0)
    assert t.plan_rps() == 30.0
    for _ in range(10):
        t.observe(2, 2.0)
    assert t.plan_rps() < 30.0


def test_ticks_of_any_length_make_bins_of_wall_time():
    """A burst of short ticks is pooled, not read as a burst of traffic; a late tick covers the
    seconds it spans, so the peak window lasts its seconds and no longer."""
    steady = LoadTracker(1.0, 2.0, P)
    jittery = LoadTracker(1.0, 2.0, P)
    for _ in range(30):  # 5 req/s, ticks of 2 s against ticks of 0.1 s and 1.9 s (one request in the short one)
        steady.observe(10, 2.0)
        jittery.observe(1, 0.1)
        jittery.observe(9, 1.9)
    assert jittery.plan_rps() == steady.plan_rps() == 5.0
    t = LoadTracker(1.0, 2.0, P)
    for _ in range(6):
        t.observe(40, 2.0)  # 20 req/s
    t.observe(4 * 32, 32.0)  # one tick 32 s late at 4 req/s: longer than the 30 s peak window
    assert t.plan_rps() == 4.0
    odd = LoadTracker(1.0, 2.0, P)
    for _ in range(10):  # 3 s ticks at 5 req/s: 30 s of traffic make 15 bins, not 10 (the rest carries over)
        odd.observe(15, 3.0)
    assert len(odd._counts) == 15 and odd.plan_rps() == 5.0
