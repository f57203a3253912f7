//! Building and running the gateway: bind, background tasks, graceful shutdown.
//!
//! `Application::build` binds (port 0 in tests) and prepares everything;
//! `run_until_stopped` serves until the stop token fires, then closes every
//! socket with 1001, lets each session record its end, flushes the
//! write-behind buffer and marks this instance's sessions inactive.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

pub use crate::state::AppState;
use crate::{
    cluster::bus::Bus, config::Config, rooms::documents::Documents, rooms::hub::Hub,
    storage::document_log::DocumentStore, storage::durability::Writes, storage::persister::CompactionPolicy,
    storage::write_behind::WriteBehind,
};

/// Updates queued for commit before new ones are refused as busy.
const PERSIST_QUEUE: usize = 16 * 1024;

pub struct Application {
    state: AppState,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    stop: CancellationToken,
    /// Background tasks (flushers, sweeps, compactions) and their stop signal.
    background: TaskTracker,
    background_stop: CancellationToken,
    persister: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        if config.jwt_secret.is_none() && config.jwks_url.is_none() {
            tracing::warn!(
                "!!! no TANDEM_JWT_SECRET configured: using the DEVELOPMENT secret; anyone can mint tokens. Loopback only. !!!"
            );
        }
        // Compiling the user-agent regexes takes a moment; do it before the first client.
        tokio::task::spawn_blocking(crate::model::device::warm_up)
            .await
            .context("user-agent parser")?;
        let db = crate::storage::db::connect_and_migrate(&config.database_url)
            .await
            .context("connect to the database")?;
        let verifier = Arc::new(build_verifier(&config, &db).await?);
        // Before anything counts: the facade drops what comes before a recorder.
        crate::http::metrics::recorder();
        let instance_id: Arc<str> = config
            .instance_id
            .clone()
            .unwrap_or_else(|| Uuid::now_v7().to_string())
            .into();
        let hooks = (!config.webhook_urls.is_empty()).then(|| crate::storage::webhooks::Hooks {
            targets: config.webhook_urls.clone(),
            debounce: config.webhook_debounce,
        });
        if config.instance_id.is_some() {
            let reclaimed =
                crate::storage::cleanup::deactivate_instance(&db, &instance_id, hooks.as_ref()).await?;
            if reclaimed > 0 {
                tracing::info!(
                    sessions = reclaimed,
                    "deactivated sessions left by this instance's previous process"
                );
            }
        }
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("bind {}", config.bind))?;
        let local_addr = listener.local_addr()?;
        let writer = Arc::new(WriteBehind::new(db.clone()).with_hooks(hooks.clone()));
        let stop = CancellationToken::new();
        let background = TaskTracker::new();
        let background_stop = CancellationToken::new();
        let writes = Arc::new(Writes::new(&config.database_url, &instance_id, &db));
        let auto_version_after = (!config.auto_version_after.is_zero()).then_some(config.auto_version_after);
        let store = DocumentStore::new(db.clone(), writes).with_history(
            crate::storage::document_log::HistoryPolicy {
                keep_versions: config.keep_versions,
                version_on_compaction: auto_version_after.is_some(),
                hooks: hooks.clone(),
            },
        );
        let (persister, persister_task) = crate::storage::persister::persister(
            store.clone(),
            PERSIST_QUEUE,
            CompactionPolicy {
                after_updates: config.compact_after_updates,
                after_bytes: config.compact_after_bytes,
            },
            background.clone(),
            background_stop.clone(),
        );
        let bus = match &config.redis_url {
            Some(url) => Bus::redis(url, &config.redis_prefix, instance_id.clone()).context("redis url")?,
            None => Bus::disabled(),
        };
        let cluster: Arc<dyn crate::rooms::events::Publish> = Arc::new(bus.clone());
        let log = Arc::new(crate::storage::persister::Log {
            store: store.clone(),
            persister,
        });
        let docs = Arc::new(
            Documents::new(log, config.max_pending_update_bytes, cluster.clone()).with_history(
                crate::rooms::documents::History {
                    auto_version_after,
                    state_vectors: hooks.is_some(),
                },
            ),
        );
        let caps = Arc::new(crate::limits::ConnectionCaps::new(
            config.max_connections_per_ip,
            config.max_connections_per_user,
        ));
        let rest_limit = Arc::new(crate::limits::RestRateLimit::new(
            config.rest_rate_limit_per_second,
            config.rest_rate_limit_burst,
        ));
        let presence_max_hz = config.presence_max_hz;
        let state = AppState {
            docs,
            store,
            verifier,
            config: Arc::new(config),
            hub: Arc::new(Hub::new(writer.clone(), cluster).with_presence_max_hz(presence_max_hz)),
            writer,
            bus,
            db,
            instance_id,
            connections_stop: stop.child_token(),
            tracker: TaskTracker::new(),
            caps,
            rest_limit,
            rest_loads: Arc::new(tokio::sync::Semaphore::new(crate::limits::REST_LOADS_AT_ONCE)),
        };
        Ok(Self {
            state,
            listener,
            local_addr,
            stop,
            background,
            background_stop,
            persister: Box::pin(persister_task),
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Cancel this token to stop the server gracefully.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            state,
            listener,
            local_addr,
            stop,
            background,
            background_stop,
            persister,
        } = self;
        background.spawn(persister);
        spawn_background(&state, &background, &background_stop);
        tracing::info!(%local_addr, instance_id = %state.instance_id, "tandem listening");

        let acceptor = crate::transport::listener::GatewayAcceptor::from_tokio(
            listener,
            crate::transport::listener::HandshakeLimits {
                timeout: state.config.handshake_timeout,
                max_pending: state.config.max_pending_handshakes,
            },
        )
        .context("listener")?;
        // The idle timeout closes kept-alive HTTP connections that stay silent
        // between requests; an upgraded socket is past it (its session has its
        // own liveness).
        let server = poem::Server::new_with_acceptor(acceptor).idle_timeout(state.config.http_idle_timeout);
        let served = server
            .run_with_graceful_shutdown(
                crate::http::api::routes(state.clone()),
                stop.clone().cancelled_owned(),
                Some(state.config.shutdown_timeout),
            )
            .await;
        // Whatever ended the server, close every socket and flush.
        stop.cancel();
        state.tracker.close();
        if tokio::time::timeout(state.config.shutdown_timeout, state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions did not all close within the shutdown timeout");
        }
        background_stop.cancel();
        background.close();
        background.wait().await;
        match crate::storage::cleanup::deactivate_instance(
            &state.db,
            &state.instance_id,
            state.store.history.hooks.as_ref(),
        )
        .await
        {
            Ok(_) => {}
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "could not mark this instance's sessions inactive"
            ),
        }
        if let Err(error) = state.db.clone().close().await {
            tracing::debug!(%error, "closing the database pool");
        }
        tracing::info!("tandem stopped");
        served.context("server")
    }
}

