#!/usr/bin/env bash
# Mutation check of the engine's own tests (the deterministic simulation, the fanout's and the
# fetcher's unit tests): each mutation below puts back one defect those tests claim to catch
# (a closed bar dropped for a slow consumer, a loss not reported, a quiet bar never closed by
# its fetch, a stale stream close or update taken as a revision, a late replay that skips the
# bars it must read again, an async stream ended before it was drained or never woken, a
# dispatcher thread that runs a callback past its gate, a race past its budget or before any
# answer was measured, a symbol resolved by the confirmation instead of ahead of it).
#
# Not here: dropping the need that arrives while a fetch of the same seis is in flight
# (`Fetcher::want`'s follow-up). Every confirmation asks from the last bar delivered to now,
# and a seis with nothing forming is checked at the next close, so a dropped need is covered
# by the next answer or check; no test observes it (tried: the quiet-market tests on 900 ms and
# 1.5 s serial servers pass with it). It is kept as defence in depth, not claimed as tested. For each one, the script
# applies it to a scratch copy of the repository (never to the working tree), runs the tests
# meant to catch it, and checks that they FAIL with the expected message (so that an unrelated
# failure, such as a build error, does not count as a catch).
#
# Exits non-zero if a mutation survives, if a mutation no longer applies (the source moved:
# update the mutation), or if a test fails for another reason.
#
# Usage: loom-tests/engine-mutations.sh [NAME...]   (default: every mutation)
#        loom-tests/engine-mutations.sh --check      (only check that every mutation applies)
# Needs python3. Builds into target/engine-mutants.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/tvdatafeed-engine-mutants.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

tar -C "$repo" --exclude=./target --exclude=./.git --exclude=./fuzz -cf - . | tar -C "$scratch" -xf -

export CARGO_TARGET_DIR="$repo/target/engine-mutants"
export CARGO_TERM_COLOR=never
# The property tests' persisted failures would be written into the scratch copy: harmless.

# `replace FILE OLD NEW` (fails unless OLD occurs exactly once).
. "$repo/loom-tests/mutate-lib.sh"

# NAME|FILE|TEST-TARGET|TEST-FILTER|EXPECTED-OUTPUT-REGEX; OLD and NEW in `mutation_text`.
# TEST-TARGET is the cargo test target (`--lib`, or e.g. `--test live_faults`); the regex comes
# last, so it may hold `|`.
mutations=(
    "fanout-drops-closes|src/live/fanout.rs|--lib|live::dst::a_consumer_stalled_for_30_s|(closed bars after a 30 s stall|no closed bar was lost|a closed bar is missing|lost .* within the backlog)"
    "fanout-loss-untold|src/live/fanout.rs|--lib|live::fanout::tests::past_the_limit|assertion .left == right. failed"
    "fetch-forming-closed-only-for-gaps|src/live/core.rs|--lib|live::dst::a_thin_market_closes|(the last closed bar delivered is|traded bars closed in 120 s|thin closes late)"
    "stream-close-authoritative|src/live/core.rs|--lib|live::dst::a_stream_close_after_a_fetch_confirmed|assertion .left == right. failed: bar"
    "stream-update-revises|src/live/core.rs|--lib|live::dst::a_stream_close_after_a_fetch_confirmed|assertion .left == right. failed: bar"
    "replay-rereads-nothing|src/live/core.rs|--lib|live::dst::regression_a_revision_after_skipped_bars|final value of bar"
    "untrusted-certificate-retried|src/live/core.rs|--test live_faults|a_reconnect_meeting_an_untrusted_certificate|Failed .waited"
    "gap-bars-off-by-one|src/live/core.rs|--lib|live::dst::a_replay_answered_late|Reconnected's gap_bars against the closed bars"
    "gap-bars-off-by-one-live|src/live/core.rs|--test live_faults|a_replay_answered_too_late|gap_bars is not the count of bars delivered"
    "gate-close-does-not-wait|src/live/gate.rs|--test live|del_consumer_of_a_callback_running_past|del_consumer while its callback runs past the timeout: Ok"
    "recv-closed-before-drained|src/live/consumer.rs|--test live|a_removed_subscription_still_returns|events returned after the removal"
    "stream-ends-before-drained|src/live/consumer.rs|--test live_async|a_removed_stream_returns|events returned after the removal"
    "task-wake-skipped-live|src/ring.rs|--test live_async|a_stream_sleeps_while_idle|a lost wake-up"
    "replay-reach-back-1|src/live/core.rs|--lib|live::dst::a_bar_revised_while_the_connection_was_down|final value of bar"
    "attempt-limit-ignored|src/live/core.rs|--test live_faults|a_server_gone_for_good|the failures watched for .waited"
    "fetch-gauge-not-published|src/live/fetch.rs|--lib|live::dst::regression_a_quiet_5s_seis_with_a_late_tick|published fetches in flight"
    "link-down-not-published|src/live/core.rs|--lib|live::dst::regression_a_consumer_joining_during_an_outage|published link state"
    "many-backlog-by-seis|src/live/fanout.rs|--lib|live::dst::many_seis_consumers_keep|out of order across seises"
    "dispatch-ignores-gate|src/live/consumer.rs|--test live_dispatch|a_consumer_removed_with_events_waiting|a callback ran after its del_consumer returned"
    "race-budget-ignored|src/live/fetch.rs|--lib|live::dst::the_race_budget_bounds|raced with a budget of 30 a minute"
    "race-blind|src/live/fetch.rs|--lib|live::fetch::tests::racing_fetches_at_the_floor|nothing races blindly"
    "no-resolve-ahead|src/live/fetch.rs|--lib|live::dst::a_seis_first_close_costs_one_request|closes from the first on come one service time"
    "close-timer-fires-early|src/live/core.rs|--lib|live::dst::a_close_timer_firing_before|raced closes with the wall clock read behind"
    "first-bars-race-the-ceiling|src/live/fetch.rs|--lib|live::dst::a_streaming_seis_that_closes_promptly|bars raced a prompt stream"
)

