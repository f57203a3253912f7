//! What every scenario shares: the target, the run's naming, the server
//! under test, and opening many clients with bounded concurrency.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    procstat::Proc,
    timing::{Stats, record},
    wire::{Client, Handshake, Identity, Target},
};

/// How long one client may take to connect and finish its handshake.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(30);

pub struct Common {
    pub target: Arc<Target>,
    /// Further servers sharing the rooms (tandem instances over Redis):
    /// client i connects to server i mod `servers()`, 0 being `target`.
    pub others: Vec<Arc<Target>>,
    /// Processes beside the server whose CPU is reported (other instances, Redis).
    pub extra: Vec<(String, Proc)>,
    /// Loopback source addresses to spread client sockets over (1: the default).
    pub source_addrs: u8,
    /// The server's `/metrics`, scraped at the window's edges.
    pub metrics_url: Option<String>,
    /// Prefix of every document name, unique per run, so runs never share rooms.
    pub run_id: String,
    /// Name of the server in reports.
    pub label: String,
    pub server: Option<Proc>,
    /// One receiver in this many records latency.
    pub sample_every: usize,
    pub connect_concurrency: usize,
    /// Base of the awareness / Yjs client ids of this run (ids stay below 2^32).
    pub id_base: u64,
    /// Before connecting, POST `{"docId": ..}` here for each document (y-sweet).
    pub create_docs_url: Option<String>,
}

impl Common {
    pub fn doc(&self, scenario: &str, index: usize) -> Arc<str> {
        format!("{}-{scenario}{index}", self.run_id).into()
    }

    pub fn identity(&self, doc: Arc<str>, index: usize) -> Identity {
        Identity {
            doc,
            user: format!("lg{index}").into(),
            awareness_id: self.id_base + index as u64,
            recv_buffer: None,
            source: (self.source_addrs > 1).then(|| {
                std::net::Ipv4Addr::new(127, 0, 0, 1 + (index % usize::from(self.source_addrs)) as u8)
            }),
        }
    }

    /// How many servers share the rooms (1 without `--addr2`).
    pub fn servers(&self) -> u64 {
        1 + self.others.len() as u64
    }

    /// Which server client `index` connects to: 0 is `target`, k is `others[k - 1]`.
    pub fn server_of(&self, index: usize) -> u64 {
        index as u64 % self.servers()
    }

    /// The target of server `server_of(index)`.
    pub fn target_of(&self, index: usize) -> Arc<Target> {
        match self.server_of(index) {
            0 => self.target.clone(),
            k => self.others[k as usize - 1].clone(),
        }
    }

    pub fn sampled(&self, index: usize) -> bool {
        index.is_multiple_of(self.sample_every.max(1))
    }

    /// The run's `rooms` documents for `scenario`, created where the server
    /// needs it; a failure to create is counted in `stats`.
    pub async fn room_docs(&self, scenario: &str, rooms: usize, stats: &mut Stats) -> Vec<Arc<str>> {
        let docs: Vec<Arc<str>> = (0..rooms).map(|r| self.doc(scenario, r)).collect();
        if let Err(error) = self.create_docs(&docs).await {
            stats.error(format!("{error:#}"));
        }
        docs
    }

    /// `count` clients, `per_room` to each of `docs` in order.
    pub fn room_identities(&self, docs: &[Arc<str>], count: usize, per_room: usize) -> Vec<Identity> {
        let per_room = per_room.max(1);
        (0..count)
            .map(|i| self.identity(docs[i / per_room].clone(), i))
            .collect()
    }

    /// Create documents on servers that need it (y-sweet's `POST /doc/new`).
    pub async fn create_docs(&self, docs: &[Arc<str>]) -> anyhow::Result<()> {
        let Some(url) = &self.create_docs_url else {
            return Ok(());
        };
        let http = reqwest::Client::new();
        for doc in docs {
            let response = http
                .post(url)
                .json(&serde_json::json!({ "docId": &**doc }))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "creating {doc}: HTTP {}",
                response.status()
            );
        }
        Ok(())
    }
}

/// Open one client per identity, at most `concurrency` at a time. Returns
/// the clients in identity order (None where connecting failed) and the
/// handshake times and failures in `stats`.
pub async fn connect_all(
    common: &Common,
    identities: Vec<Identity>,
    sync: bool,
    stats: &mut Stats,
) -> (Vec<Option<(Client, Handshake)>>, Duration) {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let count = identities.len();
    for (index, identity) in identities.into_iter().enumerate() {
        let target = common.target_of(index);
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            (
                index,
                Client::connect(&target, identity, sync, HANDSHAKE_LIMIT).await,
            )
        });
    }
    let mut clients: Vec<Option<(Client, Handshake)>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, Ok((client, handshake)))) => {
                record(&mut stats.handshake, handshake.elapsed.as_micros() as u64);
                clients[index] = Some((client, handshake));
            }
            Ok((_, Err(error))) => stats.error(format!("{error:#}")),
            Err(error) => stats.error(format!("connect task failed: {error}")),
        }
    }
    (clients, started.elapsed())
}
