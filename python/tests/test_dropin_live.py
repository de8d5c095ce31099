"""TvDatafeedLive, the drop-in: the seed's concurrency tests and live delivery, on loopback.

Intervals are "1S" (a TradingView resolution string, which the drop-in accepts besides its
Interval enum) so that bars close every second.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest

import tvdatafeed_rs as tv
from conftest import os_threads, wait_until


@pytest.fixture
def live(sim):
    t = tv.TvDatafeedLive(url=sim.url, utc=True)
    yield t
    t.shutdown(5)


def test_ten_racing_new_seis_get_one_object(live):
    barrier = threading.Barrier(10)
    got = []

    def race():
        barrier.wait()
        got.append(live.new_seis("BTCUSDT", "BINANCE", tv.Interval.in_1_minute))

    threads = [threading.Thread(target=race) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 10
    assert all(s is got[0] for s in got), got
    assert isinstance(got[0], tv.Seis) and got[0].tvdatafeed is live


def test_a_bad_symbol_raises_value_error(live):
    with pytest.raises(ValueError, match="not listed in TradingView"):
        live.new_seis("INVALIDX", "BINANCE", "1S")


def test_shutdown_while_a_callback_sleeps_returns_in_time_and_names_it(sim, caplog):
    live = tv.TvDatafeedLive(url=sim.url)
    entered, release = threading.Event(), threading.Event()

    def sleepy(seis, data):
        entered.set()
        release.wait(10)  # a callback stuck for 10 s

    seis = live.new_seis("BTCUSDT", "BINANCE", "1S")
    consumer = live.new_consumer(seis, sleepy)
    assert entered.wait(5), "no bar within 5 s"
    caplog.set_level(logging.WARNING)
    start = time.monotonic()
    clean = live.del_tvdatafeed(timeout=1.0)
    took = time.monotonic() - start
    release.set()
    assert clean is False
    assert took < 2.0, took
    assert live.last_shutdown["unfinished"] == [consumer.name]
    assert consumer.name in caplog.text


def test_every_closed_bar_once_in_order_equal_to_truth_across_a_restart(sim):
    live = tv.TvDatafeedLive(url=sim.url, utc=True)
    bars, lock = [], threading.Lock()

    def collect(seis, data):
        assert list(data.columns) == ["symbol", "open", "high", "low", "close", "volume"] and len(data) == 1
        row = data.iloc[0]
        with lock:
            bars.append((int(data.index[0].timestamp()), row.open, row.high, row.low, row.close, row.volume, seis))

    seis = live.new_seis("BTCUSDT", "BINANCE", "1S")
    live.new_consumer(seis, collect)
    assert wait_until(lambda: len(bars) >= 2, 5)
    sim.restart(1.5)
    before = len(bars)
    assert wait_until(lambda: len(bars) >= before + 4, 15), "no bars after the restart"
    assert live.shutdown(5)
    times = [b[0] for b in bars]
    assert times == list(range(times[0], times[0] + len(times))), times  # contiguous, once, in order
    for t, o, h, l, c, v, s in bars:
        assert s is seis
        assert (t, o, h, l, c, v) == sim.expected_bar("BINANCE:BTCUSDT", "1S", t)


def test_a_raising_callback_ends_only_its_own_consumer(sim, caplog):
    live = tv.TvDatafeedLive(url=sim.url)
    calls = {"bad": 0, "good": 0}

    def bad(seis, data):
        calls["bad"] += 1
        raise RuntimeError("boom")

    def good(seis, data):
        calls["good"] += 1

    caplog.set_level(logging.ERROR)
    seis = live.new_seis("BTCUSDT", "BINANCE", "1S")
    cb = live.new_consumer(seis, bad)
    cg = live.new_consumer(seis, good)
    assert wait_until(lambda: calls["good"] >= 3, 8)
    assert calls["bad"] == 1
    assert seis.get_consumers() == [cg]
    assert cb.seis is None and not cb.is_alive()
    assert "boom" in caplog.text and cb.name in caplog.text
    assert live.shutdown(5)


def test_ten_threads_of_mixed_calls_finish_without_deadlock_or_leaked_threads(sim):
    baseline = os_threads()
    live = tv.TvDatafeedLive(url=sim.url)
    keys = [("BTCUSDT", "BINANCE", "1S"), ("ETHUSDT", "BINANCE", "1S"), ("SPX", "SP", "1S")]
    errors = []

    def worker(seed):
        rnd = random.Random(seed)
        mine = []
        try:
            for _ in range(100):
                op = rnd.randrange(4)
                try:
                    if op == 0 or not mine:
                        s = live.new_seis(*rnd.choice(keys), timeout=10)
                        if s is not False:
                            mine.append(s)
                    elif op == 1:
                        live.new_consumer(rnd.choice(mine), lambda s, d: None, timeout=10)
                    elif op == 2:
                        cs = rnd.choice(mine).get_consumers()
                        if cs:
                            live.del_consumer(rnd.choice(cs), timeout=10)
                    else:
                        live.del_seis(mine.pop(rnd.randrange(len(mine))), timeout=10)
                except (ValueError, NameError):
                    pass  # another thread removed it first: the original's answers
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    took = time.monotonic() - start
    assert not any(t.is_alive() for t in threads), "deadlock: a worker is still running"
    assert took < 30, took
    assert not errors, errors
    assert live.shutdown(5)
    assert wait_until(lambda: os_threads() <= baseline, 5), (os_threads(), baseline)


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize("utc", [False, True])
def test_a_callbacks_one_bar_frame_equals_the_general_frame(zone, utc, monkeypatch):
    """The live callback's short-way frame (`_bar_frame`) is the history's `_frame` of one row:
    same index (naive local or UTC, its unit and name), columns, dtypes and values, with the
    volume 0.0 where the symbol has none; across a DST change in a zone that has one."""
    import numpy as np
    import pandas as pd
    from tvdatafeed_rs import _dropin

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        # 2026-03-08 06:59:59 and 07:00:00 UTC straddle New York's spring-forward.
        for t in (1_772_953_199, 1_772_953_200, 1_765_000_000, 0):
            for v in (None, float("nan"), 12.5):
                general = _dropin._frame(
                    "BINANCE:BTCUSDT",
                    np.array([t], dtype=np.int64),
                    _dropin._float_columns({"open": [1.0], "high": [2.0], "low": [0.5], "close": [1.5], "volume": [np.nan if v is None else v]}),
                    utc,
                )
                for short_way in (_dropin._bar_frame_fast, _dropin._bar_frame_public):
                    short = short_way("BINANCE:BTCUSDT", t, 1.0, 2.0, 0.5, 1.5, v, utc)
                    pd.testing.assert_frame_equal(short, general, check_exact=True)
                    assert short.index.name == "datetime"
    finally:
        # Back to the session's own zone (monkeypatch restores TZ, tzset applies it).
        monkeypatch.undo()
        time.tzset()
    # The fast way is the one used where pandas has it (every version CI installs).
    assert _dropin._bar_frame is _dropin._bar_frame_fast


def _os_thread_name() -> str:
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
        return f.read().strip()


def test_callback_threads_runs_every_consumer_on_one_shared_thread_each_bar_once_in_order(sim):
    """``callback_threads=1``: five consumers' callbacks all run on ``tv-dispatch-0`` (no
    thread per consumer), each gets every closed bar once and in order."""
    baseline = os_threads()
    live = tv.TvDatafeedLive(url=sim.url, utc=True, callback_threads=1)
    seen, lock = {}, threading.Lock()

    def collector(k):
        def cb(seis, data):
            with lock:
                seen.setdefault(k, []).append((int(data.index[0].timestamp()), _os_thread_name()))
        return cb

    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    for k in range(5):
        seis = live.new_seis(symbols[k % 3], "BINANCE", "1S")
        live.new_consumer(seis, collector(k))
    assert wait_until(lambda: len(seen) == 5 and all(len(v) >= 3 for v in seen.values()), 15), seen
    # tv-io and the one dispatcher thread: not one per consumer.
    assert os_threads() - baseline <= 3, (os_threads(), baseline)
    assert live.shutdown(5)
    for k, got in seen.items():
        assert {name for _, name in got} == {"tv-dispatch-0"}, (k, got)
        times = [t for t, _ in got]
        assert times == list(range(times[0], times[0] + len(times))), (k, times)


@pytest.mark.parametrize("utc", [False, True])
def test_history_frames_are_the_public_paths_and_writable(sim, utc):
    """`get_hist`'s frame (the fast way, `_frame_fast`) equals the public constructors' one
    (`_frame_public`) on a real history, and the caller can write to it as to the original's."""
    import numpy as np
    import pandas as pd
    from tvdatafeed_rs import _dropin, _frames

    h = tv.TvDatafeed(url=sim.url)._client.get_hist("BINANCE:BTCUSDT", "1", 300, False, None)
    t, cols = _frames.columns(h)
    fast = _dropin._frame_fast("BINANCE:BTCUSDT", t, _dropin._float_columns(cols), utc)
    public = _dropin._frame_public("BINANCE:BTCUSDT", t, _dropin._float_columns(cols), utc)
    pd.testing.assert_frame_equal(fast, public, check_exact=True)
    assert _dropin._frame is _dropin._frame_fast
    # Each frame has columns of its own: renaming one frame's does not rename the next one's.
    fast.columns.name = "renamed"
    again = _dropin._frame_fast("BINANCE:BTCUSDT", t, _dropin._float_columns(cols), utc)
    assert again.columns.name is None
    one = _dropin._bar_frame("BINANCE:BTCUSDT", 1_765_000_000, 1.0, 2.0, 0.5, 1.5, None, utc)
    one.columns.name = "renamed"
    assert _dropin._bar_frame("BINANCE:BTCUSDT", 1_765_000_000, 1.0, 2.0, 0.5, 1.5, None, utc).columns.name is None
    # Straight from the engine's read-only buffers (no forming bar appended): still writable.
    fast.iloc[0, 1] = -1.0
    assert fast.iloc[0, 1] == -1.0
    # ... and a frame's columns are its own: the next frame of the same history is untouched.
    assert again.iloc[0, 1] == public.iloc[0, 1] != -1.0
    assert _frames.columns(h)[1]["open"][0] == public.iloc[0, 1]
    df = tv.TvDatafeed(url=sim.url, utc=utc).get_hist("BTCUSDT", "BINANCE", tv.Interval.in_1_minute, n_bars=50)
    df.iloc[0, 1] = -1.0
    df.loc[df.index[1], "symbol"] = "X:Y"
    assert df.iloc[0, 1] == -1.0 and df.iloc[1, 0] == "X:Y"
    assert np.isfinite(df["volume"]).all()
