//! loom models of the seis registry (`tvdatafeed::internal::Registry`): one per contract.
//!
//! Under `--cfg tvdatafeed_loom` the registry's `ArcSwap` is replaced by a loom-visible
//! stand-in over `Mutex<Arc<_>>`, so these models check the registry's own protocol (the
//! writer lock, clone-modify-publish, the quiescence check), not arc-swap's internals.
#![cfg(tvdatafeed_loom)]

use std::time::Duration;

use loom::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
};
use tvdatafeed::internal::{ConsumerId, Registry};

/// Never reached under loom (the clock is frozen).
const FOREVER: Duration = Duration::from_secs(3600);

#[test]
fn registry_get_or_insert_race_yields_one_entry() {
    loom::model(|| {
        let registry: Arc<Registry<u8, u32, ()>> = Arc::new(Registry::new());
        let other = Arc::clone(&registry);
        let racer = thread::spawn(move || other.get_or_insert(1, || 10));
        let mine = registry.get_or_insert(1, || 20);
        let theirs = racer.join().expect("racer panicked");
        assert!(Arc::ptr_eq(&mine, &theirs), "two values for one key");
        assert_eq!(registry.load().len(), 1);
    });
}

#[test]
fn registry_concurrent_consumer_inserts_lose_no_update() {
    loom::model(|| {
        let registry: Arc<Registry<u8, (), u32>> = Arc::new(Registry::new());
        registry.get_or_insert(1, || ());
        let other = Arc::clone(&registry);
        let racer = thread::spawn(move || other.insert_consumer(&1, 2).expect("key exists"));
        let mine = registry.insert_consumer(&1, 1).expect("key exists");
        let theirs = racer.join().expect("racer panicked");
        let snapshot = registry.load();
        let mut ids: Vec<ConsumerId> = snapshot
            .get(&1)
            .expect("key exists")
            .consumers()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        let mut expected = vec![mine, theirs];
        expected.sort();
        assert_eq!(ids, expected);
    });
}

#[test]
fn registry_reader_never_delivers_to_consumer_after_remove_returns() {
    loom::model(|| {
        // The consumer payload counts deliveries made to it.
        let registry: Arc<Registry<u8, (), Arc<AtomicUsize>>> = Arc::new(Registry::new());
        registry.get_or_insert(1, || ());
        let deliveries = Arc::new(AtomicUsize::new(0));
        let id = registry
            .insert_consumer(&1, Arc::clone(&deliveries))
            .expect("key exists");
        let remove_returned = Arc::new(AtomicBool::new(false));

        let reader = {
            let registry = Arc::clone(&registry);
            let remove_returned = Arc::clone(&remove_returned);
            thread::spawn(move || {
                // Acquire: pairs with the Release store after `remove_consumer` returned.
                let removed_before_load = remove_returned.load(Ordering::Acquire);
                let snapshot = registry.load();
                for (consumer_id, consumer) in snapshot.get(&1).expect("key exists").consumers() {
                    assert_eq!(consumer_id, id);
                    assert!(
                        !removed_before_load,
                        "a load that started after remove_consumer returned saw the consumer"
                    );
                    consumer.fetch_add(1, Ordering::Relaxed);
                }
            })
        };

        let removed = registry.remove_consumer(id).expect("registered");
        // Release: a reader that sees the flag started its load after the removal.
        remove_returned.store(true, Ordering::Release);
        // Quiescence: once this returns, no in-flight reader holds the consumer any more...
        let consumer = removed.wait_unused(FOREVER).expect("loom never times out");
        let delivered = consumer.load(Ordering::Relaxed);
        reader.join().expect("reader panicked");
        // ...so no delivery can have happened after it.
        assert_eq!(consumer.load(Ordering::Relaxed), delivered);
        assert!(delivered <= 1);
        assert!(registry.load().get(&1).expect("key").consumers().len() == 0);
    });
}
