//! `POST /v1/admin/backups` (take a backup now) and `GET /v1/admin/backups` (list them): the
//! node's side of [`crate::backup`]. Both need the `admin` access level (the `/v1/admin/`
//! prefix). Restoring is offline (`concord backup restore`): a running node never replaces its
//! own data.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::backup::{create_now, BackupInfo};
use crate::http::problem::ApiError;
use crate::node::Node;

#[derive(Debug, Serialize)]
pub struct BackupList {
    pub backup_dir: String,
    pub keep_last: usize,
    pub backups: Vec<BackupInfo>,
}

/// `GET /v1/admin/backups`, oldest first.
pub async fn list(State(node): State<Arc<Node>>) -> Result<axum::Json<BackupList>, ApiError> {
    let backups = node.backups.clone();
    let list = node.blocking(move || backups.list()).await?;
    Ok(axum::Json(BackupList {
        backup_dir: node.backups.dir()?.display().to_string(),
        keep_last: node.config.backup_keep_last,
        backups: list,
    }))
}

#[derive(Debug, Serialize)]
struct Running {
    state: &'static str,
    detail: String,
}

/// `POST /v1/admin/backups`: 201 with the backup once taken. One that outlasts the request
/// timeout goes on: the answer is then 202, and the backup appears in the list when done.
pub async fn create(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    node.backups.dir()?;
    let (backups, store, metrics) = (
        node.backups.clone(),
        node.store.clone(),
        node.metrics.clone(),
    );
    // Its own task: a backup that outlasts this request goes on to the end (and is counted).
    let task = tokio::spawn(async move {
        let r = create_now(backups, store).await.map_err(ApiError::from);
        match &r {
            Ok(_) => metrics.backup_done(true),
            Err(ApiError::Conflict(_)) => {}
            Err(_) => metrics.backup_done(false),
        }
        r
    });
    // Leave the request time to answer before the node's own timeout does.
    let wait = Duration::from_secs(node.config.request_timeout_secs.saturating_sub(1).max(1));
    match tokio::time::timeout(wait, task).await {
        Ok(joined) => {
            let created = joined.map_err(|e| ApiError::Internal(e.to_string()))??;
            Ok((StatusCode::CREATED, axum::Json(created)).into_response())
        }
        Err(_) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(Running {
                state: "running",
                detail:
                    "the backup is still being taken; it appears in GET /v1/admin/backups when done"
                        .into(),
            }),
        )
            .into_response()),
    }
}
