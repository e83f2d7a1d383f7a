//! Storage migrations: a store written at the previous schema version is brought forward, and a
//! store from a newer version is refused with a clear message. Besides stores this build
//! downgrades, a real data directory written by the oldest Concord is checked in
//! (`tests/fixtures/schema2-store`) and migrated step by step.

mod common;

use common::http::get_json;

use std::path::Path;

use concord::metrics::Metrics;
use concord::store::digest;
use concord::store::{cfs, migrate, DocKey, Store, StoreError, StoreOptions};
use serde_json::{json, Value};

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
    for cf in [
        cfs::COUNTS,
        cfs::DIGEST,
        cfs::BUCKETS,
        cfs::SYNC_STATES,
        cfs::INDEX_ENTRIES,
        cfs::INDEX_REV,
        cfs::INDEX_STATE,
        cfs::DOC_JSON,
    ] {
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
    // Migration 6 materialised the live documents' JSON, and only theirs.
    for i in 0..10 {
        let key = DocKey::new("a", &format!("d{i}")).unwrap();
        let m = store.materialized(&key).unwrap();
        if i % 3 == 0 {
            assert_eq!(m, None, "{key} is deleted");
        } else {
            assert_eq!(m.unwrap().parse().unwrap()["id"], format!("d{i}"));
        }
    }
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

/// How the fixture was made (`tests/fixtures/make-schema2-store.sh` replays it):
///
/// 1. `git worktree add /work/wt-old 3f2019d` — the first commit, the oldest version there is; its
///    `CURRENT_SCHEMA` is 2 (migration m0002 was part of it). No commit ever wrote schema 1: a
///    schema-1 store is one that predates the version key, and the schema-1 case below derives
///    it from this real store by removing what m0002 adds.
/// 2. `cargo build --bin concord` there (same rocksdb 0.25 as today).
/// 3. `make-schema2-store.sh <that binary> tests/fixtures/schema2-store`: starts it on a fresh
///    data directory, writes the documents of [`FIXTURE_DOCS`] through its HTTP API (PUT,
///    PATCH, a text splice, a counter, deletes, a bulk write, four collections), stops it with
///    SIGTERM (a graceful stop flushes the memtables), and drops RocksDB's info logs.
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema2-store");

/// (collection, id, body) as the old binary was told to leave them; `None` is deleted.
fn fixture_docs() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        (
            "users",
            "alice",
            Some(json!({"name": "Alice", "age": 30, "tags": ["a", "b"]})),
        ),
        ("users", "bob", Some(json!({"name": "Bob", "age": 41}))),
        ("users", "carol", None),
        ("notes", "n1", Some(json!({"text": "hello world"}))),
        (
            "notes",
            "n2",
            Some(json!({"nested": {"deep": [1, 2, {"x": true}], "pi": 3.5}})),
        ),
        ("notes", "c", Some(json!({"n": 3}))),
        ("gone", "g1", None),
        ("bulk", "b1", Some(json!({"v": 1}))),
        ("bulk", "b2", Some(json!({"v": 2}))),
    ]
}

/// Live documents per collection in the fixture.
const FIXTURE_COUNTS: [(&str, i64); 4] = [("bulk", 2), ("gone", 0), ("notes", 3), ("users", 2)];

fn copy_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(FIXTURE).expect("fixture present") {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn raw_cfs(path: &Path) -> Vec<String> {
    let mut v = rocksdb::DB::list_cf(&rocksdb::Options::default(), path).unwrap();
    v.sort();
    v
}

fn raw_version(path: &Path) -> Option<u32> {
    let names = raw_cfs(path);
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), path, &names).unwrap();
    migrate::read_version(&db).unwrap()
}

fn collections_map(store: &Store) -> Vec<(String, i64)> {
    let mut v: Vec<_> = store
        .collections()
        .unwrap()
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .collect();
    v.sort();
    v
}

fn expected_counts() -> Vec<(String, i64)> {
    FIXTURE_COUNTS
        .iter()
        .filter(|(_, n)| *n != 0)
        .map(|(c, n)| (c.to_string(), *n))
        .collect()
}

