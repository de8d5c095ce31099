#!/usr/bin/env bash
# Mutation check of the loom models: each mutation below breaks the ring, the registry or the
# consumer gate in
# one way the models claim to catch (a weakened ordering, a dropped wake-up, a stale thread
# registration, a snapshot loaded outside the writer lock, a task's skipped re-check...). For
# each one, the script applies it to a scratch copy of the repository (never to the working
# tree), runs the model(s) meant
# to catch it, and checks that they FAIL, with the expected message in their output (so that
# an unrelated failure, such as a build error, does not count as a catch).
#
# Exits non-zero if a mutation survives, if a mutation no longer applies (the source moved:
# update the mutation), or if a model fails for another reason.
#
# Usage: loom-tests/mutations.sh [NAME...]   (default: every mutation; NAME as listed below)
#        loom-tests/mutations.sh --check      (only check that every mutation still applies)
# Needs python3 (to apply the edits exactly). Builds into target/loom-mutants: not target/loom,
# whose artifacts cargo would mix up with the mutants (same package ids and hashes).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/tvdatafeed-mutants.XXXXXX")"
# The scratch copy goes away on any exit, success or failure; the working tree is never edited.
trap 'rm -rf "$scratch"' EXIT

# The sources as they are in the working tree (committed or not), without build output.
tar -C "$repo" --exclude=./target --exclude=./.git --exclude=./fuzz -cf - . | tar -C "$scratch" -xf -

export RUSTFLAGS="--cfg tvdatafeed_loom"
export CARGO_TARGET_DIR="$repo/target/loom-mutants"
export CARGO_TERM_COLOR=never
unset LOOM_MAX_PREEMPTIONS

# `replace FILE OLD NEW` (fails unless OLD occurs exactly once).
. "$repo/loom-tests/mutate-lib.sh"

# Each mutation: NAME|FILE|TEST-FILE|MODEL-FILTER|EXPECTED-OUTPUT-REGEX, then its OLD and NEW
# text (defined in `mutation_text`).
mutations=(
    "disconnected-relaxed|src/ring.rs|ring|ring_producer_drop_never_hides_an_item|the item pushed before the drop was lost"
    "push-iter-head-relaxed|src/ring.rs|ring|ring_push_iter_through_a_full_ring|Causality violation"
    "register-on-first-park-only|src/ring.rs|ring|ring_consumer_moved_to_another_thread|deadlock"
    "no-unpark|src/ring.rs|ring|ring_push_then_park_never_loses_wakeup|deadlock"
    "producer-fence-acqrel|src/ring.rs|ring|ring_push_then_park_never_loses_wakeup|deadlock"
    "consumer-fence-acqrel|src/ring.rs|ring|ring_push_then_park_never_loses_wakeup|deadlock"
    "register-ignores-borrow|src/ring.rs|ring|ring_consumer_moved_to_another_thread|Causality violation"
    "unpark-release-relaxed|src/ring.rs|ring|ring_consumer_moved_to_another_thread|Causality violation"
    "remove-consumer-loads-before-lock|src/registry.rs|registry|registry_remove_consumer_racing_insert_consumer|an update was lost"
    "remove-key-loads-before-lock|src/registry.rs|registry|registry_remove_key_racing_insert_consumer|a consumer of the removed key was lost or invented"
    "remove-consumer-skips-publish|src/registry.rs|registry|registry_reader_never_delivers|(saw the consumer|still holds a removed consumer|still published)"
    # With the gate broken, loom may first trip over the late unpark the callback's `exit`
    # sends a closer that already returned (its own `state.notified` assertion): also a catch.
    # The async hand-off (`Consumer::poll_pop`): the task's re-check, fence and wake-up.
    "poll-pop-no-recheck|src/ring.rs|ring_async|ring_async_push_after_pending_always_wakes_the_task|the task was never woken"
    "poll-pop-fence-acqrel|src/ring.rs|ring_async|ring_async_push_after_pending_always_wakes_the_task|the task was never woken"
    "task-wake-skipped|src/ring.rs|ring_async|ring_async_producer_drop_after_pending_always_wakes_the_task|the task was never woken"
    "gate-enter-ignores-close|src/live/gate.rs|consumer|consumer_removal_then_quiescence|(ran after del_consumer returned|entered after close|assertion failed: state.notified)"
    # The dispatcher threads' hand-off (several rings, one sleeper).
    "bell-no-unpark|src/live/dispatch.rs|dispatch|dispatch_a_push_racing_a_turn_is_run|deadlock"
    "queued-cleared-after-poll|src/live/dispatch.rs|dispatch|dispatch_a_push_racing_a_turn_is_run|deadlock"
    "stop-ignores-inbox|src/live/dispatch.rs|dispatch|dispatch_a_push_racing_a_turn_is_run|left == right"
    "gate-close-does-not-wait|src/live/gate.rs|consumer|gate_close_waits_for_a_running_callback|(close returned while the callback was still inside|assertion failed: state.notified)"
)

