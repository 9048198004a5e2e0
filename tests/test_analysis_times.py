"""Waiting times, t_w-resolved pairs and origin-averaged lags on irregular schedules."""

from __future__ import annotations

import numpy as np
import pytest

from trajkit.analysis import times
from trajkit.errors import AnalysisError

STEPS = np.array([0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765])


def test_explicit_waiting_times_exact_and_nearest():
    assert list(times.waiting_time_rows(STEPS, [8, 144])) == [5, 11]
    with pytest.raises(AnalysisError, match="150 is not a snapshot step; nearest snapshot is step 144 "):
        times.waiting_time_rows(STEPS, [8, 150])
    assert list(times.waiting_time_rows(STEPS, [150, 7], snap="nearest")) == [5, 11]
    with pytest.raises(AnalysisError, match=r"outside the recorded steps 0\.\.6765"):
        times.waiting_time_rows(STEPS, [7000])
    with pytest.raises(AnalysisError, match="snap='closest'"):
        times.waiting_time_rows(STEPS, [8], snap="closest")


def test_log_spaced_waiting_times():
    rows = times.log_spaced_rows(STEPS, 4)
    tw = STEPS[rows]
    # targets geomspace(1, 676.5, 4) = 1, 8.8, 77, 676.5 snapped to the nearest snapshots
    assert list(tw) == [1, 8, 89, 610]
    assert times.log_spaced_rows(STEPS, 100).size <= 100            # duplicates dropped, never invented


def test_a_waiting_time_is_a_step_never_a_count():
    with pytest.raises(AnalysisError, match=r"waiting_times=4: give a list of snapshot steps, e.g. \[4\]; for n "
                                            r"log-spaced waiting times use log_spaced_rows\(steps, n\)"):
        times.waiting_time_rows(STEPS, 4)
    assert list(times.waiting_time_rows(STEPS, [4181])) == [18]
    with pytest.raises(AnalysisError) as e:
        times.waiting_time_rows(STEPS, [4000])
    assert str(e.value) == ("waiting time 4000 is not a snapshot step; nearest snapshot is step 4181 (snapshots "
                            "around it: 2584 and 4181); use a snapshot step (`trajkit info --steps ARCHIVE` lists "
                            "them) or snap='nearest'")


def test_waiting_pairs_grid_is_nan_before_tw():
    rows = np.array([2, 5])
    wp = times.waiting_pairs(STEPS, rows)
    T = STEPS.size
    assert wp.pairs.shape == (2 * T - 2 - 5, 2)
    assert np.all(wp.pairs[:, 1] >= wp.pairs[:, 0])
    grid = wp.grid(wp.lag.astype(float))                     # the lag t - tw, placed on [K, T]
    assert grid.shape == (2, T)
    assert np.all(np.isnan(grid[0, :2])) and np.all(np.isnan(grid[1, :5]))
    np.testing.assert_array_equal(grid[1, 5:], STEPS[5:] - STEPS[5])
    assert list(wp.tw_step) == [2, 8]


def test_lag_matching_counts_pairs_on_an_irregular_schedule():
    steps = np.array([0, 10, 20, 31, 40, 52, 60])
    lp = times.lag_pairs(steps, lags=[10, 20, 30], rtol=0.1)
    # by hand, d = s_j - s_i within l ± 0.1 l:
    #   10: (0,10) (10,20) (20,31) (31,40)          [(40,52)=12 and (52,60)=8 miss]  -> 4
    #   20: (0,20) (10,31) (20,40) (31,52) (40,60)                                     -> 5
    #   30: (0,31) (10,40) (20,52) (31,60)                                             -> 4
    assert list(lp.n_pairs) == [4, 5, 4]
    avg = lp.average(steps[lp.pairs[:, 1]] - steps[lp.pairs[:, 0]])
    np.testing.assert_allclose(avg, [(10 + 10 + 11 + 9) / 4, (20 + 21 + 20 + 21 + 20) / 5,
                                     (31 + 30 + 32 + 29) / 4])
    exact = times.lag_pairs(steps, lags=[10, 20, 30], rtol=0.0)
    assert list(exact.n_pairs) == [2, 3, 1]
    none = times.lag_pairs(steps, lags=[100], rtol=0.0)
    assert list(none.n_pairs) == [0] and np.isnan(none.average(np.zeros(0))[0])


def test_lag_pairs_linear_schedule_textbook_counts():
    steps = np.arange(0, 100, 10)
    lp = times.lag_pairs(steps, rtol=0.0)                    # default lags: from the first origin
    assert list(lp.lags) == list(range(10, 100, 10))
    assert list(lp.n_pairs) == list(range(9, 0, -1))         # T - k pairs for lag k
    capped = times.lag_pairs(steps, rtol=0.0, max_pairs_per_lag=3)
    assert list(capped.n_pairs) == [3] * 7 + [2, 1]
    late = times.lag_pairs(steps, rtol=0.0, min_origin_step=50)
    assert late.pairs[:, 0].min() == 5


def test_bad_schedules():
    with pytest.raises(AnalysisError, match="strictly increasing"):
        times.waiting_pairs([0, 5, 5], [0])
    with pytest.raises(AnalysisError, match="lags must be positive"):
        times.lag_pairs(STEPS, lags=[0, 10])