/// Every fixture document reads as the old binary left it; tombstones are tombstones.
fn check_documents(store: &Store) {
    for (collection, id, body) in fixture_docs() {
        let key = DocKey::new(collection, id).unwrap();
        let (json, deleted) = store
            .read(&key, |doc, meta| {
                (concord::doc::json::to_json(doc, None), meta.deleted)
            })
            .unwrap()
            .unwrap_or_else(|| panic!("{key} missing"));
        match body {
            Some(body) => {
                assert!(!deleted, "{key} should be live");
                assert_eq!(Value::Object(json), body, "{key}");
            }
            None => assert!(deleted, "{key} should be deleted"),
        }
    }
}

/// Migration 6's result: every live document has its JSON beside it, at its current heads, and
/// a tombstone has none.
fn check_materialized(store: &Store) {
    for (collection, id, body) in fixture_docs() {
        let key = DocKey::new(collection, id).unwrap();
        let entry = store.materialized(&key).unwrap();
        match body {
            Some(body) => {
                let m = entry.unwrap_or_else(|| panic!("{key} has no materialised JSON"));
                assert_eq!(Value::Object(m.parse().unwrap()), body, "{key}");
                assert_eq!(m.heads, store.meta(&key).unwrap().unwrap().heads, "{key}");
            }
            None => assert_eq!(entry, None, "{key} is deleted"),
        }
    }
}

/// Migration 3's result: the digest tree and bucket index hold exactly the documents' leaves, as
/// computed here from each document's heads, and the tree's levels agree with each other.
fn check_digest(store: &Store) {
    let mut root = 0u64;
    let mut by_bucket: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for (collection, id, _) in fixture_docs() {
        let key = DocKey::new(collection, id).unwrap();
        let heads = store.meta(&key).unwrap().unwrap().heads;
        assert!(!heads.is_empty(), "{key} has heads");
        root ^= digest::leaf(&key.encode(), &heads);
        by_bucket
            .entry(digest::bucket(&key.encode()))
            .or_default()
            .push(key.to_string());
        let docs = store.bucket_docs(digest::bucket(&key.encode())).unwrap();
        assert!(
            docs.iter().any(|(k, h)| *k == key && *h == heads),
            "{key} in its digest bucket with its heads"
        );
    }
    assert_ne!(root, 0);
    assert_eq!(
        store.digest_root(),
        root,
        "digest root rebuilt from metadata"
    );
    let l1: u64 = store
        .digest_children(1, 0)
        .into_iter()
        .fold(0, |a, b| a ^ b);
    assert_eq!(l1, root);
    let l3: u64 = (0..4096)
        .flat_map(|p| store.digest_children(3, p))
        .fold(0, |a, b| a ^ b);
    assert_eq!(l3, root);
    let indexed: usize = by_bucket
        .keys()
        .map(|b| store.bucket_docs(*b).unwrap().len())
        .sum();
    assert_eq!(indexed, fixture_docs().len(), "no stray bucket entries");
}

/// Migration 5's result: an index declared on migrated data builds over it and finds it.
fn check_indexes(store: &Store) {
    use concord::store::index_registry::{BuildState, Definition};
    let def = Definition {
        fields: vec!["age".into()],
        partial_filter: None,
    };
    store.define_index("users", "by_age", &def).unwrap();
    let ix = store.indexes().get("users", "by_age").unwrap();
    while store.index_build_step(&ix, 1).unwrap() != BuildState::Ready {}
    let q = concord::find::Query::parse(&concord::find::FindRequest {
        selector: Some(json!({"age": {"$gt": 35}})),
        ..Default::default()
    })
    .unwrap();
    let found = concord::find::find(store, "users", &q).unwrap();
    assert_eq!(found.stats.index.as_deref(), Some("by_age"));
    let ids: Vec<&str> = found.docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["bob"]);
    assert_eq!(found.docs[0].doc["name"], "Bob");
}

/// Migration 4's result: client sync states can be stored, read back and swept.
fn check_sync_states(store: &Store) {
    let key = DocKey::new("users", "alice").unwrap();
    assert_eq!(store.sync_state("owner", "client-1", &key).unwrap(), None);
    store
        .put_sync_state("owner", "client-1", &key, b"state", u64::MAX)
        .unwrap();
    assert_eq!(
        store
            .sync_state("owner", "client-1", &key)
            .unwrap()
            .as_deref(),
        Some(&b"state"[..])
    );
    assert_eq!(store.sweep_sync_states(u64::MAX).unwrap(), 0);
    assert_eq!(store.sweep_sync_states(0).unwrap(), 1);
    assert_eq!(store.sync_state("owner", "client-1", &key).unwrap(), None);
}

