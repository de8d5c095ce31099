#!/usr/bin/env python3
"""Bar-close latency of the Python `TvDatafeedLive` (PyPI `tradingview-datafeed==2.1.1`, import
name `tvDatafeed`) against our simulator, for `benches/latency` (section `python`).

Usage: live_close.py WS_URL N_SEISES UNTIL_UNIX_S

Subscribes N seises (`BINANCE:SYM0` ... on 1-minute bars, `Interval.in_1_minute`), one consumer
each, and prints one JSON line per callback as soon as it runs:
{"seis": i, "bar": <open time, UTC epoch s>, "ns": <time.time_ns() at the callback's start>}.
Exits (hard: the library's threads are not daemons) once the wall clock passes UNTIL_UNIX_S.

The library hard-codes `wss://data.tradingview.com/socket.io/websocket`; as in
tests/python/conformance.py, `websocket.create_connection` is wrapped to connect to WS_URL.
`new_seis` checks every symbol with the symbol-search HTTP API first; that check is answered
here with the symbol itself (the simulator knows every BINANCE symbol), so no HTTP is made.
Exit codes: 0 ok, 3 a package is missing.
"""

import calendar
import json
import os
import sys
import threading
import time

# The library turns bar times into naive local datetimes: pin the zone to UTC.
os.environ["TZ"] = "UTC"
time.tzset()

try:
    import websocket
    from tvDatafeed import main as tv_main
    from tvDatafeed import Interval, TvDatafeedLive
except ImportError as e:  # pragma: no cover
    print(
        f"live_close: missing Python package ({e}); install with: "
        "python3 -m pip install tradingview-datafeed==2.1.1 websocket-client pandas",
        file=sys.stderr,
    )
    sys.exit(3)

HARD_CODED = "wss://data.tradingview.com/socket.io/websocket"
ORIGIN = "https://data.tradingview.com"


def main() -> int:
    url, n, until = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    real_create_connection = websocket.create_connection

    def redirected(target, *args, **kwargs):
        if target != HARD_CODED:
            raise RuntimeError(f"unexpected URL from tvDatafeed: {target}")
        kwargs["origin"] = ORIGIN
        return real_create_connection(url, *args, **kwargs)

    websocket.create_connection = redirected
    tv_main.create_connection = redirected
    TvDatafeedLive.search_symbol = lambda self, text, exchange="": [
        {"symbol": text, "exchange": exchange}
    ]

    out = threading.Lock()
    tv = TvDatafeedLive()
    for i in range(n):
        seis = tv.new_seis(f"SYM{i}", "BINANCE", Interval.in_1_minute)

        def callback(seis, data, i=i):
            ns = time.time_ns()
            bar = calendar.timegm(data.index[0].to_pydatetime().timetuple())
            with out:
                print(json.dumps({"seis": i, "bar": bar, "ns": ns}), flush=True)

        tv.new_consumer(seis, callback)
    while time.time() < until:
        time.sleep(0.2)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
