//! Physical backups of a node's store, with RocksDB's own `BackupEngine`: online (writes go on
//! while a backup is taken), consistent (a backup is the store as of one moment: RocksDB flushes
//! and copies the live files under one version, with the write-ahead log where column families
//! were flushed apart), incremental (table files are shared between backups, so each backup
//! copies only files the last one did not have) and checksummed (every file's checksum is
//! recorded and checked again on restore).
//!
//! This module owns the backup directory: creating, listing and pruning backups on a running
//! node ([`Backups`]), and, offline, restoring one into an empty data directory ([`restore`])
//! and verifying one without touching any node ([`verify`]). A restore always checks the
//! restored store from end to end ([`Store::check_integrity`]) before handing it over, and
//! makes it a **new replica** (a new node id, and so a new Automerge actor id): two live nodes
//! committing under one actor id with the same sequence numbers would corrupt every replica, so
//! a restored node can never be mistaken for its original, even when both run.
//!
//! Beside RocksDB's files, `concord/<id>.json` records what the node said about each backup
//! when it began (its node id, live documents); a backup missing it (a crash between the two)
//! is still complete and restorable.

pub mod schedule;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::metrics::Metrics;
use crate::store::integrity::IntegrityReport;
use crate::store::{Store, StoreError, StoreOptions};

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("no backup directory is configured: set `backup_dir` (or --backup-dir)")]
    NotConfigured,
    #[error("a backup is already being taken on this node")]
    Busy,
    #[error("{0} holds no backup")]
    Empty(PathBuf),
    #[error("backup {id} does not exist in {dir} (there: {known:?})")]
    NoSuchBackup {
        id: u32,
        dir: PathBuf,
        known: Vec<u32>,
    },
    #[error("the target {0} is not empty: a restore only writes into an empty or new directory")]
    TargetNotEmpty(PathBuf),
    #[error("backup engine: {0}")]
    Engine(String),
    #[error("the restored data failed its integrity check ({count} problem(s)), first: {first}")]
    Integrity { count: u64, first: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Worker(#[from] crate::blocking::WorkerFailed),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn engine_err(e: rocksdb::Error) -> BackupError {
    BackupError::Engine(e.into_string())
}

/// One backup, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupInfo {
    /// Backup ids only grow.
    pub id: u32,
    /// When it was taken (RFC 3339, UTC).
    pub created: String,
    /// Bytes of all the files it consists of (files shared with other backups included).
    pub size_bytes: u64,
    pub files: u32,
    /// Live documents on the node when the backup began (writes racing it may add or remove
    /// some); `None` when that was not recorded.
    pub documents: Option<i64>,
    /// The node it was taken from.
    pub node_id: Option<String>,
}

/// What creating a backup did.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    #[serde(flatten)]
    pub backup: BackupInfo,
    /// Bytes this backup added to the backup directory (the incremental part).
    pub new_bytes: u64,
    pub duration_ms: u64,
    /// Backups removed by retention (`backup_keep_last`).
    pub pruned: Vec<u32>,
}

/// What the node records beside each backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sidecar {
    node_id: String,
    documents: i64,
}

fn sidecar_path(dir: &Path, id: u32) -> PathBuf {
    dir.join("concord").join(format!("{id}.json"))
}

fn rfc3339(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn open_engine(dir: &Path) -> Result<BackupEngine, BackupError> {
    let opts = BackupEngineOptions::new(dir).map_err(engine_err)?;
    let env = rocksdb::Env::new().map_err(engine_err)?;
    BackupEngine::open(&opts, &env).map_err(engine_err)
}

/// The backups in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<BackupInfo>, BackupError> {
    if !dir.join("meta").exists() {
        return Ok(Vec::new());
    }
    let engine = open_engine(dir)?;
    let mut out: Vec<BackupInfo> = engine
        .get_backup_info()
        .into_iter()
        .map(|i| {
            let side: Option<Sidecar> = std::fs::read(sidecar_path(dir, i.backup_id))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            BackupInfo {
                id: i.backup_id,
                created: rfc3339(i.timestamp),
                size_bytes: i.size,
                files: i.num_files,
                documents: side.as_ref().map(|s| s.documents),
                node_id: side.map(|s| s.node_id),
            }
        })
        .collect();
    out.sort_by_key(|b| b.id);
    Ok(out)
}

/// Bytes under `dir` (0 when it does not exist).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A running node's backup directory.
pub struct Backups {
    dir: Option<PathBuf>,
    keep_last: usize,
    /// One backup at a time (the engine's directory has one writer).
    running: parking_lot::Mutex<()>,
}

impl Backups {
    /// `dir` `None`: backups are not configured (every call says so). `keep_last` 0 keeps all.
    pub fn new(dir: Option<PathBuf>, keep_last: usize) -> Backups {
        Backups {
            dir,
            keep_last,
            running: parking_lot::Mutex::new(()),
        }
    }

    pub fn dir(&self) -> Result<&Path, BackupError> {
        self.dir.as_deref().ok_or(BackupError::NotConfigured)
    }

    pub fn list(&self) -> Result<Vec<BackupInfo>, BackupError> {
        list(self.dir()?)
    }