/// After migrating, the store keeps working: counts follow new writes and deletes, and the feed
/// still holds the old binary's entries.
fn check_keeps_working(store: &Store) {
    let (page, _) = store.feed_page(0, 1000, None).unwrap();
    assert_eq!(
        page.len(),
        fixture_docs().len(),
        "one feed entry per document"
    );
    put(store, "users", "dave", false);
    put(store, "notes", "n1", true);
    let mut want = expected_counts();
    for (c, n) in &mut want {
        match c.as_str() {
            "users" => *n += 1,
            "notes" => *n -= 1,
            _ => {}
        }
    }
    assert_eq!(collections_map(store), want);
}

/// The checked-in store, written by the oldest Concord binary (schema 2), opened by this build:
/// migrations 3 (digest), 4 (sync states), 5 (indexes) and 6 (materialised JSON) run on real old data; every document,
/// count and tombstone survives; the result is the current schema and stays so across a reopen.
#[test]
fn real_schema_2_store_from_the_oldest_binary_migrates() {
    let dir = copy_fixture();
    assert_eq!(raw_version(dir.path()), Some(2), "the fixture is schema 2");
    assert_eq!(
        raw_cfs(dir.path()),
        ["changes", "counts", "default", "feed", "meta", "snapshots"],
        "the fixture has schema 2's column families only"
    );
    {
        let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
        check_documents(&store);
        check_materialized(&store);
        // Migration 2's counts were kept by the old binary's merge operator, and survive.
        assert_eq!(collections_map(&store), expected_counts());
        check_digest(&store);
        check_sync_states(&store);
        store.flush().unwrap();
    }
    assert_eq!(raw_version(dir.path()), Some(migrate::CURRENT_SCHEMA));
    let mut all = cfs::ALL.map(str::to_string).to_vec();
    all.push("default".into());
    all.sort();
    assert_eq!(raw_cfs(dir.path()), all);
    // Reopened (no migration runs now), the persisted digest is the same, and writes work.
    let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
    store.clear_cache();
    check_documents(&store);
    check_digest(&store);
    check_keeps_working(&store);
    // Last: an index definition is a replicated document, so it moves the digest.
    check_indexes(&store);
}

/// Schema 1 is a store from before the version key and the `counts` column family. No
/// committed binary wrote one (see [`FIXTURE`]), so this derives it from the real fixture: drop
/// `counts` and the version key. Opening it runs migration 2 (counts rebuilt from the
/// metadata the old binary wrote), then 3, 4, 5, 6 and 7.
#[test]
fn schema_1_layout_of_the_real_store_migrates_through_every_step() {
    let dir = copy_fixture();
    {
        let names = raw_cfs(dir.path());
        let mut db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), &names).unwrap();
        db.drop_cf(cfs::COUNTS).unwrap();
        db.delete(b"schema_version").unwrap();
        assert_eq!(migrate::read_version(&db).unwrap(), None);
        db.flush().unwrap();
    }
    assert_eq!(
        raw_cfs(dir.path()),
        ["changes", "default", "feed", "meta", "snapshots"]
    );
    let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
    assert_eq!(collections_map(&store), expected_counts(), "migration 2");
    check_documents(&store);
    check_materialized(&store);
    check_digest(&store);
    check_sync_states(&store);
    check_keeps_working(&store);
    check_indexes(&store);
    drop(store);
    assert_eq!(raw_version(dir.path()), Some(migrate::CURRENT_SCHEMA));
}

