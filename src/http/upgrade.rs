//! The `/ws` and `/yjs/{document_id}` upgrade endpoints: authenticate the
//! request (a refused token never reaches a socket), count it against the
//! connection caps, then hand the socket to its transport handler.

use poem::{Request, Response, handler, http::StatusCode, web::Data};

use crate::{http::error::json_error, model::ids::DocumentId, state::AppState, transport::connection::Peer};

#[derive(serde::Deserialize)]
struct UpgradeQuery {
    token: Option<String>,
    batch: Option<String>,
    resume: Option<String>,
}

/// `?batch=1`: the client reads newline-delimited JSON (several messages in
/// one frame) and may send it.
fn wants_batch(req: &Request) -> bool {
    req.params::<UpgradeQuery>()
        .is_ok_and(|query| matches!(query.batch.as_deref(), Some("1" | "true")))
}

/// `?resume=`: a resume token from an earlier `connected`. Anything longer
/// than a token can be is ignored (a new session, never an error).
fn resume_token(req: &Request) -> Option<String> {
    const MAX_RESUME_TOKEN: usize = 128;
    req.params::<UpgradeQuery>()
        .ok()?
        .resume
        .filter(|token| !token.is_empty() && token.len() <= MAX_RESUME_TOKEN)
}

/// The token from `?token=` or `Authorization: Bearer`.
pub(crate) fn request_token(req: &Request) -> Option<String> {
    if let Ok(query) = req.params::<UpgradeQuery>()
        && let Some(token) = query.token.filter(|t| !t.is_empty())
    {
        return Some(token);
    }
    let header = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The client address: the socket peer, or the first `X-Forwarded-For` hop behind a trusted proxy.
pub fn client_ip(req: &Request, trust_proxy: bool) -> Option<String> {
    if trust_proxy {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .and_then(|v| v.parse::<std::net::IpAddr>().ok());
        if let Some(ip) = forwarded {
            return Some(ip.to_string());
        }
    }
    req.remote_addr()
        .as_socket_addr()
        .map(|addr| addr.ip().to_string())
}

fn user_agent(req: &Request) -> Option<String> {
    let raw = req.headers().get(poem::http::header::USER_AGENT)?;
    let text = String::from_utf8_lossy(raw.as_bytes());
    Some(crate::model::device::bound_user_agent(&text).to_owned())
}

/// Authenticate before upgrading; a refused token never reaches the socket.
pub async fn authenticate_upgrade(req: &Request, state: &AppState) -> Result<Peer, crate::auth::AuthError> {
    let token = request_token(req).ok_or(crate::auth::AuthError::Missing)?;
    let identity = state.verifier.verify(&token).await?;
    Ok(Peer {
        identity,
        user_agent: user_agent(req),
        ip_address: client_ip(req, state.config.trust_proxy),
        batch: wants_batch(req),
        resume: resume_token(req),
    })
}

/// A refused credential: 401, or 503 when it could not be checked.
fn refused(error: &crate::auth::AuthError) -> Response {
    match error {
        crate::auth::AuthError::Unavailable => {
            json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", error.to_string())
        }
        _ => json_error(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string()),
    }
}

/// Count an upgrade that was answered with anything but 101
/// (`tandem_upgrades_refused_total`, for the connection success rate).
fn counted(protocol: &'static str, response: Response) -> Response {
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        metrics::counter!(
            "tandem_upgrades_refused_total",
            "protocol" => protocol,
            "status" => status.as_u16().to_string()
        )
        .increment(1);
    }
    response
}

#[handler]
pub(crate) async fn ws_upgrade(req: &Request, Data(state): Data<&AppState>) -> Response {
    counted("json", ws_answer(req, state).await)
}

async fn ws_answer(req: &Request, state: &AppState) -> Response {
    // Authenticate first, so a bad token is a 401 whatever else is wrong.
    let peer = match authenticate_upgrade(req, state).await {
        Ok(peer) => peer,
        Err(error) => return refused(&error),
    };
    let (session_state, session_peer) = (state.clone(), peer.clone());
    upgrade_and_serve(req, state, &peer, move |socket| {
        crate::transport::json::run(socket, session_state, session_peer)
    })
}

