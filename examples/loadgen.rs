//! Load generator for tandem, the floor relay and the Yjs servers users
//! would pick instead: many WebSocket clients from one process.
//!
//! ```sh
//! # presence fan-out against tandem (JSON protocol), server pid for CPU/RSS
//! cargo run --release --example loadgen -- --protocol tandem-json --addr 127.0.0.1:8080 \
//!     --jwt-secret "$TANDEM_JWT_SECRET" --scenario fanout --rooms 50 --members 10 --rate 10 \
//!     --server-pid "$(pgrep -n tandem)"
//! # the same load over y-websocket's binary protocol, against tandem and the reference server
//! cargo run --release --example loadgen -- --protocol yws --addr 127.0.0.1:8080 --jwt-secret "$S" --scenario fanout
//! cargo run --release --example loadgen -- --protocol yws --url 'ws://127.0.0.1:1234/{doc}' --scenario fanout
//! # CI: a few clients for a few seconds against a running tandem; non-zero exit on any failure
//! cargo run --release --example loadgen -- --smoke --addr 127.0.0.1:8080 --jwt-secret "$S"
//! ```
//!
//! Scenarios: `idle` (memory per connection, connect rate, handshakes),
//! `fanout` (cursor moves; `--find-knee` steps the rate until p99 > 50 ms),
//! `editing` (Yjs text edits: relay and ack latency, convergence),
//! `joinstorm` (many clients syncing a ~1 MB document at once).
//! Each run prints a table and one JSON line (appended to `--json-out`).
//! Latency is sampled on one receiver in `--sample-every`, into per-task
//! histograms merged at the end, so the generator stays cheap per message;
//! its own CPU use is reported beside the server's.

#[path = "loadgen/common.rs"]
mod common;
#[path = "loadgen/decode.rs"]
mod decode;
#[path = "loadgen/editing.rs"]
mod editing;
#[path = "loadgen/fanout.rs"]
mod fanout;
#[path = "loadgen/idle.rs"]
mod idle;
#[path = "loadgen/joinstorm.rs"]
mod joinstorm;
#[path = "loadgen/procstat.rs"]
mod procstat;
#[path = "loadgen/report.rs"]
mod report;
#[path = "loadgen/scrape.rs"]
mod scrape;
#[path = "loadgen/slow.rs"]
mod slow;
#[path = "loadgen/timing.rs"]
mod timing;
#[path = "loadgen/wire.rs"]
mod wire;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, ValueEnum};
use rand::Rng;

use crate::{
    common::Common,
    editing::EditingParams,
    fanout::FanoutParams,
    idle::IdleParams,
    joinstorm::StormParams,
    procstat::Proc,
    report::Report,
    wire::{Protocol, Target},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Idle,
    Fanout,
    Editing,
    Joinstorm,
}

#[derive(Debug, Parser)]
#[command(about = "WebSocket load generator for tandem, the floor relay and Yjs servers")]
struct Args {
    /// Wire protocol of the server under test.
    #[arg(long, value_enum, default_value = "tandem-json")]
    protocol: Protocol,
    #[arg(long, value_enum, default_value = "fanout")]
    scenario: Scenario,
    /// host:port of the server; the URL follows from the protocol.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Further tandem instances sharing the rooms through Redis (fanout),
    /// repeatable: client i connects to instance i mod (1 + their number),
    /// and delivery latency is reported separately for same-instance and
    /// cross-instance senders.
    #[arg(long)]
    addr2: Vec<String>,
    /// Pids of those instances, in the same order (CPU reported as
    /// `server2_cpu_pct`, `server3_cpu_pct`, ...).
    #[arg(long)]
    server2_pid: Vec<u32>,
    /// Pid of redis-server (CPU reported as `redis_cpu_pct`).
    #[arg(long)]
    redis_pid: Option<u32>,
    /// URL template instead of the protocol's default; `{doc}` and `{token}`
    /// are replaced per client (e.g. `ws://127.0.0.1:1234/{doc}`).
    #[arg(long)]
    url: Option<String>,
    /// Secret that signs each client's token (tandem).
    #[arg(long, env = "TANDEM_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Pid of the server under test: its CPU time and RSS are reported.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Name of the server in the report (default: the protocol).
    #[arg(long)]
    label: Option<String>,
    /// Append each run's JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// POST {"docId": ..} here before using a document (y-sweet: http://HOST:PORT/doc/new).
    #[arg(long)]
    create_docs_url: Option<String>,
    /// One receiver in this many samples latency.
    #[arg(long, default_value_t = 4)]
    sample_every: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// tandem JSON: connect with `?batch=1` (several messages per frame when
    /// queued, newline-delimited).
    #[arg(long)]
    batch: bool,
    /// Spread the client sockets over this many loopback source addresses
    /// (127.0.0.1, .2, ...): each holds its own ephemeral port range, so
    /// more than ~28,000 connections fit (the target must be on loopback).
    #[arg(long, default_value_t = 1)]
    source_addrs: u8,
    /// The server's Prometheus endpoint (tandem: http://HOST:PORT/metrics):
    /// its database writes per second over the window are reported.
    #[arg(long)]
    metrics_url: Option<String>,
    /// Runtime worker threads (1: a single-threaded runtime, for one pinned core).
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// idle: connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// idle: connections per room.
    #[arg(long, default_value_t = 10)]
    per_room: usize,
    /// idle: seconds to hold the connections after the ramp.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// idle: seconds between JSON heartbeats.
    #[arg(long, default_value_t = 30.0)]
    heartbeat: f64,