    /// Takes a backup of `store` now (blocking: flushes memtables and copies new files), then
    /// applies retention. Refused with [`BackupError::Busy`] while another one runs.
    pub fn create(&self, store: &Store) -> Result<Created, BackupError> {
        let dir = self.dir()?;
        let _one = self.running.try_lock().ok_or(BackupError::Busy)?;
        let started = Instant::now();
        std::fs::create_dir_all(dir.join("concord")).map_err(io(dir))?;
        let before = dir_bytes(dir);
        let sidecar = Sidecar {
            node_id: store.node_id().to_string(),
            documents: store.collections()?.iter().map(|(_, n)| n).sum(),
        };
        let mut engine = open_engine(dir)?;
        engine
            .create_new_backup_flush(store.rocks(), true)
            .map_err(engine_err)?;
        let infos = engine.get_backup_info();
        let Some(id) = infos.iter().map(|i| i.backup_id).max() else {
            return Err(BackupError::Empty(dir.to_path_buf()));
        };
        let side = sidecar_path(dir, id);
        let bytes = serde_json::to_vec(&sidecar).unwrap_or_default();
        std::fs::write(&side, bytes).map_err(io(&side))?;
        let mut pruned = Vec::new();
        if self.keep_last > 0 && infos.len() > self.keep_last {
            engine
                .purge_old_backups(self.keep_last)
                .map_err(engine_err)?;
            let kept: Vec<u32> = engine
                .get_backup_info()
                .iter()
                .map(|i| i.backup_id)
                .collect();
            for i in infos.iter().map(|i| i.backup_id) {
                if !kept.contains(&i) {
                    pruned.push(i);
                    let _ = std::fs::remove_file(sidecar_path(dir, i));
                }
            }
        }
        let after = dir_bytes(dir);
        let backup = list(dir)?
            .into_iter()
            .find(|b| b.id == id)
            .ok_or_else(|| BackupError::Empty(dir.to_path_buf()))?;
        tracing::info!(id, size = backup.size_bytes, "backup taken");
        Ok(Created {
            backup,
            new_bytes: after.saturating_sub(before),
            duration_ms: started.elapsed().as_millis() as u64,
            pruned,
        })
    }
}

/// What a restore produced.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// The backup restored.
    pub backup: u32,
    /// The restored store's new node id.
    pub node_id: String,
    pub integrity: IntegrityReport,
}

fn is_empty_dir(p: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(p) {
        Ok(mut d) => Ok(d.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io(p)(e)),
    }
}

/// The backup to use: `id`, or the latest.
fn pick(dir: &Path, engine: &BackupEngine, id: Option<u32>) -> Result<u32, BackupError> {
    let known: Vec<u32> = engine
        .get_backup_info()
        .iter()
        .map(|i| i.backup_id)
        .collect();
    match id {
        Some(i) if known.contains(&i) => Ok(i),
        Some(i) => Err(BackupError::NoSuchBackup {
            id: i,
            dir: dir.to_path_buf(),
            known,
        }),
        None => known
            .iter()
            .max()
            .copied()
            .ok_or_else(|| BackupError::Empty(dir.to_path_buf())),
    }
}

/// Restores backup `id` (the latest when `None`) of `from` into `target` and checks it; the
/// store there is a new replica. Offline: no node may use `target`. Refuses a non-empty
/// `target`; on any failure nothing is left in it. `progress` gets documents checked so far.
pub fn restore(
    from: &Path,
    id: Option<u32>,
    target: &Path,
    progress: impl FnMut(u64),
) -> Result<Restored, BackupError> {
    if !is_empty_dir(target)? {
        return Err(BackupError::TargetNotEmpty(target.to_path_buf()));
    }
    if !from.join("meta").exists() {
        return Err(BackupError::Empty(from.to_path_buf()));
    }
    let result = restore_checked(from, id, target, progress);
    if result.is_err() {
        // Only what the restore wrote: the target was empty before.
        if let Ok(entries) = std::fs::read_dir(target) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
    result
}

fn restore_checked(
    from: &Path,
    id: Option<u32>,
    target: &Path,
    progress: impl FnMut(u64),
) -> Result<Restored, BackupError> {
    let mut engine = open_engine(from)?;
    let id = pick(from, &engine, id)?;
    std::fs::create_dir_all(target).map_err(io(target))?;
    // RocksDB recomputes every file's checksum as it copies it and fails on a mismatch.
    engine
        .restore_from_backup(target, target, &RestoreOptions::default(), id)
        .map_err(engine_err)?;
    drop(engine);
    let store = Store::open(target, StoreOptions::default(), Metrics::new())?;
    let integrity = store.check_integrity(progress)?;
    if !integrity.ok() {
        return Err(BackupError::Integrity {
            count: integrity.problem_count,
            first: integrity.problems.first().cloned().unwrap_or_default(),
        });
    }
    let node_id = store.become_new_replica()?;
    Ok(Restored {
        backup: id,
        node_id: node_id.to_string(),
        integrity,
    })
}

/// Checks backup `id` (the latest when `None`) of `from` without restoring it anywhere a node
/// would use: it is restored into a scratch directory under `scratch` (default: inside `from`,
/// which needs as much free space as the backup's size), checked end to end, and removed.
pub fn verify(
    from: &Path,
    id: Option<u32>,
    scratch: Option<&Path>,
    progress: impl FnMut(u64),
) -> Result<Restored, BackupError> {
    let base = scratch.unwrap_or(from);
    let dir = base.join(format!(".concord-verify-{}", uuid::Uuid::new_v4().simple()));
    let result = restore(from, id, &dir, progress);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Shared by the HTTP handler and the schedule.
pub async fn create_now(backups: Arc<Backups>, store: Arc<Store>) -> Result<Created, BackupError> {
    crate::blocking::run(move || backups.create(&store)).await
}