mutation_text() {
    case "$1" in
    fanout-drops-closes)
        OLD='                self.backlog.push_back((tag, d));
                while self.backlog.len() > limit.max(1) {'
        NEW='                if matches!(d.event, LiveEvent::Closed(_)) {
                    self.drop_event(tag, &d.event);
                    return;
                }
                self.backlog.push_back((tag, d));
                while self.backlog.len() > limit.max(1) {' ;;
    fanout-loss-untold)
        OLD='            st.dropped_closed += 1;'
        NEW='' ;;
    fetch-forming-closed-only-for-gaps)
        OLD='                        if closed {
                            if offer_closed(st, out, id, fm, true) {'
        NEW='                        if closed && f.gap {
                            if offer_closed(st, out, id, fm, true) {' ;;
    stream-close-authoritative)
        OLD='                offer_closed(st, out, id, b, false);'
        NEW='                offer_closed(st, out, id, b, true);' ;;
    stream-update-revises)
        OLD='            SeriesEvent::Update(b) if st.last_closed.is_some_and(|l| b.time <= l.time) => {'
        NEW='            SeriesEvent::Update(b) if false => {' ;;
    gap-bars-off-by-one | gap-bars-off-by-one-live)
        # On the anchored gap-fetch path only (the replay's own path is the other site).
        OLD='                        self.deliveries.push_back((
                            id,
                            LiveEvent::Reconnected {
                                down: now.saturating_duration_since(g.down_since),
                                gap_bars: std::mem::take(&mut st.gap_bars),'
        NEW='                        self.deliveries.push_back((
                            id,
                            LiveEvent::Reconnected {
                                down: now.saturating_duration_since(g.down_since),
                                gap_bars: std::mem::take(&mut st.gap_bars) + 1,' ;;
    gate-close-does-not-wait)
        OLD='        if before & RUNNING == 0 {'
        NEW='        if before & RUNNING == 0 || before != 0 || before == 0 {' ;;
    replay-reach-back-1)
        OLD='const REREAD: usize = 16;'
        NEW='const REREAD: usize = 1;' ;;
    recv-closed-before-drained)
        OLD='        if self.ended {
            return Err(RecvError::Closed);
        }'
        NEW='        if self.ended || !self.gate.is_open() {
            return Err(RecvError::Closed);
        }' ;;
    stream-ends-before-drained)
        OLD='        Poll::Ready(rx.pop().ok())'
        NEW='        Poll::Ready(None)' ;;
    task-wake-skipped-live)
        OLD='                    waker.wake();'
        NEW='                    drop(waker);' ;;
    untrusted-certificate-retried)
        OLD='Error::Transport(TransportError::CertificateNotTrusted { .. }) => !retry_certificates,'
        NEW='Error::Transport(TransportError::CertificateNotTrusted { .. }) => false,' ;;
    attempt-limit-ignored)
        OLD='            .is_some_and(|n| attempt >= n)'
        NEW='            .is_some_and(|n| attempt >= n + 1_000)' ;;
    replay-rereads-nothing)
        OLD='.is_none_or(|b| b.time > st.reread.unwrap_or(last.time).min(last.time))'
        NEW='.is_none_or(|b| b.time > last.time)' ;;
    fetch-gauge-not-published)
        OLD='        let f = self.inflight.remove(&key);
        self.stats.set_fetches_in_flight(self.inflight.len());'
        NEW='        let f = self.inflight.remove(&key);' ;;
    race-budget-ignored)
        OLD='        if self.credit >= RACE_COST {
            self.credit -= RACE_COST;
            true'
        NEW='        if true {
            true' ;;
    race-blind)
        OLD='    answer_ms.is_some_and(|a| {'
        NEW='    Some(answer_ms.unwrap_or(0)).is_some_and(|a| {' ;;
    close-timer-fires-early)
        OLD='        if self.unix_ms < close_ms {'
        NEW='        if false && self.unix_ms < close_ms {' ;;
    first-bars-race-the-ceiling)
        OLD='                let stream = seis
                    .and_then(|s| s.grace.latest_seen())
                    .unwrap_or(g.ceiling);'
        NEW='                let stream = g.ceiling;' ;;
    no-resolve-ahead)
        OLD='        if main_loading || self.ahead.is_empty() {'
        NEW='        if true || main_loading || self.ahead.is_empty() {' ;;
    link-down-not-published)
        OLD='        self.stats.set_connected(matches!(link, Link::Up { .. }));'
        NEW='        if matches!(link, Link::Up { .. }) { self.stats.set_connected(true); }' ;;
    many-backlog-by-seis)
        OLD='        while let Some((tag, d)) = self.backlog.pop_front() {'
        NEW='        self.backlog.make_contiguous().sort_by_key(|(t, _)| *t);
        while let Some((tag, d)) = self.backlog.pop_front() {' ;;
    dispatch-ignores-gate)
        OLD='            if !self.shared.gate.is_open() {
                return Step::Ended;
            }
            let item = match self.source.poll_event(cx) {
                Poll::Pending => return Step::Idle,
                Poll::Ready(None) => return Step::Ended,
                Poll::Ready(Some(item)) => item,
            };
            let last = S::is_last(&item);
            if !self.shared.gate.enter() {
                return Step::Ended;
            }
            let result = with_running(self.me, || {
                catch_unwind(AssertUnwindSafe(|| callback(item)))
            });
            self.shared.gate.exit();'
        NEW='            let item = match self.source.poll_event(cx) {
                Poll::Pending => return Step::Idle,
                Poll::Ready(None) => return Step::Ended,
                Poll::Ready(Some(item)) => item,
            };
            let last = S::is_last(&item);
            let entered = self.shared.gate.enter();
            let result = with_running(self.me, || {
                catch_unwind(AssertUnwindSafe(|| callback(item)))
            });
            if entered {
                self.shared.gate.exit();
            }' ;;
    *) echo "unknown mutation $1" >&2; exit 2 ;;
    esac
}