/// The token verifier: the HS256 secret (the development one when neither a
/// secret nor a JWKS is configured), the JWKS, fetched now (a JWKS that
/// cannot be read stops the start), and the API keys stored in `db`.
async fn build_verifier(
    config: &Config,
    db: &sea_orm::DatabaseConnection,
) -> anyhow::Result<crate::auth::Verifier> {
    use crate::auth::{api_keys::ApiKeys, jwks, jwt};
    let jwks = match &config.jwks_url {
        Some(location) => Some(Arc::new(
            jwks::Jwks::load(jwks::JwksSource::parse(location), config.jwks_min_refresh).await?,
        )),
        None => None,
    };
    let secret = match (&config.jwt_secret, &jwks) {
        (Some(secret), _) => Some(secret.clone()),
        (None, None) => Some(config.jwt_secret_or_development()),
        (None, Some(_)) => None,
    };
    Ok(crate::auth::Verifier::new(jwt::VerifierSettings {
        secret,
        jwks,
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        user_claim: config.jwt_user_claim.clone(),
        name_claim: config.jwt_name_claim.clone(),
        role_claim: config.jwt_role_claim.clone(),
        api_keys: Some(Arc::new(ApiKeys::new(db.clone()))),
    }))
}

/// The presence trailing edge, the metrics upkeep, the JWKS refresh, the write-behind flusher, the stale-session sweep, the
/// editing-idle sweep and the room reaper: each loops until `stop` and
/// finishes its work.
fn spawn_background(state: &AppState, tracker: &TaskTracker, stop: &CancellationToken) {
    if let Some(jwks) = state.verifier.jwks().cloned() {
        let (interval, stop) = (state.config.jwks_refresh, stop.clone());
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.reset();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => jwks.refresh().await,
                }
            }
        });
    }
    if let (false, Some(secret)) = (
        state.config.webhook_urls.is_empty(),
        state.config.webhook_secret.clone(),
    ) {
        let deliverer = crate::webhooks::Deliverer::new(
            state.db.clone(),
            secret,
            state.instance_id.clone(),
            state.config.webhook_max_age,
        );
        tracker.spawn(deliverer.run(stop.clone()));
    }
    if let Some(tick) = state.hub.presence_tick() {
        // The trailing edge of --presence-max-hz.
        let (hub, stop) = (state.hub.clone(), stop.clone());
        tracker.spawn(async move {
            let mut ticker = tokio::time::interval(tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticker.tick() => hub.relay_deferred_presence(),
                }
            }
        });
    }
    if let Some(metrics) = crate::http::metrics::recorder() {
        // Histogram samples wait in the recorder until upkeep folds them into
        // buckets: without it (and without scrapes) they pile up for good.
        let stop = stop.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(crate::http::metrics::UPKEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => metrics.run_upkeep(),
                }
            }
        });
    }
    let config = state.config.clone();
    let delivery = crate::cluster::delivery::Delivery {
        hub: state.hub.clone(),
        docs: state.docs.clone(),
        db: state.db.clone(),
        timing: crate::cluster::bus::Timing {
            presence_flush_interval: state.config.presence_flush_interval,
            instance_ttl: state.config.instance_ttl,
        },
        verifier: state.verifier.clone(),
        hooks: state.store.history.hooks.clone(),
    };
    tracker.spawn(crate::cluster::delivery::run(
        state.bus.clone(),
        delivery,
        stop.clone(),
    ));
    {
        let writer = state.writer.clone();
        let stop = stop.clone();
        let interval = config.presence_flush_interval;
        tracker.spawn(async move { writer.run(interval, stop).await });
    }
    {
        let state = state.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            // First pass at start-up: sessions a crashed process left behind.
            let mut tick = tokio::time::interval(state.config.cleanup_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                state.rest_limit.forget_idle();
                match sweep(&state).await {
                    Ok(report) => tracing::debug!(?report, "stale-session sweep"),
                    Err(error) => tracing::warn!(error = format!("{error:#}"), "stale-session sweep failed"),
                }
            }
        });
    }
    {
        let hub = state.hub.clone();
        let stop = stop.clone();
        let timeout = config.editing_idle_timeout;
        let grace = config.room_grace_period;
        let period = (timeout.min(grace) / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                hub.expire_editing(timeout);
                hub.unload_idle_rooms(grace, |room| room.is_settled());
            }
        });
    }
}

/// One pass of the stale-session sweep: this process's silent sessions are
/// closed through their own task (their rooms hear `user_left` with reason
/// `timeout`); a local row that only lags is left for the session's next
/// refresh; every other stale session is ended in the database.
pub async fn sweep(state: &AppState) -> anyhow::Result<crate::storage::cleanup::SweepReport> {
    use std::sync::atomic::Ordering;
    let policy = crate::storage::cleanup::SweepPolicy {
        session_ttl: state.config.session_ttl,
        retention: state.config.session_retention,
        hooks: state.store.history.hooks.clone(),
    };
    let ttl_ms = state.config.session_ttl.as_millis() as u64;
    let mut closed_local = 0;
    let mut report = crate::storage::cleanup::sweep(&state.db, policy, |session_id| {
        let Some(handle) = state.hub.connection(session_id) else {
            return false;
        };
        let silent_ms = state
            .hub
            .clock_ms()
            .saturating_sub(handle.last_heard_ms.load(Ordering::Relaxed));
        if silent_ms > ttl_ms {
            handle.end.cancel();
            closed_local += 1;
        }
        true
    })
    .await?;
    report.closed_local = closed_local;
    Ok(report)
}