    /// fanout: rooms.
    #[arg(long, default_value_t = 50)]
    rooms: usize,
    /// fanout: members per room.
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// fanout: cursor moves per second per member (the starting rate with --find-knee).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// fanout: rooms (the first ones) with a slow reader as their last member.
    #[arg(long, default_value_t = 0)]
    slow_readers: usize,
    /// fanout: how many times slower than its room sends a slow reader reads.
    #[arg(long, default_value_t = 10.0)]
    slow_factor: f64,
    /// fanout: step the rate up until p99 exceeds --knee-p99-ms.
    #[arg(long)]
    find_knee: bool,
    #[arg(long, default_value_t = 50.0)]
    knee_p99_ms: f64,
    #[arg(long, default_value_t = 1.5)]
    knee_factor: f64,
    #[arg(long, default_value_t = 2000.0)]
    knee_max_rate: f64,

    /// fanout / editing: seconds before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// fanout / editing: seconds measured (per step with --find-knee).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,

    /// editing: documents.
    #[arg(long, default_value_t = 10)]
    docs: usize,
    /// editing: editors per document.
    #[arg(long, default_value_t = 10)]
    editors: usize,
    /// editing: edits per second per editor.
    #[arg(long, default_value_t = 5.0)]
    edit_rate: f64,
    /// editing: seconds to wait for the last edits before checking convergence.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// editing: keep each document's text at about this many characters
    /// (each edit then also deletes as many as it inserts).
    #[arg(long)]
    max_text: Option<u32>,
    /// editing: type like a person (at one's own cursor; with --max-text,
    /// deleting one's own oldest text) instead of editing random places.
    #[arg(long)]
    typing: bool,
    /// editing: tandem's SQLite file, to report bytes written per second.
    #[arg(long)]
    db_path: Option<PathBuf>,

    /// joinstorm: joining clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// joinstorm: seconds over which the joins are spread.
    #[arg(long, default_value_t = 1.0)]
    storm_window: f64,
    /// joinstorm: bytes of document history.
    #[arg(long, default_value_t = 1_000_000)]
    history_bytes: usize,
    /// joinstorm: bytes per history update.
    #[arg(long, default_value_t = 4096)]
    update_bytes: usize,
    /// joinstorm: seeder leaves and the storm starts this many seconds later (0: warm).
    #[arg(long, default_value_t = 0.0)]
    cold_wait: f64,

