#!/usr/bin/env bash
# The Python package's CI step, run by .ci/run (or alone: `bash python/ci.sh` from anywhere).
# 1. A fresh venv with maturin, pytest, pandas and the original tradingview-datafeed 2.1.1 (the
#    conformance tests compare against it); `maturin develop --profile wheel` into it; pytest.
# 2. `maturin build --profile wheel`, the wheel installed into a second fresh venv, imported and
#    used against the simulator there, as a new user would.
# 3. The whole suite once more on pandas 2.2, with the wheel, in a third venv.
# The `wheel` profile (release, LTO) is what users get, so it is what the tests run: the tests
# stream bars and time shutdowns, and a debug cdylib is slow at both.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=$root/target/py-ci/dev
wheel_venv=$root/target/py-ci/wheel
rm -rf "$root/target/py-ci"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check maturin pytest pandas \
    tradingview-datafeed==2.1.1 websocket-client
(cd python && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop --profile wheel --quiet)
TVDATAFEED_RS_REQUIRE_ORIGINAL=1 "$venv/bin/python" -m pytest -q python/tests
"$venv/bin/maturin" build --profile wheel --quiet -m python/Cargo.toml -o "$root/target/py-ci/wheels"
python3 -m venv "$wheel_venv"
"$wheel_venv/bin/pip" install --quiet --disable-pip-version-check "$root"/target/py-ci/wheels/tvdatafeed_rs-*.whl
(cd /tmp && "$wheel_venv/bin/python" - <<'PY'
import tvdatafeed_rs as tv
assert tv.__file__.startswith(__import__("sys").prefix), tv.__file__  # the wheel, not the tree
with tv.Simulator() as sim:
    df = tv.TvDatafeed(url=sim.url).get_hist("BTCUSDT", "BINANCE", tv.Interval.in_1_hour, 10)
    assert len(df) == 10 and list(df.columns) == ["symbol", "open", "high", "low", "close", "volume"]
    assert len(tv.Client(url=sim.url).get_hist("BINANCE:BTCUSDT", "1D", 5)) == 5
print("wheel ok:", tv.__version__, tv.__file__)
PY
)
# 3. The whole suite again on pandas 2 (the wheel in a third venv): the frames' fast path
#    (`DataFrame._from_arrays`) is pandas-internal, so it is checked on both majors, not only
#    on the pandas 3 that step 1 installs. The tests import the wheel: `python/tests` does not
#    put the source tree on the path.
pandas2_venv=$root/target/py-ci/pandas2
python3 -m venv "$pandas2_venv"
"$pandas2_venv/bin/pip" install --quiet --disable-pip-version-check "pandas==2.2.3" pytest \
    tradingview-datafeed==2.1.1 websocket-client "$root"/target/py-ci/wheels/tvdatafeed_rs-*.whl
"$pandas2_venv/bin/python" -c 'import pandas; assert pandas.__version__.startswith("2."), pandas.__version__'
TVDATAFEED_RS_REQUIRE_ORIGINAL=1 "$pandas2_venv/bin/python" -m pytest -q -p no:cacheprovider python/tests
