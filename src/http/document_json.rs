//! Documents for clients that do not run Yjs: `GET .../json` renders a
//! document as JSON (as npm `yjs` does), `POST .../ops` applies JSON writes
//! as one Yjs transaction the server builds, durable before the answer and
//! relayed to every member like any update.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use poem_openapi::{
    OpenApi,
    param::{Path, Query},
    payload::Json,
};

use crate::{
    crdt::{
        json::{self, RootKind},
        ops,
    },
    http::{
        access::{
            authorize, authorize_write, committed, doc_error, read_document, state_vector, with_document,
        },
        error::ApiError,
        views::{BearerToken, DocumentJsonResponse, OpsRequest, OpsResponse},
    },
    rooms::documents::{Durable, EditError, Origin},
    state::AppState,
};

pub struct DocumentJsonApi {
    pub state: AppState,
}

/// `name:kind,name:kind` (kinds: map, array, text, xml).
fn parse_types(raw: Option<&str>) -> Result<HashMap<String, RootKind>, ApiError> {
    let mut kinds = HashMap::new();
    for entry in raw.unwrap_or_default().split(',').filter(|e| !e.is_empty()) {
        let parsed = entry
            .rsplit_once(':')
            .and_then(|(name, kind)| Some((name, RootKind::parse(kind)?)));
        let Some((name, kind)) = parsed else {
            return Err(ApiError::bad_request(
                "invalid_types",
                format!("types must be name:kind pairs with kind map, array, text or xml; got {entry:?}"),
            ));
        };
        kinds.insert(name.to_owned(), kind);
    }
    Ok(kinds)
}

#[OpenApi]
impl DocumentJsonApi {
    /// The document as JSON: each root as a Yjs client sees it
    /// (`getMap(name).toJSON()`, arrays, text strings, XML strings). A
    /// root's kind is told from its content; `types` overrides it.
    #[oai(path = "/api/v1/documents/:document_id/json", method = "get")]
    async fn get_json(
        &self,
        auth: BearerToken,
        document_id: Path<String>,
        /// Root kinds, `name:kind,...` with kind map, array, text or xml.
        types: Query<Option<String>>,
        /// Only this root.
        root: Query<Option<String>>,
    ) -> Result<Json<DocumentJsonResponse>, ApiError> {
        let (_, document_id) = authorize(&self.state, &auth, &document_id).await?;
        let kinds = parse_types(types.0.as_deref())?;
        let state = read_document(&self.state, &document_id, async |room| {
            self.state
                .docs
                .whole_state(room)
                .map(|(raw, _)| raw)
                .map_err(doc_error)
        })
        .await?;
        // Rendered from a copy, off the runtime: the room is never held for it.
        let only = root.0.clone();
        let rendered = tokio::task::spawn_blocking(move || {
            let doc = ops::scratch(&state, 1)?;
            let content = crate::crdt::sync::contained(|| json::render(&doc, &kinds, only.as_deref()))?;
            Some((content, crate::crdt::sync::state_vector(&doc)))
        })
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("the document's state did not render"))?;
        let (content, state_vector) = rendered;
        let Some(content) = content else {
            return Err(ApiError::not_found(format!(
                "the document has no root named {:?}",
                root.0.unwrap_or_default()
            )));
        };
        Ok(Json(DocumentJsonResponse {
            document_id: document_id.to_string(),
            state_vector: BASE64.encode(state_vector),
            content: content.into_iter().collect(),
        }))
    }

    /// Apply JSON writes as ONE Yjs transaction: all or nothing (a bad op
    /// answers 400 `invalid_op` with its `index`, and the document is
    /// unchanged), durable before the answer, relayed to every member.
    /// Viewers get 403.
    #[oai(path = "/api/v1/documents/:document_id/ops", method = "post")]
    async fn post_ops(
        &self,
        auth: BearerToken,
        document_id: Path<String>,
        body: Json<OpsRequest>,
    ) -> Result<Json<OpsResponse>, ApiError> {
        let (identity, document_id) =
            authorize_write(&self.state, &auth, &document_id, "document ops").await?;
        let parsed = ops::parse(&body.ops).map_err(|e| ApiError::invalid_op(e.index, e.message))?;
        let origin = Origin {
            connection_id: None,
            user_id: identity.user_id.clone(),
        };
        let max_bytes = self.state.config.max_update_bytes;
        let state_vector = with_document(&self.state, &document_id, async |room| {
            let (done, committed_rx) = tokio::sync::oneshot::channel();
            self.state
                .docs
                .edit(
                    room,
                    &origin,
                    move |doc| ops::apply(doc, &parsed, max_bytes),
                    Durable::Notify(done),
                )
                .await
                .map_err(|error| match error {
                    EditError::Build(e) => ApiError::invalid_op(e.index, e.message),
                    EditError::Document(e) => doc_error(e),
                })?;
            let state_vector = state_vector(room);
            committed(committed_rx).await?;
            Ok(state_vector)
        })
        .await?;
        Ok(Json(OpsResponse {
            document_id: document_id.to_string(),
            state_vector: BASE64.encode(state_vector),
            id: body.0.id,
        }))
    }
}