# Sets OLD and NEW for mutation $1.
mutation_text() {
    case "$1" in
    disconnected-relaxed)
        OLD='        // Release: a consumer that sees the flag (Acquire) also sees every push we made.
        self.shared.disconnected.store(true, Ordering::Release);'
        NEW='        self.shared.disconnected.store(true, Ordering::Relaxed);' ;;
    push-iter-head-relaxed)
        OLD='            let head = shared.head.load(Ordering::Acquire);
            self.cached_head.set(head);
            free = '
        NEW='            let head = shared.head.load(Ordering::Relaxed);
            self.cached_head.set(head);
            free = ' ;;
    register-on-first-park-only)
        OLD='        if self.registered != Some(me.id()) {'
        NEW='        if self.registered.is_none() {' ;;
    no-unpark)
        OLD='                        thread.unpark();'
        NEW='                        let _ = thread;' ;;
    producer-fence-acqrel)
        OLD='        // sees what we just stored, or we see its `sleeping = true` below.
        fence(Ordering::SeqCst);'
        NEW='        fence(Ordering::AcqRel);' ;;
    consumer-fence-acqrel)
        OLD='            // `sleeping = true` and unparks us.
            fence(Ordering::SeqCst);'
        NEW='            fence(Ordering::AcqRel);' ;;
    register-ignores-borrow)
        OLD='            .compare_exchange_weak(IDLE, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()'
        NEW='            .swap(WRITING, Ordering::Acquire)
            == WRITING' ;;
    unpark-release-relaxed)
        OLD='                // lets it overwrite the handle.
                self.access.store(IDLE, Ordering::Release);'
        NEW='                self.access.store(IDLE, Ordering::Relaxed);' ;;
    poll-pop-no-recheck)
        OLD='        fence(Ordering::SeqCst);
        match self.poll_once() {
            Some(result) => self.ready(result),
            None => Poll::Pending,
        }'
        NEW='        fence(Ordering::SeqCst);
        Poll::Pending' ;;
    poll-pop-fence-acqrel)
        OLD='        // `sleeping = true` and wakes the waker registered above.
        fence(Ordering::SeqCst);'
        NEW='        fence(Ordering::AcqRel);' ;;
    task-wake-skipped)
        OLD='                    waker.wake();'
        NEW='                    drop(waker);' ;;
    remove-consumer-loads-before-lock)
        OLD='        let mut writer = self.lock_writer();
        let key = writer.owners.get(&id)?;'
        NEW='        let early = self.snapshot.load();
        let mut writer = self.lock_writer();
        let key = writer.owners.get(&id)?;'
        # The later load under the lock then reads the early snapshot instead.
        OLD2='        let current = self.snapshot.load();
        let Some(old) = cell::get(&current).get(key).cloned() else {'
        NEW2='        let current = early;
        let Some(old) = cell::get(&current).get(key).cloned() else {' ;;
    remove-key-loads-before-lock)
        OLD='        let mut writer = self.lock_writer();
        let current = self.snapshot.load();
        let old = Arc::clone(cell::get(&current).get(key)?);
        let removed: Vec<Removed<C>>'
        NEW='        let current = self.snapshot.load();
        let mut writer = self.lock_writer();
        let old = Arc::clone(cell::get(&current).get(key)?);
        let removed: Vec<Removed<C>>' ;;
    remove-consumer-skips-publish)
        OLD='        let next = Self::modified(current, |map| replace_entry(map, key, entry));
        self.publish(&writer, next);
        // Cannot panic: hashes a `ConsumerId`.
        writer.owners.remove(&id);'
        NEW='        let next = Self::modified(current, |map| replace_entry(map, key, entry));
        drop(next);
        // Cannot panic: hashes a `ConsumerId`.
        writer.owners.remove(&id);' ;;
    gate-enter-ignores-close)
        OLD='        self.state
            .compare_exchange(OPEN, OPEN | RUNNING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()'
        NEW='        self.state.fetch_or(RUNNING, Ordering::SeqCst);
        true' ;;
    gate-close-does-not-wait)
        OLD='        if before & RUNNING == 0 {
            return true;
        }
        let deadline'
        NEW='        if before & RUNNING == 0 || true {
            return true;
        }
        let deadline' ;;
    bell-no-unpark)
        OLD='            self.home.ready.push(self.key);
            self.home.unpark();'
        NEW='            self.home.ready.push(self.key);' ;;
    stop-ignores-inbox)
        OLD='        if self.home.stop.load(Ordering::Acquire) {
            if self.admit() {
                return true;
            }
            if self.live() == 0 {'
        NEW='        if self.home.stop.load(Ordering::Acquire) {
            if self.live() == 0 {' ;;
    queued-cleared-after-poll)
        OLD='        slot.bell.queued.swap(false, Ordering::AcqRel);
        let id'
        NEW='        let id'
        OLD2='            .run(&mut Context::from_waker(&slot.waker), BUDGET);
        match step {'
        NEW2='            .run(&mut Context::from_waker(&slot.waker), BUDGET);
        slot.bell.queued.swap(false, Ordering::AcqRel);
        match step {' ;;
    *)
        echo "unknown mutation $1" >&2
        return 1 ;;
    esac
}

select_mutations "$@"
wanted=(${selected[@]+"${selected[@]}"})

# Every mutation must apply before anything is built: a source that moved fails in seconds.
for m in "${mutations[@]}"; do
    IFS='|' read -r name file _ <<<"$m"
    if ((${#wanted[@]})) && [[ ! " ${wanted[*]} " == *" $name "* ]]; then
        continue
    fi
    OLD2='' NEW2=''
    mutation_text "$name"
    if ! applies "$repo/$file" "$OLD" || { [[ -n "$OLD2" ]] && ! applies "$repo/$file" "$OLD2"; }; then
        echo "mutation $name no longer applies: update it" >&2
        exit 1
    fi
done
if ((check_only)); then
    echo "every selected loom mutation applies"
    exit 0
fi

survived=()
broken=()
start=$SECONDS
for m in "${mutations[@]}"; do
    IFS='|' read -r name file test filter expect <<<"$m"
    if ((${#wanted[@]})) && [[ ! " ${wanted[*]} " == *" $name "* ]]; then
        continue
    fi
    # A pristine copy of the file, then the mutation.
    cp "$repo/$file" "$scratch/$file"
    OLD2='' NEW2=''
    mutation_text "$name"
    if ! replace "$scratch/$file" "$OLD" "$NEW" ||
        { [[ -n "$OLD2" ]] && ! replace "$scratch/$file" "$OLD2" "$NEW2"; }; then
        broken+=("$name (does not apply)")
        cp "$repo/$file" "$scratch/$file"
        continue
    fi
    log="$scratch/$name.log"
    t0=$SECONDS
    if (cd "$scratch" && cargo test -q -p loom-tests --release --test "$test" "$filter") >"$log" 2>&1; then
        survived+=("$name")
        outcome="SURVIVED"
    elif grep -Eq "$expect" "$log"; then
        outcome="caught"
    else
        broken+=("$name (failed without the expected /$expect/)")
        outcome="FAILED OTHERWISE"
        tail -n 30 "$log" >&2
    fi
    printf '%-36s %-16s %4ss  (%s: %s)\n' "$name" "$outcome" "$((SECONDS - t0))" "$test" "$filter"
    cp "$repo/$file" "$scratch/$file"
done

printf 'mutations: %ss in all\n' "$((SECONDS - start))"
if ((${#survived[@]} + ${#broken[@]})); then
    for s in "${survived[@]}"; do echo "survived: $s (no model failed)" >&2; done
    for b in "${broken[@]}"; do echo "broken: $b" >&2; done
    exit 1
fi
echo "every mutation was caught"
