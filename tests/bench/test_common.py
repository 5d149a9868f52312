"""bench/common.py's interleaved timing: how many rounds it runs."""

import time

from bench.common import interleaved_timings


def sleeper(seconds, calls):
    def call():
        calls.append(seconds)
        time.sleep(seconds)

    return call


def test_runs_rounds_alternating_after_the_warmup():
    calls = []
    timings = interleaved_timings({"a": sleeper(0.001, calls), "b": sleeper(0.002, calls)}, runs=3, warmup=1)
    assert [len(seconds) for seconds in timings.values()] == [3, 3]
    assert calls == [0.001, 0.002] + [0.001, 0.002] * 3


def test_min_seconds_raises_the_rounds_until_the_fastest_callable_has_that_long():
    calls = []
    functions = {"fast": sleeper(0.01, calls), "slow": sleeper(0.03, calls)}
    timings = interleaved_timings(functions, runs=2, warmup=1, min_seconds=0.2)
    rounds = len(timings["fast"])
    assert rounds == len(timings["slow"])
    # ceil(0.2 / the fast call's warmup time): 20 rounds for a call of exactly 10 ms, fewer if it ran long.
    assert 5 <= rounds <= 20
    assert sum(timings["fast"]) >= 0.2 * 0.75
    assert sum(timings["slow"]) >= 3 * 0.2 * 0.75
