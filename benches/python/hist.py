#!/usr/bin/env python3
"""History download time of the Python `TvDatafeed.get_hist` (PyPI
`tradingview-datafeed==2.1.1`) against our simulator, in-process, for `benches/latency`
(section `hist`).

Usage: hist.py WS_URL SYMBOL N_BARS REPEATS

Times each `get_hist(SYMBOL, interval=Interval.in_1_minute, n_bars=N_BARS)` with
`time.perf_counter_ns()` (the import and the first, warm-up call are not timed) and prints one
JSON object: {"ns": [...], "rows": <rows of the last call>}. The hard-coded TradingView URL is
redirected to WS_URL as in tests/python/conformance.py. Exit codes: 0 ok, 3 a package is
missing, 4 no data.
"""

import json
import os
import sys
import time

os.environ["TZ"] = "UTC"
time.tzset()

try:
    import websocket
    from tvDatafeed import main as tv_main
    from tvDatafeed import Interval, TvDatafeed
except ImportError as e:  # pragma: no cover
    print(
        f"hist: missing Python package ({e}); install with: "
        "python3 -m pip install tradingview-datafeed==2.1.1 websocket-client pandas",
        file=sys.stderr,
    )
    sys.exit(3)

HARD_CODED = "wss://data.tradingview.com/socket.io/websocket"
ORIGIN = "https://data.tradingview.com"


def main() -> int:
    url, symbol, n_bars, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    real_create_connection = websocket.create_connection

    def redirected(target, *args, **kwargs):
        if target != HARD_CODED:
            raise RuntimeError(f"unexpected URL from tvDatafeed: {target}")
        kwargs["origin"] = ORIGIN
        return real_create_connection(url, *args, **kwargs)

    websocket.create_connection = redirected
    tv_main.create_connection = redirected
    tv = TvDatafeed()
    times = []
    rows = 0
    for i in range(repeats + 1):
        t = time.perf_counter_ns()
        df = tv.get_hist(symbol=symbol, exchange="", interval=Interval.in_1_minute, n_bars=n_bars)
        dt = time.perf_counter_ns() - t
        if df is None:
            print("hist: get_hist returned no data", file=sys.stderr)
            return 4
        if tv.ws is not None:
            tv.ws.close()
        rows = len(df)
        if i > 0:
            times.append(dt)
    print(json.dumps({"ns": times, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
