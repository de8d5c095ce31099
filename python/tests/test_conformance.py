"""The drop-in's get_hist against the original tradingview-datafeed 2.1.1, both fetching from
the same simulator in the same process: equal DataFrames (columns, dtypes, index, values).

The last row is the forming bar, whose high/low/close/volume move while it forms: between the
two fetches it may have changed, so for that row only the time, symbol and open are compared.
"""

from __future__ import annotations

import logging
import time

import pandas as pd
import pytest

import tvdatafeed_rs as tv
from conftest import original_pointed_at

CASES = [
    # symbol, exchange, interval name, n_bars, fut_contract
    ("BTCUSDT", "BINANCE", "in_1_hour", 300, None),
    ("BTCUSDT", "BINANCE", "in_daily", 10, None),
    ("ETHUSDT", "BINANCE", "in_15_minute", 1000, None),
    ("AAPL", "NASDAQ", "in_weekly", 50, None),
    ("SPX", "SP", "in_daily", 200, None),  # an index: no volume
    ("CL", "NYMEX", "in_4_hour", 120, 1),  # futures: NYMEX:CL1!
    ("NIFTY", "NSE", "in_daily", 10, None),  # the default exchange's shape
    ("BINANCE:BTCUSDT", "", "in_5_minute", 5000, None),  # a ':' passes through
    ("BTCUSDT", "BINANCE", "in_1_minute", 1, None),  # the forming bar alone
    ("ETHUSDT", "BINANCE", "in_1_minute", 2, None),
]


def fetch_both(orig, orig_tv, ours, symbol, exchange, interval, n_bars, fut):
    for _ in range(3):
        a = orig_tv.get_hist(symbol, exchange, getattr(orig.Interval, interval), n_bars, fut)
        b = ours.get_hist(symbol, exchange, getattr(tv.Interval, interval), n_bars, fut)
        # A bar boundary between the two fetches shifts the window by one: fetch again.
        if a is None or b is None or a.index[-1] == b.index[-1]:
            return a, b
    return a, b


def assert_same(a: pd.DataFrame, b: pd.DataFrame):
    assert list(a.columns) == ["symbol", "open", "high", "low", "close", "volume"]
    assert list(b.columns) == list(a.columns)
    assert b.index.name == a.index.name == "datetime"
    assert (b.dtypes == a.dtypes).all(), (a.dtypes, b.dtypes)
    assert b.index.dtype == a.index.dtype
    assert len(b) == len(a)
    pd.testing.assert_frame_equal(b.iloc[:-1], a.iloc[:-1], check_exact=True)
    assert b.index[-1] == a.index[-1]
    assert b["symbol"].iloc[-1] == a["symbol"].iloc[-1]
    assert b["open"].iloc[-1] == a["open"].iloc[-1]


@pytest.mark.parametrize("symbol,exchange,interval,n_bars,fut", CASES)
def test_get_hist_equals_the_originals(sim, symbol, exchange, interval, n_bars, fut):
    orig = original_pointed_at(sim.url)
    a, b = fetch_both(orig, orig.TvDatafeed(), tv.TvDatafeed(url=sim.url), symbol, exchange, interval, n_bars, fut)
    assert a is not None and b is not None
    assert_same(a, b)
    if exchange == "SP":
        assert (b["volume"] == 0.0).all()
    if fut:
        assert b["symbol"].iloc[0] == f"{exchange}:{symbol}{fut}!"


def test_local_times_across_dst_equal_the_originals(sim, monkeypatch):
    """The naive index is the machine's local time, as datetime.fromtimestamp gives, across
    daylight-saving changes."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        orig = original_pointed_at(sim.url)
        a, b = fetch_both(orig, orig.TvDatafeed(), tv.TvDatafeed(url=sim.url), "BTCUSDT", "BINANCE", "in_1_hour", 5000, None)
        assert_same(a, b)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_bad_symbol_gives_none_from_both(sim, caplog):
    orig = original_pointed_at(sim.url)
    caplog.set_level(logging.ERROR)
    assert orig.TvDatafeed().get_hist("INVALIDXYZ", "BINANCE") is None
    assert tv.TvDatafeed(url=sim.url).get_hist("INVALIDXYZ", "BINANCE") is None
    assert any("no data, please check the exchange and symbol" in r.getMessage() for r in caplog.records if r.name == "tvdatafeed_rs")


def test_utc_index_on_request(sim):
    df = tv.TvDatafeed(url=sim.url, utc=True).get_hist("BTCUSDT", "BINANCE", tv.Interval.in_1_hour, 5)
    assert str(df.index.tz) == "UTC"
    assert df.index[-1].timestamp() % 3600 == 0


def test_an_invalid_contract_raises_like_the_original(sim):
    with pytest.raises(ValueError, match="not a valid contract"):
        tv.TvDatafeed(url=sim.url).get_hist("CL", "NYMEX", fut_contract="1")


def test_get_hist_asks_the_server_once_for_its_5000_bars_as_the_original(sim):
    """``n_bars`` counts the forming bar, as the original's request does: 5,000 bars are one
    request (``n_bars`` closed bars would be one bar past a page: a second request, and a
    second round trip against a distant server)."""
    ours = tv.TvDatafeed(url=sim.url)
    live = tv.TvDatafeedLive(url=sim.url)
    try:
        for get in (ours.get_hist, live.get_hist):
            before = sim.pages_requested
            df = get("BTCUSDT", "BINANCE", tv.Interval.in_1_minute, n_bars=5000)
            assert len(df) == 5000
            assert sim.pages_requested == before, "a second page was asked"
    finally:
        live.shutdown(5)
