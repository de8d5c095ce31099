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
                let entry = snapshot.get(&1);
                assert!(entry.is_some(), "the key vanished");
                for (consumer_id, consumer) in entry.into_iter().flat_map(|e| e.consumers()) {
                    assert_eq!(consumer_id, id);
                    assert!(
                        !removed_before_load,
                        "a load that started after remove_consumer returned saw the consumer"
                    );
                    consumer.fetch_add(1, Ordering::Relaxed);
                }
            })
        };

        let mut removed = registry.remove_consumer(id).expect("registered");
        // Release: a reader that sees the flag started its load after the removal.
        remove_returned.store(true, Ordering::Release);
        // One look, not a wait: a wait for a quiescence that never comes would end in loom's
        // branch limit before any assertion below could speak.
        let quiescent_before_join = removed.is_quiescent();
        let delivered_then = deliveries.load(Ordering::Relaxed);
        reader.join().expect("reader panicked");
        if quiescent_before_join {
            // Quiescence means no in-flight reader holds the consumer, so none delivers later.
            assert_eq!(
                deliveries.load(Ordering::Relaxed),
                delivered_then,
                "delivered to the consumer after it was reported quiescent"
            );
        }
        assert!(deliveries.load(Ordering::Relaxed) <= 1);
        // The reader is gone: nothing but the `Removed` handle may hold the consumer now.
        assert!(
            removed.is_quiescent(),
            "the registry still holds a removed consumer"
        );
        assert!(removed.wait_unused(Duration::ZERO).is_ok());
        assert_eq!(
            registry.load().get(&1).map(|e| e.consumers().len()),
            Some(0),
            "the removed consumer is still published"
        );
    });
}

/// The ids of `key`'s consumers in the current snapshot, sorted.
fn consumer_ids(registry: &Registry<u8, (), u32>, key: u8) -> Vec<ConsumerId> {
    let snapshot = registry.load();
    let mut ids: Vec<ConsumerId> = snapshot
        .get(&key)
        .into_iter()
        .flat_map(|e| e.consumers().map(|(id, _)| id))
        .collect();
    ids.sort();
    ids
}

#[test]
fn registry_remove_consumer_racing_insert_consumer_loses_neither() {
    loom::model(|| {
        let registry: Arc<Registry<u8, (), u32>> = Arc::new(Registry::new());
        registry.get_or_insert(1, || ());
        let old = registry.insert_consumer(&1, 1).expect("key exists");
        let other = Arc::clone(&registry);
        let inserter = thread::spawn(move || other.insert_consumer(&1, 2));
        let removed = registry.remove_consumer(old).map(|r| r.id());
        let new = inserter.join().expect("inserter panicked");
        assert_eq!(removed, Some(old), "the removal found nothing");
        assert!(new.is_some(), "the key is never removed here");
        assert_eq!(
            consumer_ids(&registry, 1),
            Vec::from_iter(new),
            "an update was lost: the insert, or the removal"
        );
        // The id index agrees with the snapshot.
        assert!(registry.remove_consumer(old).is_none(), "removed twice");
        assert!(new.is_some_and(|id| registry.remove_consumer(id).is_some()));
    });
}

#[test]
fn registry_remove_key_racing_insert_consumer_hands_back_every_consumer() {
    loom::model(|| {
        let registry: Arc<Registry<u8, (), u32>> = Arc::new(Registry::new());
        let value = registry.get_or_insert(1, || ());
        let old = registry.insert_consumer(&1, 1).expect("key exists");
        let other = Arc::clone(&registry);
        let inserter = thread::spawn(move || other.insert_consumer(&1, 2));
        let (removed_value, removed) = registry.remove(&1).expect("the key is present");
        let new = inserter.join().expect("inserter panicked");
        assert!(Arc::ptr_eq(&value, &removed_value));
        let mut removed_ids: Vec<ConsumerId> = removed.iter().map(|r| r.id()).collect();
        removed_ids.sort();
        // An insert that won the race is removed with the key; one that lost finds no key.
        let mut expected: Vec<ConsumerId> = std::iter::once(old).chain(new).collect();
        expected.sort();
        assert_eq!(
            removed_ids, expected,
            "a consumer of the removed key was lost or invented"
        );
        assert!(registry.load().is_empty(), "the key survived its removal");
        for id in expected {
            assert!(
                registry.remove_consumer(id).is_none(),
                "the id index kept a consumer of a removed key"
            );
        }
    });
}
