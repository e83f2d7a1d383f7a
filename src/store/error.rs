//! Errors of the storage domain.

use thiserror::Error;

use crate::doc::DocError;

/// What a collection name may be, for error messages and the API docs.
pub const COLLECTION_RULE: &str =
    "1-64 characters: ASCII letters, digits, `_` and `-`, starting with a letter or digit";
/// What a document id may be.
pub const ID_RULE: &str =
    "1-256 characters: ASCII letters, digits, `_`, `-`, `.`, `:` and `~`, and not `.` or `..`";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("invalid collection name `{0}`: a collection name is {COLLECTION_RULE}")]
    InvalidCollection(String),
    #[error("invalid document id `{0}`: a document id is {ID_RULE}")]
    InvalidId(String),
    #[error("rocksdb: {0}")]
    Db(rocksdb::Error),
    #[error(
        "the node's disk is full: writes are refused until space is freed (reads still work): {0}"
    )]
    NoSpace(rocksdb::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot encode record: {0}")]
    Encoding(String),
    #[error(
        "the data directory was written by a newer Concord (storage schema {found}); this build \
         supports schema {supported} and older: upgrade Concord or point it at another directory"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("storage migration {version} ({name}) failed: {reason}")]
    Migration {
        version: u32,
        name: &'static str,
        reason: String,
    },
    #[error("the write would make the document larger than the limit of {limit} bytes")]
    DocumentTooLarge { limit: u64 },
    #[error(transparent)]
    Doc(#[from] DocError),
}

impl From<rocksdb::Error> for StoreError {
    /// A full disk is the one storage failure an operator fixes without touching the node (and
    /// RocksDB resumes by itself once space returns), so it gets its own variant and answer.
    fn from(e: rocksdb::Error) -> Self {
        let text = e.as_ref();
        if text.contains("No space left on device") || text.contains("NoSpace") {
            StoreError::NoSpace(e)
        } else {
            StoreError::Db(e)
        }
    }
}

impl StoreError {
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::NoSpace(_))
    }
}
