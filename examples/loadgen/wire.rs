//! The protocols the load generator speaks, behind one [`Client`].
//!
//! - `tandem-json`: tandem's JSON protocol on `/ws` (join_document,
//!   cursor_move, sync_step1/2, sync_update with ids and acks).
//! - `yws`: the y-websocket binary protocol (y-protocols sync + awareness),
//!   framed with yrs's encoders. The same code talks to tandem's `/yjs/{doc}`,
//!   the y-websocket reference server and y-sweet, so those comparisons are exact.
//! - `hocuspocus`: the same messages, each prefixed with the document name
//!   as a varstring, after a token message (Hocuspocus 3).
//! - `floor`: raw text frames to the floor relay, shaped like tandem's
//!   `cursor_move` broadcast so the bytes on the wire are comparable.
//!
//! Sequence numbers ride in the messages themselves: in a JSON cursor as
//! `line * 10^7 + column`, in an awareness state as a `"seq"` field. Receivers
//! only extract them when they are sampling latency; everyone else just
//! classifies and counts the frame.

use std::{sync::Arc, time::Duration, time::Instant};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, protocol::WebSocketConfig},
};
use yrs::encoding::write::Write;

/// y-protocols message types (the Hocuspocus ones beyond 3 are its own).
pub(crate) const MSG_SYNC: u64 = 0;
pub(crate) const MSG_AWARENESS: u64 = 1;
pub(crate) const MSG_AUTH: u64 = 2;
pub(crate) const MSG_SYNC_REPLY: u64 = 4;
pub(crate) const MSG_SYNC_STATUS: u64 = 8;
pub(crate) const SYNC_STEP1: u64 = 0;
pub(crate) const SYNC_STEP2: u64 = 1;
pub(crate) const SYNC_UPDATE: u64 = 2;
pub(crate) const AUTH_TOKEN: u64 = 0;
pub(crate) const AUTH_PERMISSION_DENIED: u64 = 1;
pub(crate) const AUTH_AUTHENTICATED: u64 = 2;

/// A v1 update with nothing in it, and an empty state vector.
pub const EMPTY_UPDATE: &[u8] = &[0, 0];
pub const EMPTY_STATE_VECTOR: &[u8] = &[0];

/// JSON cursors carry `seq` as `line * SEQ_BASE + column`; both stay within
/// tandem's coordinate limit (10^7) for any sequence number below 10^14.
pub(crate) const SEQ_BASE: u64 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    TandemJson,
    Yws,
    Hocuspocus,
    Floor,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::TandemJson => "tandem-json",
            Protocol::Yws => "yws",
            Protocol::Hocuspocus => "hocuspocus",
            Protocol::Floor => "floor",
        }
    }

    /// The URL template for a server at `addr`, with `{doc}` and `{token}` placeholders.
    pub fn default_url(self, addr: &str) -> String {
        match self {
            Protocol::TandemJson => format!("ws://{addr}/ws?token={{token}}"),
            Protocol::Yws => format!("ws://{addr}/yjs/{{doc}}?token={{token}}"),
            Protocol::Hocuspocus => format!("ws://{addr}/"),
            Protocol::Floor => format!("ws://{addr}/{{doc}}"),
        }
    }

    /// Speaks the binary y-protocols (with or without Hocuspocus's prefix).
    pub fn is_binary(self) -> bool {
        matches!(self, Protocol::Yws | Protocol::Hocuspocus)
    }

    /// Can carry Yjs document updates.
    pub fn has_documents(self) -> bool {
        self != Protocol::Floor
    }
}

/// Where and how to connect: the protocol, the URL template and, for tandem,
/// the key that signs each client's token.
pub struct Target {
    pub protocol: Protocol,
    url: String,
    secret: Option<tandem::config::Secret>,
}

impl Target {
    pub fn new(protocol: Protocol, url: String, jwt_secret: Option<&str>) -> Self {
        let secret = jwt_secret.map(tandem::config::Secret::new);
        Self {
            protocol,
            url,
            secret,
        }
    }