select_mutations "$@"
want=(${selected[@]+"${selected[@]}"})

# Every mutation must apply before anything is built: a source that moved fails in seconds,
# not half an hour into CI.
for m in "${mutations[@]}"; do
    IFS='|' read -r name file _ <<<"$m"
    if [ "${#want[@]}" -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then
        continue
    fi
    mutation_text "$name"
    applies "$scratch/$file" "$OLD" || { echo "mutation $name no longer applies: update it" >&2; exit 1; }
done
if ((check_only)); then
    echo "every selected engine mutation applies"
    exit 0
fi

survived=0
for m in "${mutations[@]}"; do
    IFS='|' read -r name file target filter expect <<<"$m"
    if [ "${#want[@]}" -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then
        continue
    fi
    mutation_text "$name"
    cp "$scratch/$file" "$scratch/$file.orig"
    replace "$scratch/$file" "$OLD" "$NEW"
    printf '== %s (%s): ' "$name" "$filter"
    log="$scratch/$name.log"
    if (cd "$scratch" && cargo test --features sim $target "$filter" >"$log" 2>&1); then
        echo "SURVIVED (the tests passed with the defect)"
        survived=1
    elif grep -Eq "$expect" "$log"; then
        echo "caught"
    else
        echo "FAILED FOR ANOTHER REASON:"
        tail -40 "$log"
        survived=1
    fi
    mv "$scratch/$file.orig" "$scratch/$file"
done
exit "$survived"
