#!/usr/bin/env python3
"""Conformance: the Python tvdatafeed client (PyPI `tradingview-datafeed==2.1.1`, import name
`tvDatafeed`), which nobody here wrote, fetches history from our simulator.

Usage: conformance.py WS_URL SYMBOL [SYMBOL ...]

`TvDatafeed.get_hist` hard-codes `wss://data.tradingview.com/socket.io/websocket`, so this script
wraps `websocket.create_connection` (websocket-client) to connect to WS_URL instead. The library
passes its Origin as `headers=`, which websocket-client ignores; against the real server the
Origin it sends is therefore websocket-client's default for that URL,
`https://data.tradingview.com`, and the wrapper sends exactly that.

Prints one JSON object on stdout: {"origin": ..., "urls": [...], "rows": {SYMBOL: [[epoch, "open",
"high", "low", "close", "volume"], ...]}} with each row's open time in UTC epoch seconds and the
prices as Python's repr (shortest round-trip text), one row per DataFrame row, oldest first, all
at Interval.in_1_hour with n_bars=300. Exit codes: 0 ok, 3 a package is missing, 4 no data.
"""

import calendar
import json
import os
import sys
import time

# The library turns bar times into naive local datetimes (`datetime.fromtimestamp`): pin the
# zone to UTC so that they convert back to the exact epoch seconds.
os.environ["TZ"] = "UTC"
time.tzset()

try:
    import websocket
    import tvDatafeed
    from tvDatafeed import main as tv_main
    from tvDatafeed import Interval, TvDatafeed
except ImportError as e:  # pragma: no cover
    print(
        f"conformance: missing Python package ({e}); install with: "
        "python3 -m pip install tradingview-datafeed==2.1.1 websocket-client pandas",
        file=sys.stderr,
    )
    sys.exit(3)

HARD_CODED = "wss://data.tradingview.com/socket.io/websocket"
ORIGIN = "https://data.tradingview.com"


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    url, symbols = sys.argv[1], sys.argv[2:]
    real_create_connection = websocket.create_connection
    urls = []

    def redirected(target, *args, **kwargs):
        urls.append(target)
        if target != HARD_CODED:
            raise RuntimeError(f"unexpected URL from tvDatafeed: {target}")
        kwargs["origin"] = ORIGIN
        return real_create_connection(url, *args, **kwargs)

    # main.py did `from websocket import create_connection`: patch its own name too.
    websocket.create_connection = redirected
    tv_main.create_connection = redirected

    tv = TvDatafeed()
    rows = {}
    for symbol in symbols:
        df = tv.get_hist(symbol=symbol, exchange="", interval=Interval.in_1_hour, n_bars=300)
        if df is None:
            print(f"conformance: get_hist returned no data for {symbol}", file=sys.stderr)
            return 4
        out = []
        for ts, row in df.iterrows():
            epoch = calendar.timegm(ts.to_pydatetime().timetuple())
            out.append([epoch] + [repr(float(row[c])) for c in ("open", "high", "low", "close", "volume")])
        rows[symbol] = out
        if tv.ws is not None:
            tv.ws.close()
    version = getattr(tvDatafeed, "__version__", None)
    print(json.dumps({"origin": ORIGIN, "urls": urls, "version": version, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
