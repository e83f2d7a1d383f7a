//! The storage schema version and the runner for `migrations/`.
//!
//! The version lives under one key in the default column family. A store from a newer Concord is
//! refused (it may hold data this build would misread); an older one is brought forward one
//! numbered migration at a time, the version advancing after each.

use super::error::StoreError;

#[path = "../../migrations/mod.rs"]
mod steps;

/// The schema this build writes.
pub const CURRENT_SCHEMA: u32 = 7;
const SCHEMA_KEY: &[u8] = b"schema_version";

pub(super) struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub run: fn(&rocksdb::DB) -> Result<(), StoreError>,
}

pub fn read_version(db: &rocksdb::DB) -> Result<Option<u32>, StoreError> {
    match db.get(SCHEMA_KEY)? {
        None => Ok(None),
        Some(v) => {
            let arr: [u8; 4] = v
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt("schema version key".into()))?;
            Ok(Some(u32::from_be_bytes(arr)))
        }
    }
}

pub fn write_version(db: &rocksdb::DB, version: u32) -> Result<(), StoreError> {
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.put_opt(SCHEMA_KEY, version.to_be_bytes(), &opts)?;
    Ok(())
}

/// Brings the store at `db` to [`CURRENT_SCHEMA`]. `fresh` says the store was just created.
pub fn run(db: &rocksdb::DB, fresh: bool) -> Result<(), StoreError> {
    let found = match read_version(db)? {
        Some(v) => v,
        None if fresh => {
            write_version(db, CURRENT_SCHEMA)?;
            return Ok(());
        }
        // A store that predates the version key is schema 1.
        None => 1,
    };
    if found > CURRENT_SCHEMA {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: CURRENT_SCHEMA,
        });
    }
    for m in steps::MIGRATIONS.iter().filter(|m| m.version > found) {
        tracing::info!(
            version = m.version,
            name = m.name,
            "running storage migration"
        );
        (m.run)(db).map_err(|e| StoreError::Migration {
            version: m.version,
            name: m.name,
            reason: e.to_string(),
        })?;
        write_version(db, m.version)?;
    }
    Ok(())
}
