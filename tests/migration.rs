//! Storage migrations: a store written at the previous schema version is brought forward, and a
//! store from a newer version is refused with a clear message.

use concord::metrics::Metrics;
use concord::store::{cfs, migrate, DocKey, Store, StoreError, StoreOptions};

fn put(store: &Store, collection: &str, id: &str, deleted: bool) {
    let key = DocKey::new(collection, id).unwrap();
    let body = serde_json::json!({"id": id}).as_object().unwrap().clone();
    store
        .write::<_, StoreError>(&key, |doc, _| {
            concord::doc::write::apply(doc, &concord::doc::write::Write::Replace(body), 1)?;
            if deleted {
                concord::doc::write::apply(doc, &concord::doc::write::Write::Delete, 2)?;
            }
            Ok(())
        })
        .unwrap();
}

/// Rewrites a current store into the schema-1 layout: none of the column families later schemas
/// added, version 1.
fn downgrade_to_v1(path: &std::path::Path) {
    let mut db = rocksdb::DB::open_cf(&rocksdb::Options::default(), path, cfs::ALL).unwrap();
    for cf in [cfs::COUNTS, cfs::DIGEST, cfs::BUCKETS, cfs::SYNC_STATES] {
        db.drop_cf(cf).unwrap();
    }
    migrate::write_version(&db, 1).unwrap();
}

#[test]
fn schema_1_store_is_migrated_to_current() {
    let dir = tempfile::tempdir().unwrap();
    let (root, level1) = {
        let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
        for i in 0..10 {
            put(&store, "a", &format!("d{i}"), i % 3 == 0);
        }
        put(&store, "b", "only", false);
        store.flush().unwrap();
        (store.digest_root(), store.digest_children(1, 0))
    };
    downgrade_to_v1(dir.path());
    {
        let db = rocksdb::DB::open_cf(
            &rocksdb::Options::default(),
            dir.path(),
            [cfs::META, cfs::SNAPSHOTS, cfs::CHANGES, cfs::FEED],
        )
        .unwrap();
        assert_eq!(migrate::read_version(&db).unwrap(), Some(1));
        assert!(db.cf_handle(cfs::COUNTS).is_none());
    }
    let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
    assert_eq!(
        store.collections().unwrap(),
        vec![("a".to_string(), 6), ("b".to_string(), 1)]
    );
    // The digest rebuilt from metadata equals the one commits maintained.
    assert_ne!(root, 0);
    assert_eq!(store.digest_root(), root);
    assert_eq!(store.digest_children(1, 0), level1);
    // ...and so does the tree reloaded from disk.
    let l3: u64 = (0..4096)
        .flat_map(|p| store.digest_children(3, p))
        .fold(0, |a, b| a ^ b);
    assert_eq!(l3, root);
    let docs: usize = (0..=u16::MAX)
        .map(|b| store.bucket_docs(b).unwrap().len())
        .sum();
    assert_eq!(docs, 11);
    // The migrated store keeps counting.
    put(&store, "b", "second", false);
    assert_eq!(store.collections().unwrap()[1], ("b".to_string(), 2));
    let key = DocKey::new("a", "d1").unwrap();
    let json = store
        .read(&key, |doc, _| concord::doc::json::to_json(doc, None))
        .unwrap()
        .unwrap();
    assert_eq!(json["id"], "d1");
    drop(store);
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs::ALL).unwrap();
    assert_eq!(
        migrate::read_version(&db).unwrap(),
        Some(migrate::CURRENT_SCHEMA)
    );
}

#[test]
fn newer_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap());
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs::ALL).unwrap();
        migrate::write_version(&db, migrate::CURRENT_SCHEMA + 1).unwrap();
    }
    let err = Store::open(dir.path(), StoreOptions::default(), Metrics::new())
        .err()
        .expect("must refuse");
    assert!(matches!(err, StoreError::SchemaTooNew { .. }));
    assert!(err.to_string().contains("newer Concord"), "{err}");
}
