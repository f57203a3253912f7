//! Test harness: the real server on port 0 (SQLite, or PostgreSQL when
//! `TEST_DATABASE_URL` is set), real WebSocket and HTTP clients.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Once,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};
use tandem::{Application, Config, auth::Claims, auth::jwt::mint_hs256, config::Secret};
use tokio::{net::TcpStream, task::JoinHandle};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest, protocol::CloseFrame},
};
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "integration-test-secret";
/// How long any single expected event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Print straight to the terminal: libtest captures `eprintln!`, but a skipped
/// backend must be visible in a plain `cargo test`.
pub fn note(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// Where a test's database lives.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// Redis and PostgreSQL for multi-instance tests, or `None` (with a note).
pub fn scale_out_services() -> Option<(String, String)> {
    let redis = std::env::var("TEST_REDIS_URL").ok().filter(|u| !u.is_empty());
    let postgres = std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty());
    match (redis, postgres) {
        (Some(redis), Some(postgres)) => Some((redis, postgres)),
        _ => {
            static SKIP: Once = Once::new();
            SKIP.call_once(|| note("NOTE: TEST_REDIS_URL and TEST_DATABASE_URL are not both set: the multi-instance (Redis) tests are SKIPPED"));
            None
        }
    }
}

/// SQLite always; PostgreSQL too when `TEST_DATABASE_URL` is set.
pub fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Sqlite];
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => backends.push(Backend::Postgres(url)),
        _ => {
            static SKIP: Once = Once::new();
            SKIP.call_once(|| note("NOTE: TEST_DATABASE_URL is not set: PostgreSQL runs of the database tests are SKIPPED (SQLite only)"));
        }
    }
    backends
}

/// A fresh database for one test: a temp SQLite file, or a new PostgreSQL database.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// Another handle on an existing database (a second instance on it).
    pub fn shared(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            _dir: None,
        }
    }

    pub async fn create(backend: &Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("tandem.db").display());
                Self { url, _dir: Some(dir) }
            }
            Backend::Postgres(admin_url) => {
                let name = format!("tandem_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(admin_url.as_str())
                    .await
                    .expect("TEST_DATABASE_URL must be reachable");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                Self {
                    url: replace_database_name(admin_url, &name),
                    _dir: None,
                }
            }
        }
    }

    pub async fn connect(&self) -> DatabaseConnection {
        tandem::storage::db::connect_and_migrate(&self.url)
            .await
            .expect("connect to test database")
    }
}

fn replace_database_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// Settings for tests: quick timers where a test waits on them.
pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::defaults_without_env();
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.database_url = database_url.to_owned();
    config.jwt_secret = Some(Secret::new(SECRET));
    config.presence_flush_interval = Duration::from_millis(50);
    config.shutdown_timeout = Duration::from_secs(5);
    config
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    pub state: tandem::AppState,
    pub database: TestDatabase,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    secret: Secret,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&Backend::Sqlite, |_| {}).await
}

pub async fn spawn_app_with(backend: &Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let database = TestDatabase::create(backend).await;
    spawn_app_on(database, tweak).await
}

pub async fn spawn_app_on(database: TestDatabase, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(&database.url);
    tweak(&mut config);
    let app = Application::build(config).await.expect("build app");
    let addr = app.local_addr();
    let stop = app.stop_token();
    let state = app.state().clone();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        stop,
        state,
        database,
        server: Some(server),
        secret: Secret::new(SECRET),
    }
}

impl TestApp {
    pub fn token(&self, user: &str) -> String {
        mint_hs256(&self.secret, &Claims::for_user(user, Duration::from_secs(3600))).unwrap()
    }