    /// CI smoke test against a running tandem: a few clients for ~3 s (JSON
    /// fan-out and editing, and y-websocket fan-out on /yjs); exits non-zero
    /// if nothing was delivered, any error occurred or documents diverged.
    #[arg(long)]
    smoke: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(args.threads);
        builder
    };
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    timing::epoch();
    let ok = runtime.block_on(async {
        if args.smoke {
            smoke(&args).await
        } else {
            run(&args).await
        }
    });
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn seconds(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

fn common(args: &Args, protocol: Protocol, url: Option<&str>) -> Common {
    let batched = |url: String| {
        if args.batch && protocol == Protocol::TandemJson {
            format!("{url}&batch=1")
        } else {
            url
        }
    };
    let url = batched(url.map_or_else(|| protocol.default_url(&args.addr), str::to_owned));
    let mut rng = rand::rng();
    let others = args
        .addr2
        .iter()
        .map(|addr| {
            Arc::new(Target::new(
                protocol,
                batched(protocol.default_url(addr)),
                args.jwt_secret.as_deref(),
            ))
        })
        .collect();
    let extra = args
        .server2_pid
        .iter()
        .enumerate()
        .map(|(i, &pid)| (format!("server{}", i + 2), Proc::Pid(pid)))
        .chain(args.redis_pid.map(|pid| ("redis".to_owned(), Proc::Pid(pid))))
        .collect();
    Common {
        target: Arc::new(Target::new(protocol, url, args.jwt_secret.as_deref())),
        others,
        extra,
        source_addrs: args.source_addrs.max(1),
        metrics_url: args.metrics_url.clone(),
        run_id: format!("lg{:06x}", rng.random_range(0..0xff_ffffu32)),
        label: args.label.clone().unwrap_or_else(|| protocol.name().to_owned()),
        server: args.server_pid.map(Proc::Pid),
        sample_every: args.sample_every,
        connect_concurrency: args.connect_concurrency,
        // Distinct client ids per run. Yjs makes 32-bit client ids and some
        // servers read them as u32 (yrs 0.19 in y-sweet): stay below 2^32,
        // with room for 2^17 clients per run.
        id_base: u64::from(rng.random_range(1..0x7fffu32)) << 17,
        create_docs_url: args.create_docs_url.clone(),
    }
}

fn fanout_params(args: &Args) -> FanoutParams {
    FanoutParams {
        rooms: args.rooms,
        members: args.members.max(2),
        rate: args.rate,
        warmup: seconds(args.warmup),
        duration: seconds(args.duration),
        drain: Duration::from_secs(1),
        slow_readers: args.slow_readers,
        slow_factor: args.slow_factor,
    }
}

async fn run(args: &Args) -> bool {
    let mut common = common(args, args.protocol, args.url.as_deref());
    let report = match args.scenario {
        Scenario::Idle => {
            let params = IdleParams {
                connections: args.connections,
                per_room: args.per_room,
                hold: seconds(args.hold),
                heartbeat: seconds(args.heartbeat.max(0.1)),
            };
            idle::run(&common, params).await
        }
        Scenario::Fanout if args.find_knee => {
            fanout::find_knee(
                &mut common,
                fanout_params(args),
                args.knee_p99_ms,
                args.knee_factor.max(1.05),
                args.knee_max_rate,
                args.json_out.as_deref(),
            )
            .await
        }
        Scenario::Fanout => fanout::run(&common, fanout_params(args)).await,
        Scenario::Editing => {
            let params = EditingParams {
                docs: args.docs,
                editors: args.editors.max(2),
                rate: args.edit_rate,
                warmup: seconds(args.warmup),
                duration: seconds(args.duration),
                settle: seconds(args.settle),
                db_path: args.db_path.clone(),
                max_text: args.max_text,
                typing: args.typing,
            };
            editing::run(&common, params).await
        }
        Scenario::Joinstorm => {
            let params = StormParams {
                clients: args.clients,
                window: seconds(args.storm_window),
                history_bytes: args.history_bytes,
                update_bytes: args.update_bytes.max(1),
                cold_wait: seconds(args.cold_wait),
                timeout: Duration::from_secs(60),
            };
            joinstorm::run(&common, params).await
        }
    };
    report.emit(args.json_out.as_deref());
    true
}

/// A few clients for a few seconds, every check that can fail cheaply.
async fn smoke(args: &Args) -> bool {
    let short = FanoutParams {
        rooms: 2,
        members: 3,
        rate: 10.0,
        warmup: Duration::from_millis(500),
        duration: Duration::from_millis(1500),
        drain: Duration::from_millis(500),
        slow_readers: 1,
        slow_factor: 10.0,
    };
    let mut reports = Vec::new();
    if args.protocol == Protocol::TandemJson {
        // tandem: both endpoints, presence and documents, all at once.
        let json = common(args, Protocol::TandemJson, args.url.as_deref());
        let yws_url = Protocol::Yws.default_url(&args.addr);
        let yws = common(args, Protocol::Yws, Some(&yws_url));
        let editing = EditingParams {
            docs: 1,
            editors: 3,
            rate: 5.0,
            warmup: Duration::from_millis(500),
            duration: Duration::from_millis(1500),
            settle: Duration::from_millis(1000),
            db_path: None,
            max_text: None,
            typing: false,
        };
        let (a, b, c) = tokio::join!(
            fanout::run(&json, short),
            editing::run(&json, editing),
            fanout::run(&yws, short)
        );
        reports.extend([a, b, c]);
    } else {
        let only = common(args, args.protocol, args.url.as_deref());
        reports.push(fanout::run(&only, short).await);
    }
    let mut ok = true;
    for report in &reports {
        report.emit(args.json_out.as_deref());
        let failures = smoke_failures(report);
        for failure in &failures {
            eprintln!(
                "smoke: {} {}: {failure}",
                report_name(report),
                report_protocol(report)
            );
        }
        ok &= failures.is_empty();
    }
    eprintln!("smoke: {}", if ok { "ok" } else { "FAILED" });
    ok
}

fn report_name(report: &Report) -> String {
    report
        .get("scenario")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_owned()
}

fn report_protocol(report: &Report) -> String {
    report
        .get("protocol")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_owned()
}

fn smoke_failures(report: &Report) -> Vec<String> {
    let number = |key: &str| report.get(key).and_then(|v| v.as_f64());
    let mut failures = Vec::new();
    if number("delivered_per_s").unwrap_or(0.0) <= 0.0 {
        failures.push("nothing was delivered".to_owned());
    }
    for key in ["errors", "disconnects"] {
        if number(key).unwrap_or(0.0) > 0.0 {
            failures.push(format!(
                "{key}: {}",
                report.get("error_samples").cloned().unwrap_or_default()
            ));
        }
    }
    if number("slow_disconnects").unwrap_or(0.0) > 0.0 {
        failures.push(format!(
            "the slow reader was disconnected: {}",
            report.get("slow_errors").cloned().unwrap_or_default()
        ));
    }
    if number("slow_readers").is_some() && number("slow_fresh_ratio") != Some(1.0) {
        failures.push("the slow reader's last cursors are not every member's last".to_owned());
    }
    if report.get("converged").and_then(|v| v.as_bool()) == Some(false) {
        failures.push(format!(
            "documents diverged: {}",
            report.get("convergence_problems").cloned().unwrap_or_default()
        ));
    }
    failures
}
