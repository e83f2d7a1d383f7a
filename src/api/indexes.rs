//! `/v1/collections/{collection}/indexes`: declaring, listing, reading and dropping secondary
//! indexes. A definition replicates to every node; each node builds its own entries and reports
//! its own build state.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::http::extract::{Json, PathParams};
use crate::http::problem::ApiError;
use crate::node::Node;
use crate::store::index::Defined;
use crate::store::index_registry::{BuildState, Definition, IndexDef};

/// An index as clients see it.
#[derive(Debug, Serialize)]
pub struct IndexView {
    pub collection: String,
    pub name: String,
    pub fields: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_filter: Option<Value>,
    /// `building` or `ready`, on this node.
    pub state: &'static str,
    /// While building: documents indexed so far, of how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

#[derive(Debug, Serialize)]
pub struct Progress {
    pub documents_indexed: u64,
    pub collection_documents: i64,
}

fn view(node: &Node, def: &IndexDef) -> IndexView {
    let state = node.store.indexes().state(def.id);
    let (state, progress) = match state {
        Some(BuildState::Ready) => ("ready", None),
        Some(BuildState::Building { done, .. }) => (
            "building",
            Some(Progress {
                documents_indexed: done,
                collection_documents: node.store.collection_count(&def.collection).unwrap_or(0),
            }),
        ),
        None => ("building", None),
    };
    IndexView {
        collection: def.collection.clone(),
        name: def.name.clone(),
        fields: def.definition.fields.clone(),
        partial_filter: def.definition.partial_filter.clone(),
        state,
        progress,
    }
}

fn not_found(collection: &str, name: &str) -> ApiError {
    ApiError::NotFound(format!("collection `{collection}` has no index `{name}`"))
}

/// `PUT .../indexes/{name}`: 201 when defined now, 200 when the same definition exists, 409 when
/// the name holds another definition.
pub async fn put(
    State(node): State<Arc<Node>>,
    PathParams((collection, name)): PathParams<(String, String)>,
    Json(definition): Json<Definition>,
) -> Result<Response, ApiError> {
    crate::store::keys::validate_collection(&collection)?;
    if crate::store::keys::validate_collection(&name).is_err() {
        return Err(ApiError::BadRequest(format!(
            "invalid index name `{}`: an index name is {}",
            name.chars().take(80).collect::<String>(),
            crate::store::keys::COLLECTION_RULE
        )));
    }
    definition
        .parse()
        .map_err(|e| ApiError::InvalidBody(e.to_string()))?;
    let n = node.clone();
    let (c, nm) = (collection.clone(), name.clone());
    let defined = node
        .blocking::<_, ApiError>(move || Ok(n.store.define_index(&c, &nm, &definition)?))
        .await?;
    let status = match defined {
        Defined::Created => StatusCode::CREATED,
        Defined::Unchanged => StatusCode::OK,
        Defined::Conflict(existing) => {
            return Err(ApiError::Conflict(format!(
                "index `{name}` exists with another definition ({}): drop it first, or choose another name",
                existing.canonical()
            )))
        }
        Defined::TooMany => {
            return Err(ApiError::Conflict(format!(
                "collection `{collection}` has {} indexes, the limit",
                crate::store::index_registry::MAX_INDEXES_PER_COLLECTION
            )))
        }
    };
    let def = node
        .store
        .indexes()
        .get(&collection, &name)
        .ok_or_else(|| not_found(&collection, &name))?;
    Ok((status, axum::Json(view(&node, &def))).into_response())
}

/// `GET .../indexes`
pub async fn list(
    State(node): State<Arc<Node>>,
    PathParams(collection): PathParams<String>,
) -> Result<Response, ApiError> {
    crate::store::keys::validate_collection(&collection)?;
    let indexes: Vec<IndexView> = node
        .store
        .indexes()
        .of(&collection)
        .iter()
        .map(|d| view(&node, d))
        .collect();
    Ok(axum::Json(serde_json::json!({ "indexes": indexes })).into_response())
}

/// `GET .../indexes/{name}`
pub async fn get(
    State(node): State<Arc<Node>>,
    PathParams((collection, name)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let def = node
        .store
        .indexes()
        .get(&collection, &name)
        .ok_or_else(|| not_found(&collection, &name))?;
    Ok(axum::Json(view(&node, &def)).into_response())
}

/// `DELETE .../indexes/{name}`: 204; its entries go with it.
pub async fn delete(
    State(node): State<Arc<Node>>,
    PathParams((collection, name)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let n = node.clone();
    let (c, nm) = (collection.clone(), name.clone());
    let dropped = node
        .blocking::<_, ApiError>(move || Ok(n.store.drop_index(&c, &nm)?))
        .await?;
    if !dropped {
        return Err(not_found(&collection, &name));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
