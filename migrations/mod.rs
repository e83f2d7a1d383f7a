//! Numbered storage-schema migrations, run in order at start-up by `store::migrate`.
//!
//! Each migration brings a store from schema `version - 1` to `version`. It must be safe to run
//! again after a crash part-way through (the version key is only advanced after it succeeds), and
//! it is tested against a store written at the previous version.
//!
//! | version | what changed |
//! | --- | --- |
//! | 1 | column families `meta`, `snapshots`, `changes`, `feed` |
//! | 2 | column family `counts`: live documents per collection, kept by a merge operator |
//! | 3 | column families `digest` (anti-entropy hash tree, XOR merge operator) and `buckets` |
//! | 4 | column family `sync_states`: persisted client sync states |
//! | 5 | column families `index_entries`, `index_rev`, `index_state`: secondary indexes |
//! | 6 | column family `doc_json`: each live document's JSON, kept in its commit |
//! | 7 | index keys of arrays and objects end at a member they cut: every index rebuilds |

mod m0002_collection_counts;
mod m0003_digest;
mod m0004_sync_states;
mod m0005_indexes;
mod m0006_materialized_json;
mod m0007_index_keys_cut_at_members;

use super::Migration;

pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 2,
        name: "collection_counts",
        run: m0002_collection_counts::run,
    },
    Migration {
        version: 3,
        name: "digest",
        run: m0003_digest::run,
    },
    Migration {
        version: 4,
        name: "sync_states",
        run: m0004_sync_states::run,
    },
    Migration {
        version: 5,
        name: "indexes",
        run: m0005_indexes::run,
    },
    Migration {
        version: 6,
        name: "materialized_json",
        run: m0006_materialized_json::run,
    },
    Migration {
        version: 7,
        name: "index_keys_cut_at_members",
        run: m0007_index_keys_cut_at_members::run,
    },
];