    pub fn url_for(&self, doc: &str, user: &str) -> anyhow::Result<String> {
        let mut url = self.url.replace("{doc}", doc);
        if url.contains("{token}") {
            let secret = self
                .secret
                .as_ref()
                .context("the URL needs a {token}: pass --jwt-secret (or TANDEM_JWT_SECRET)")?;
            let mut claims = tandem::auth::Claims::for_user(user, Duration::from_secs(24 * 3600));
            claims.name = Some(user.to_owned());
            url = url.replace("{token}", &tandem::auth::jwt::mint_hs256(secret, &claims)?);
        }
        Ok(url)
    }
}

/// Client-side WebSocket buffers: small reads (thousands of idle clients
/// share this process), but messages as large as a 1 MB document's sync.
/// Connect over a socket of our own making (plain ws:// only): with a
/// `recv_buffer`-byte receive buffer, and bound to a `source` address.
async fn connect_socket(
    url: &str,
    recv_buffer: Option<u32>,
    source: Option<std::net::Ipv4Addr>,
) -> anyhow::Result<(Ws, tokio_tungstenite::tungstenite::handshake::client::Response)> {
    let host = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .context("a socket of our own needs a ws:// URL")?;
    let addr = tokio::net::lookup_host(host)
        .await?
        .next()
        .context("no address")?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    if let Some(source) = source {
        socket
            .bind((source, 0).into())
            .with_context(|| format!("binding to {source}"))?;
    }
    let stream = socket.connect(addr).await.context("connect failed")?;
    stream.set_nodelay(true)?;
    Ok(
        tokio_tungstenite::client_async_with_config(
            url,
            MaybeTlsStream::Plain(stream),
            Some(client_config()),
        )
        .await?,
    )
}

fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Something a received frame told us.
#[derive(Debug)]
pub enum Event {
    /// JSON `presence_list` (the join completed) or Hocuspocus "authenticated".
    Joined,
    /// The server's state vector: answer with what it lacks.
    ServerStep1(Vec<u8>),
    /// The reply to our sync step 1: what we lacked.
    Step2(Vec<u8>),
    /// A document update relayed from another client.
    Update(Vec<u8>),
    /// A cursor / awareness state from another client; `seq` only when asked for.
    Presence { seq: Option<u64> },
    /// A JSON `ack` with a numeric id.
    Ack(u64),
    /// Hocuspocus's per-update "applied" status.
    SyncStatus(bool),
    /// An error reported by the server.
    Error(String),
}

/// The outcome of connecting: how long it took and, when the protocol syncs
/// on connect, the server's sync step 2 payload.
pub struct Handshake {
    pub elapsed: Duration,
    pub step2: Option<Vec<u8>>,
}

/// Who a simulated client is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub doc: Arc<str>,
    pub user: Arc<str>,
    /// Its awareness client id (binary protocols), within 53 bits.
    pub awareness_id: u64,
    /// A socket receive buffer this small (a slow reader's): what it has
    /// not read then waits in the server's queue, not in the kernel's.
    pub recv_buffer: Option<u32>,
    /// The loopback address to connect from (`--source-addrs`).
    pub source: Option<std::net::Ipv4Addr>,
}

/// One simulated client on one document.
pub struct Client {
    ws: Ws,
    pub protocol: Protocol,
    pub id: Identity,
    /// Hocuspocus: the document name as a varstring, before every message.
    prefix: Vec<u8>,
    awareness_clock: u32,
    /// Floor frames imitate tandem's broadcast, connection id included.
    connection_tag: String,
}