    pub fn token_with(&self, user: &str, edit: impl FnOnce(&mut tandem::auth::Claims)) -> String {
        let mut claims = Claims::for_user(user, Duration::from_secs(3600));
        edit(&mut claims);
        mint_hs256(&self.secret, &claims).unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Connect as `user` with a desktop browser User-Agent and read `connected`.
    pub async fn connect(&self, user: &str) -> Client {
        self.connect_with(&self.token(user), Some(DESKTOP_UA))
            .await
            .expect("connect")
    }

    pub async fn connect_with(
        &self,
        token: &str,
        user_agent: Option<&str>,
    ) -> Result<Client, tungstenite::Error> {
        let mut request = self.ws_url(&format!("/ws?token={token}")).into_client_request()?;
        if let Some(user_agent) = user_agent {
            request
                .headers_mut()
                .insert("user-agent", user_agent.parse().unwrap());
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Client::connected(stream).await)
    }

    /// Connect as `user` to `/ws?token=..` plus `query` (e.g. `&batch=1`),
    /// over a socket whose receive buffer is `recv_buffer` bytes: a small
    /// one keeps what the client has not read in the server's queue rather
    /// than in the kernel's.
    pub async fn connect_tuned(&self, user: &str, query: &str, recv_buffer: Option<u32>) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes).unwrap();
        }
        let stream = socket.connect(self.addr).await.unwrap();
        let request = self
            .ws_url(&format!("/ws?token={}{query}", self.token(user)))
            .into_client_request()
            .unwrap();
        let (stream, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        Client::connected(stream).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new().get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("http request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text}")),
        )
    }

    /// GET `path` with `token`, asserting a 200; returns the JSON body.
    pub async fn get_ok(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.get(path, Some(token)).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub async fn get_text(&self, path: &str, token: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("http");
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = reqwest::Client::new().post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("http request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text}")),
        )
    }

    /// Graceful stop; waits for the server to finish flushing.
    pub async fn shutdown(mut self) -> TestDatabase {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
        std::mem::replace(
            &mut self.database,
            TestDatabase {
                url: String::new(),
                _dir: None,
            },
        )
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub const DESKTOP_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
pub const PHONE_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

/// A JSON protocol client over a real WebSocket.
pub struct Client {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub connection_id: String,
    pub session_id: String,
}

impl Client {
    /// A client on an upgraded socket, once `connected` arrived.
    async fn connected(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self::opened(stream).await.0
    }

    /// A client on an upgraded socket, and the `connected` it got.
    pub async fn opened(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> (Self, Value) {
        let mut client = Client {
            stream,
            connection_id: String::new(),
            session_id: String::new(),
        };
        let connected = client.recv_type("connected").await;
        client.connection_id = connected["connection_id"].as_str().unwrap().to_owned();
        client.session_id = connected["session_id"].as_str().unwrap().to_owned();
        (client, connected)
    }

    /// Connect to `/ws?token=<token><query>` at `addr` (the server, or a
    /// relay in front of it); returns the `connected` message too.
    pub async fn open_at(addr: SocketAddr, token: &str, query: &str) -> (Self, Value) {
        let request = format!("ws://{addr}/ws?token={token}{query}")
            .into_client_request()
            .unwrap();
        let (stream, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
        Self::opened(stream).await
    }

    pub async fn send(&mut self, value: Value) {
        self.stream
            .send(Message::text(value.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.stream.send(message).await.expect("send");
    }

    /// The next text message, skipping control frames.
    pub async fn recv(&mut self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(remaining, self.stream.next())
                .await
                .expect("timed out waiting for a message")
                .expect("socket closed")
                .expect("socket error");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("server sent invalid JSON"),
                Message::Close(frame) => panic!("socket closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next text message, which must be of type `kind`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let value = self.recv().await;
        assert_eq!(value["type"], kind, "expected {kind}, got {value}");
        value
    }

    /// Skip messages until one of type `kind` arrives.
    pub async fn recv_until(&mut self, kind: &str) -> Value {
        loop {
            let value = self.recv().await;
            if value["type"] == kind {
                return value;
            }
        }
    }

    /// Assert that no text message arrives within `window`.
    pub async fn expect_silence(&mut self, window: Duration) {
        let until = tokio::time::Instant::now() + window;
        loop {
            match tokio::time::timeout_at(until, self.stream.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(text)))) => panic!("expected silence, got {text}"),
                Ok(Some(Ok(_))) => continue,
                Ok(other) => panic!("socket ended while expecting silence: {other:?}"),
            }
        }
    }

    /// Read until the server closes; returns its close frame.
    pub async fn recv_close(&mut self) -> Option<CloseFrame> {
        let deadline = Instant::now() + WAIT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.stream.next())
                .await
                .expect("timed out waiting for close")
            {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Join a document and return the `presence_list`.
    /// Also reads the `sync_step1` that follows the list.
    pub async fn join(&mut self, document_id: &str) -> Value {
        self.send(json!({"type": "join_document", "document_id": document_id}))
            .await;
        let list = self.recv_until("presence_list").await;
        let step1 = self.recv_type("sync_step1").await;
        assert_eq!(step1["document_id"], document_id);
        list
    }

    /// Send a heartbeat and expect its ack: proof the connection still works.
    pub async fn assert_alive(&mut self) {
        self.send(json!({"type": "heartbeat", "id": "alive?"})).await;
        let ack = self.recv_until("heartbeat_ack").await;
        assert_eq!(ack["id"], "alive?");
    }

    /// Send `value` and expect an error with `code` (echoing `id` if given).
    pub async fn expect_error(&mut self, value: Value, code: &str) -> Value {
        self.send(value).await;
        let error = self.recv_type("error").await;
        assert_eq!(error["code"], code, "{error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        error
    }
}

/// GET a full URL (another process's gateway) with `token`; its JSON body.
pub async fn get_json(url: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Send a Yjs update over the socket and wait for its (post-commit) ack.
pub async fn send_update(client: &mut Client, document: &str, update: &[u8], id: &str) {
    client
        .send(
            json!({"type": "sync_update", "document_id": document, "update": b64::encode(update), "id": id}),
        )
        .await;
    let ack = client.recv_until("ack").await;
    assert_eq!(ack["id"], id);
}

/// A `/ws` upgrade with `token`: 101 when it is accepted, else the HTTP
/// status and JSON body it was refused with.
pub async fn upgrade_status(app: &TestApp, token: &str) -> (u16, Value) {
    let request = app
        .ws_url(&format!("/ws?token={token}"))
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).expect("JSON body"),
            )
        }
        Ok(_) => (101, json!({})),
        Err(other) => panic!("upgrade failed otherwise: {other}"),
    }
}

/// Poll `check` until it returns Some, or fail after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT * 2;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real binary, killed with SIGKILL: its rows stay active until another
/// process's sweep finds them stale.
pub struct Gateway {
    child: Child,
    pub port: u16,
}

impl Gateway {
    pub fn start(database_url: &str, extra_env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("TANDEM_BIND", "127.0.0.1:0")
            .env("TANDEM_JWT_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start tandem");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let port = loop {
            let line = lines.next().expect("tandem exited before listening").unwrap();
            if let Some(rest) = line.split("local_addr=").nth(1) {
                let addr: std::net::SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
                break addr.port();
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, port }
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Yjs peer: a yrs document that syncs through a [`Client`].
pub struct YPeer {
    pub doc: yrs::Doc,
}

impl YPeer {
    pub fn new(client_id: u64) -> Self {
        Self {
            doc: yrs::Doc::with_client_id(client_id),
        }
    }

    /// Insert at `index` of the root text "content"; returns the v1 update.
    pub fn insert(&self, index: u32, text: &str) -> Vec<u8> {
        use yrs::{Text, Transact};
        let content = self.doc.get_or_insert_text("content");
        let mut txn = self.doc.transact_mut();
        content.insert(&mut txn, index, text);
        txn.encode_update_v1()
    }

    /// Delete `len` characters at `index` of "content"; returns the v1 update
    /// (a deletion adds no item, so the state vector stays the same).
    pub fn remove(&self, index: u32, len: u32) -> Vec<u8> {
        use yrs::{Text, Transact};
        let content = self.doc.get_or_insert_text("content");
        let mut txn = self.doc.transact_mut();
        content.remove_range(&mut txn, index, len);
        txn.encode_update_v1()
    }

    pub fn apply_b64(&self, update: &str) {
        use yrs::{Transact, Update, updates::decoder::Decode};
        let bytes = b64::decode(update);
        self.doc
            .transact_mut()
            .apply_update(Update::decode_v1(&bytes).unwrap())
            .unwrap();
    }

    pub fn text(&self) -> String {
        use yrs::{GetString, Transact};
        let content = self.doc.get_or_insert_text("content");
        content.get_string(&self.doc.transact())
    }

    /// The whole document as one v1 update.
    pub fn full_state(&self) -> Vec<u8> {
        use yrs::{ReadTxn, StateVector, Transact};
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    pub fn state_vector(&self) -> Vec<u8> {
        use yrs::{ReadTxn, Transact, updates::encoder::Encode};
        self.doc.transact().state_vector().encode_v1()
    }
}

pub mod b64 {
    use base64::{Engine, engine::general_purpose::STANDARD};

    pub fn encode(bytes: impl AsRef<[u8]>) -> String {
        STANDARD.encode(bytes)
    }

    pub fn decode(text: &str) -> Vec<u8> {
        STANDARD.decode(text).expect("base64")
    }
}

/// A TCP relay in front of the server that can cut the connection like a
/// network loss: both sockets dropped, no WebSocket close frame.
pub struct Relay {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Relay {
    /// Relay one connection at a time to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = TcpStream::connect(target).await else {
                    continue;
                };
                pipes.spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Self { addr, task }
    }

    /// Cut every relayed connection (the pipes die with the task).
    pub fn cut(self) {
        self.task.abort();
    }
}