/// Upgrade an authenticated request (400 if it is not an upgrade), take a
/// slot under the per-IP and per-user caps (429 over them), and serve the
/// socket with `serve`, holding the slot for the session's life.
fn upgrade_and_serve<Fut>(
    req: &Request,
    state: &AppState,
    peer: &Peer,
    serve: impl FnOnce(crate::transport::ws::Socket) -> Fut + Send + 'static,
) -> Response
where
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let upgrade = match crate::transport::ws::Upgrade::from_request(req) {
        Ok(upgrade) => upgrade,
        Err(error) => return json_error(StatusCode::BAD_REQUEST, "bad_request", error.to_string()),
    };
    let permit = match acquire_permit(state, peer) {
        Ok(permit) => permit,
        Err(error) => {
            return json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                error.to_string(),
            );
        }
    };
    upgrade.respond(
        state.websocket_config(),
        &state.tracker,
        move |socket| async move {
            // Held for the session's life: its end frees the slot.
            let _permit = permit;
            // Boxed: a future awaited in an async block is laid out in that
            // block's state beside what the block already holds, so each
            // layer of wrapping held the session's future again (measured in
            // release: 12.9 KB per /ws task before, now a 2.1 KB task plus
            // the 4.8 KB session).
            Box::pin(serve(socket)).await
        },
    )
}

/// Count the connection against the per-IP and per-user caps (a refusal is a 429).
fn acquire_permit(
    state: &AppState,
    peer: &Peer,
) -> Result<crate::limits::ConnectionPermit, crate::limits::CapError> {
    let acquired = state
        .caps
        .acquire(peer.ip_address.as_deref(), &peer.identity.user_id);
    // A user at the cap whose socket dropped must be able to resume: the
    // parked session holds a slot it frees on the handover.
    if acquired.is_err()
        && let Some(token) = &peer.resume
        && state.hub.parking.holds(token, &peer.identity.user_id)
    {
        return Ok(state
            .caps
            .acquire_for_resume(peer.ip_address.as_deref(), &peer.identity.user_id));
    }
    acquired.inspect_err(|error| {
        if let Some(suppressed) = state.caps.log.ready() {
            tracing::warn!(
                cap = error.kind(),
                ip_address = peer.ip_address.as_deref(),
                user_id = %peer.identity.user_id,
                suppressed,
                "connection refused: over a cap"
            );
        }
    })
}

/// `/yjs/{document_id}`: the y-websocket binary protocol on the same rooms.
#[handler]
pub(crate) async fn yjs_upgrade(
    req: &Request,
    poem::web::Path(document_id): poem::web::Path<String>,
    Data(state): Data<&AppState>,
) -> Response {
    counted("yjs", yjs_answer(req, document_id, state).await)
}

async fn yjs_answer(req: &Request, document_id: String, state: &AppState) -> Response {
    let peer = match authenticate_upgrade(req, state).await {
        Ok(peer) => peer,
        Err(error) => return refused(&error),
    };
    let document_id = match DocumentId::parse(&document_id) {
        Ok(id) => id,
        Err(error) => return json_error(StatusCode::BAD_REQUEST, "invalid_document_id", error.0),
    };
    if !peer.identity.may_access(&document_id) {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may not open this document",
        );
    }
    if state.verifier.deny_list().denies_document(
        &peer.identity.user_id,
        &peer.identity.credential(),
        document_id.as_str(),
        jsonwebtoken::get_current_timestamp(),
    ) {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "access to this document was revoked for this token",
        );
    }
    let (session_state, session_peer) = (state.clone(), peer.clone());
    upgrade_and_serve(req, state, &peer, move |socket| {
        crate::transport::yjs::run(socket, session_state, session_peer, document_id)
    })
}