impl Client {
    /// Connect, then run the protocol's opening until the client is usable:
    /// JSON joins (and with `sync`, also completes sync step 1 / 2); binary
    /// clients always sync, as a y-websocket provider does.
    pub async fn connect(
        target: &Target,
        id: Identity,
        sync: bool,
        limit: Duration,
    ) -> anyhow::Result<(Client, Handshake)> {
        let started = Instant::now();
        let url = target.url_for(&id.doc, &id.user)?;
        let (ws, _) = match (id.recv_buffer, id.source) {
            (None, None) => tokio::time::timeout(
                limit,
                tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true),
            )
            .await
            .context("connect timed out")?
            .context("connect failed")?,
            (recv_buffer, source) => tokio::time::timeout(limit, connect_socket(&url, recv_buffer, source))
                .await
                .context("connect timed out")??,
        };
        let mut prefix = Vec::new();
        if target.protocol == Protocol::Hocuspocus {
            prefix.write_string(&id.doc);
        }
        let connection_tag = format!(
            "{:08x}-0000-7000-8000-{:012x}",
            id.awareness_id >> 48,
            id.awareness_id & 0xffff_ffff_ffff
        );
        let mut client = Client {
            ws,
            protocol: target.protocol,
            id,
            prefix,
            awareness_clock: 0,
            connection_tag,
        };
        let needs_join = matches!(client.protocol, Protocol::TandemJson | Protocol::Hocuspocus);
        let needs_step2 = client.protocol.is_binary() || (sync && client.protocol == Protocol::TandemJson);
        match client.protocol {
            Protocol::Floor => {}
            Protocol::TandemJson => {
                let join = format!(
                    r#"{{"type":"join_document","document_id":"{}","id":"join"}}"#,
                    client.id.doc
                );
                client.send_text(join).await?;
                if sync {
                    client.send_step1(EMPTY_STATE_VECTOR).await?;
                }
            }
            Protocol::Yws => client.send_step1(EMPTY_STATE_VECTOR).await?,
            Protocol::Hocuspocus => {
                let mut auth = client.prefix.clone();
                auth.write_var(MSG_AUTH);
                auth.write_var(AUTH_TOKEN);
                auth.write_string("loadgen");
                client.send_binary(auth).await?;
                client.send_step1(EMPTY_STATE_VECTOR).await?;
            }
        }
        let (mut joined, mut step2) = (!needs_join, None);
        let mut events = Vec::new();
        let deadline = started + limit;
        while !(joined && (!needs_step2 || step2.is_some())) {
            let frame = tokio::time::timeout_at(deadline.into(), client.ws.next())
                .await
                .context("handshake timed out")?;
            let frame = match frame {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => bail!("handshake failed: {error}"),
                None => bail!("closed during the handshake"),
            };
            client.decode(&frame, false, &mut events);
            for event in events.drain(..) {
                match event {
                    Event::Joined => joined = true,
                    Event::Step2(update) => step2 = Some(update),
                    // A provider answers the server's step 1 with what the
                    // server lacks: nothing yet.
                    Event::ServerStep1(_) if client.protocol.is_binary() => {
                        client.send_step2(EMPTY_UPDATE).await?;
                    }
                    Event::Error(error) => bail!("server error during the handshake: {error}"),
                    _ => {}
                }
            }
        }
        Ok((
            client,
            Handshake {
                elapsed: started.elapsed(),
                step2,
            },
        ))
    }

    /// The next frame; cancel safe, for use in `select!`.
    pub async fn recv(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        self.ws.next().await
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }

    async fn send_text(&mut self, text: String) -> anyhow::Result<()> {
        self.ws.send(Message::text(text)).await.context("send failed")
    }

    async fn send_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.ws.send(Message::binary(bytes)).await.context("send failed")
    }

    fn sync_frame(&self, kind: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + payload.len() + 8);
        out.extend_from_slice(&self.prefix);
        out.write_var(MSG_SYNC);
        out.write_var(kind);
        out.write_buf(payload);
        out
    }

    /// A cursor move carrying `seq` (an awareness update for binary protocols).
    pub async fn send_presence(&mut self, seq: u64) -> anyhow::Result<()> {
        let (line, column) = (seq / SEQ_BASE, seq % SEQ_BASE);
        match self.protocol {
            Protocol::TandemJson => {
                let text = format!(
                    r#"{{"type":"cursor_move","document_id":"{}","cursor":{{"line":{line},"column":{column}}}}}"#,
                    self.id.doc
                );
                self.send_text(text).await
            }
            Protocol::Floor => {
                let text = format!(
                    r#"{{"type":"cursor_move","document_id":"{}","user_id":"{}","connection_id":"{}","cursor":{{"line":{line},"column":{column}}}}}"#,
                    self.id.doc, self.id.user, self.connection_tag
                );
                self.send_text(text).await
            }
            Protocol::Yws | Protocol::Hocuspocus => {
                self.awareness_clock += 1;
                let state = format!(
                    r##"{{"user":{{"name":"{}","color":"#30bced"}},"cursor":{{"line":{line},"column":{column}}},"seq":{seq}}}"##,
                    self.id.user
                );
                let mut entry = Vec::with_capacity(state.len() + 16);
                entry.write_var(1u32);
                entry.write_var(self.id.awareness_id);
                entry.write_var(self.awareness_clock);
                entry.write_string(&state);
                let mut out = self.prefix.clone();
                out.write_var(MSG_AWARENESS);
                out.write_buf(&entry);
                self.send_binary(out).await
            }
        }
    }

    /// A document update; JSON updates with an `id` are acked once durable.
    pub async fn send_update(&mut self, update: &[u8], id: Option<u64>) -> anyhow::Result<()> {
        match self.protocol {
            Protocol::TandemJson => {
                let id = id.map(|id| format!(r#","id":{id}"#)).unwrap_or_default();
                let text = format!(
                    r#"{{"type":"sync_update","document_id":"{}","update":"{}"{id}}}"#,
                    self.id.doc,
                    BASE64.encode(update)
                );
                self.send_text(text).await
            }
            Protocol::Yws | Protocol::Hocuspocus => {
                self.send_binary(self.sync_frame(SYNC_UPDATE, update)).await
            }
            Protocol::Floor => bail!("the floor relay has no documents"),
        }
    }

    /// Ask for what we lack; the answer arrives as [`Event::Step2`].
    pub async fn send_step1(&mut self, state_vector: &[u8]) -> anyhow::Result<()> {
        match self.protocol {
            Protocol::TandemJson => {
                let text = format!(
                    r#"{{"type":"sync_step1","document_id":"{}","state_vector":"{}","id":"sv"}}"#,
                    self.id.doc,
                    BASE64.encode(state_vector)
                );
                self.send_text(text).await
            }
            Protocol::Yws | Protocol::Hocuspocus => {
                self.send_binary(self.sync_frame(SYNC_STEP1, state_vector)).await
            }
            Protocol::Floor => Ok(()),
        }
    }

    /// Answer the server's step 1 with what it lacks.
    pub async fn send_step2(&mut self, update: &[u8]) -> anyhow::Result<()> {
        match self.protocol {
            Protocol::TandemJson => {
                let text = format!(
                    r#"{{"type":"sync_step2","document_id":"{}","update":"{}"}}"#,
                    self.id.doc,
                    BASE64.encode(update)
                );
                self.send_text(text).await
            }
            Protocol::Yws | Protocol::Hocuspocus => {
                self.send_binary(self.sync_frame(SYNC_STEP2, update)).await
            }
            Protocol::Floor => Ok(()),
        }
    }

    /// An application-level heartbeat where the protocol has one (JSON);
    /// the binary protocols rely on WebSocket pings, answered automatically.
    pub async fn send_heartbeat(&mut self) -> anyhow::Result<()> {
        match self.protocol {
            Protocol::TandemJson => self.send_text(r#"{"type":"heartbeat"}"#.to_owned()).await,
            _ => Ok(()),
        }
    }
}