/// The migrated fixture served over HTTP: documents, collection counts and client sync (whose
/// state lives in the column family migration 4 added).
#[tokio::test]
async fn migrated_real_store_serves_reads_and_client_sync() {
    let dir = copy_fixture();
    let node = common::TestNode::start(dir.path()).await;
    let http = common::client();
    for (collection, id, body) in fixture_docs() {
        let r = http
            .get(node.url(&format!("/v1/collections/{collection}/docs/{id}")))
            .send()
            .await
            .unwrap();
        match body {
            Some(body) => {
                assert_eq!(r.status(), 200, "{collection}/{id}");
                assert_eq!(r.json::<Value>().await.unwrap(), body);
            }
            None => assert_eq!(r.status(), 404, "{collection}/{id}"),
        }
    }
    let v: Value = get_json(&http, node.url("/v1/collections")).await;
    for (name, n) in FIXTURE_COUNTS.iter().filter(|(_, n)| *n != 0) {
        assert!(
            v["collections"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == *name && c["docs"] == *n),
            "{name}: {n} in {v}"
        );
    }
    // Sync a migrated document down over HTTP with a client id (its state is persisted).
    let url = node.url("/v1/collections/notes/docs/n1/sync");
    let mut doc = automerge::Automerge::new();
    let mut state = automerge::sync::State::new();
    common::http::sync_to_end(&http, &url, "migrated-client", None, &mut doc, &mut state).await;
    assert_eq!(
        concord::doc::json::to_json(&doc, None),
        *json!({"text": "hello world"}).as_object().unwrap()
    );
    node.stop().await;
    let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
    let key = DocKey::new("notes", "n1").unwrap();
    assert!(
        store
            .sync_state("anonymous", "migrated-client", &key)
            .unwrap()
            .is_some(),
        "the client's sync state was persisted"
    );
}

/// Schema 7 re-encodes index keys (arrays and objects end at a member they cut): a store
/// written at schema 6 has every index rebuilt. Here the schema-6 index is `ready` with entries
/// the new encoding would not write (all of them gone, the starkest case): after the
/// migration it builds again, and a range over a value the old keys ordered wrongly (a long
/// string followed by another member) finds its document.
#[test]
fn schema_6_indexes_are_rebuilt_with_the_new_keys() {
    use concord::store::index_registry::{BuildState, Definition};
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(300);
    let id = {
        let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
        for (doc, v) in [
            ("a", json!([format!("{long}b"), 0])),
            ("b", json!(["a", 1])),
        ] {
            let key = DocKey::new("t", doc).unwrap();
            let body = json!({ "v": v }).as_object().unwrap().clone();
            store
                .write::<_, StoreError>(&key, |d, _| {
                    concord::doc::write::apply(d, &concord::doc::write::Write::Replace(body), 1)?;
                    Ok(())
                })
                .unwrap();
        }
        let def = Definition {
            fields: vec!["v".into()],
            partial_filter: None,
        };
        store.define_index("t", "by_v", &def).unwrap();
        let ix = store.indexes().get("t", "by_v").unwrap();
        while store.index_build_step(&ix, 10).unwrap() != BuildState::Ready {}
        assert_eq!(
            store
                .index_entries(ix.id, &[], &[0xff], false, 10)
                .unwrap()
                .len(),
            2,
            "built"
        );
        // Into table files: a plain RocksDB handle (without the store's merge operators) cannot
        // replay the store's log.
        store.flush().unwrap();
        ix.id
    };
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs::ALL).unwrap();
        for name in [cfs::INDEX_ENTRIES, cfs::INDEX_REV] {
            let cf = db.cf_handle(name).unwrap();
            let keys: Vec<Box<[u8]>> = db
                .iterator_cf(cf, rocksdb::IteratorMode::Start)
                .map(|kv| kv.unwrap().0)
                .collect();
            assert!(!keys.is_empty(), "{name} held the index");
            for k in keys {
                db.delete_cf(cf, k).unwrap();
            }
        }
        migrate::write_version(&db, 6).unwrap();
    }
    let store = Store::open(dir.path(), StoreOptions::default(), Metrics::new()).unwrap();
    let ix = store.indexes().get("t", "by_v").unwrap();
    assert_eq!(ix.id, id);
    assert_eq!(
        store.indexes().state(ix.id),
        Some(BuildState::Building {
            after: None,
            done: 0
        }),
        "the migration restarts every build"
    );
    while store.index_build_step(&ix, 1).unwrap() != BuildState::Ready {}
    let q = concord::find::Query::parse(&concord::find::FindRequest {
        selector: Some(json!({"v": {"$gt": [format!("{long}a"), 5]}})),
        use_index: Some("by_v".into()),
        ..Default::default()
    })
    .unwrap();
    let found = concord::find::find(&store, "t", &q).unwrap();
    let ids: Vec<&str> = found.docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a"]);
    drop(store);
    assert_eq!(raw_version(dir.path()), Some(migrate::CURRENT_SCHEMA));
}
