//! Presence fan-out: rooms × members, every member moving its cursor at a
//! fixed rate (awareness updates on the binary protocols), and the knee: the
//! highest rate at which the delivery p99 stays under a bound.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rand::Rng;
use tokio::time::MissedTickBehavior;

use crate::{
    common::{Common, connect_all},
    procstat::{CpuMark, Proc, RssSampler},
    report::{Report, round2, samples},
    scrape, slow,
    timing::{SendTable, Stats, Window, micros_of, now_us, record},
    wire::{Client, EMPTY_UPDATE, Event},
};

#[derive(Debug, Clone, Copy)]
pub struct FanoutParams {
    pub rooms: usize,
    pub members: usize,
    /// Cursor moves per second per member.
    pub rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    /// After the window, how long receivers keep counting late deliveries.
    pub drain: Duration,
    /// Rooms (the first ones) whose last member reads `slow_factor` times
    /// slower than the room sends, and sends nothing (see `slow`).
    pub slow_readers: usize,
    pub slow_factor: f64,
}

/// One fan-out run at one rate.
pub async fn run(common: &Common, params: FanoutParams) -> Report {
    let mut report = Report::new("fanout", common.target.protocol.name(), &common.label);
    report.set("rooms", params.rooms);
    report.set("members", params.members);
    report.set("rate_hz", params.rate);
    report.set("duration_s", params.duration.as_secs_f64());

    let mut totals = Stats::default();
    let docs = common.room_docs("f", params.rooms, &mut totals).await;
    let mut identities = common.room_identities(&docs, params.rooms * params.members, params.members);
    let slow_rooms = params.slow_readers.min(params.rooms);
    let is_slow =
        |index: usize| index % params.members == params.members - 1 && index / params.members < slow_rooms;
    for (index, identity) in identities.iter_mut().enumerate() {
        if is_slow(index) {
            identity.recv_buffer = Some(slow::RECV_BUFFER);
        }
    }
    report.set(
        "slow_factor",
        if slow_rooms > 0 { params.slow_factor } else { 0.0 },
    );
    let (clients, _) = connect_all(common, identities, false, &mut totals).await;
    let connected = clients.iter().filter(|c| c.is_some()).count();
    report.set("connections", connected);

    let clients_total = (params.rooms * params.members) as f64;
    let window_secs = (params.warmup + params.duration + params.drain).as_secs_f64();
    // Room for every send of the run (latencies beyond that are not measured anyway).
    let servers = common.servers();
    let several = servers > 1;
    // With several servers the sequence number mod their count names the
    // sender's server.
    let seq_stride = servers as usize;
    let table = Arc::new(SendTable::new(
        ((params.rate * clients_total * window_secs) as usize * seq_stride).min(1 << 25),
    ));
    let next_seq = Arc::new(AtomicU64::new(1));
    let window = Window::after(params.warmup, params.duration);
    let senders = (slow_rooms > 0).then(|| {
        Arc::new(slow::Senders::new(
            (params.rate * clients_total * window_secs) as usize,
            params.rooms * params.members,
        ))
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut slow_tasks = tokio::task::JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        let Some((client, _)) = client else { continue };
        let room = index / params.members;
        if is_slow(index) {
            let senders = senders.clone().expect("slow readers have a sender table");
            let first = room * params.members;
            let reader = slow::SlowReader {
                table: table.clone(),
                senders,
                window,
                per_message: Duration::from_secs_f64(
                    params.slow_factor / (params.rate * (params.members - 1) as f64),
                ),
                room: (first..first + params.members - 1).collect(),
            };
            slow_tasks.spawn(reader.run(client));
            continue;
        }
        let slow_in_room = u64::from(room < slow_rooms);
        let job = Member {
            index,
            senders: senders.clone(),
            table: table.clone(),
            next_seq: next_seq.clone(),
            window,
            drain_end: window.end + params.drain,
            rate: params.rate,
            others: params.members as u64 - 1 - slow_in_room,
            sampled: common.sampled(index),
            server: several.then(|| (common.server_of(index), servers)),
        };
        tasks.spawn(job.run(client));
    }

    let rss = common.server.map(RssSampler::start);
    tokio::time::sleep_until(window.start.into()).await;
    let server_cpu = common.server.map(CpuMark::now);
    let loadgen_cpu = CpuMark::now(Proc::Myself);
    let extra_cpu: Vec<_> = common
        .extra
        .iter()
        .map(|(name, process)| (name.as_str(), CpuMark::now(*process)))
        .collect();
    let counters_start = scrape::start(common.metrics_url.as_deref()).await;
    tokio::time::sleep_until(window.end.into()).await;
    scrape::finish(
        &mut report,
        common.metrics_url.as_deref(),
        counters_start,
        window.seconds(),
    )
    .await;
    for (name, cpu) in &extra_cpu {
        if let Some((_, percent)) = cpu.since() {
            report.set(&format!("{name}_cpu_pct"), round2(percent));
        }
    }
    if let (Some(process), Some(cpu), Some(rss)) = (common.server, &server_cpu, &rss) {
        report.resources(Some((process, cpu, rss)), &loadgen_cpu);
    } else {
        report.resources(None, &loadgen_cpu);
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(stats) => totals.merge(&stats),
            Err(error) => totals.error(format!("client task failed: {error}")),
        }
    }
    let seconds = window.seconds();
    let mut slow_stats = Vec::new();
    while let Some(done) = slow_tasks.join_next().await {
        match done {
            Ok(stats) => slow_stats.push(stats),
            Err(error) => totals.error(format!("slow reader task failed: {error}")),
        }
    }
    slow::report(&mut report, slow_stats, seconds);
    report.set("sent_per_s", round2(totals.sent as f64 / seconds));
    report.set("delivered_per_s", round2(totals.delivered as f64 / seconds));
    report.set(
        "delivery_ratio",
        round2(if totals.expected > 0 {
            totals.delivered as f64 / totals.expected as f64
        } else {
            0.0
        }),
    );
    report.histogram("latency", &totals.latency);
    if several {
        // `latency` is same-server delivery here; the cross-server figures
        // beside it are what going through Redis adds.
        report.histogram("latency_cross", &totals.latency_cross);
        let p50 = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.5) as f64 / 1000.0;
        if !totals.latency.is_empty() && !totals.latency_cross.is_empty() {
            report.set(
                "cross_added_p50_ms",
                round2((p50(&totals.latency_cross) - p50(&totals.latency)) * 100.0) / 100.0,
            );
        }
    }
    report.histogram("handshake", &totals.handshake);
    report.set("errors", totals.errors);
    report.set("disconnects", totals.disconnects);
    report.set("error_samples", samples(&totals.error_samples));
    report
}

/// Step the rate up until p99 exceeds `p99_limit_ms` (or deliveries drop);
/// the knee is the last rate that passed.
pub async fn find_knee(
    common: &mut Common,
    params: FanoutParams,
    p99_limit_ms: f64,
    factor: f64,
    max_rate: f64,
    json_out: Option<&std::path::Path>,
) -> Report {
    let base_run = common.run_id.clone();
    let mut rate = params.rate;
    let mut knee: Option<Report> = None;
    let mut step = 0;
    let mut failed_at = None;
    while rate <= max_rate {
        common.run_id = format!("{base_run}-k{step}");
        let mut result = run(common, FanoutParams { rate, ..params }).await;
        let p99 = result
            .get("latency_p99_ms")
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::INFINITY);
        let ratio = result
            .get("delivery_ratio")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        let clean = result.get("errors").and_then(|v| v.as_u64()) == Some(0)
            && result.get("disconnects").and_then(|v| v.as_u64()) == Some(0);
        let passed = p99 <= p99_limit_ms && ratio >= 0.95 && clean;
        result.set("knee_step", step);
        result.set("knee_passed", passed);
        result.emit(json_out);
        if !passed {
            failed_at = Some(rate);
            break;
        }
        knee = Some(result);
        step += 1;
        rate = (rate * factor).round();
        // Let the server settle (rooms unload, sockets close) between steps.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    common.run_id = base_run;
    let mut summary = Report::new("fanout-knee", common.target.protocol.name(), &common.label);
    summary.set("rooms", params.rooms);
    summary.set("members", params.members);
    summary.set("p99_limit_ms", p99_limit_ms);
    match &knee {
        Some(best) => {
            let rate = best.get("rate_hz").cloned().unwrap_or_default();
            summary.set("knee_rate_hz", rate);
            for key in [
                "delivered_per_s",
                "latency_p50_ms",
                "latency_p99_ms",
                "server_cpu_pct",
                "loadgen_cpu_pct",
            ] {
                if let Some(value) = best.get(key) {
                    summary.set(&format!("knee_{key}"), value.clone());
                }
            }
        }
        None => summary.set("knee_rate_hz", serde_json::Value::Null),
    }
    summary.set(
        "first_failing_rate_hz",
        failed_at.map(serde_json::Value::from).unwrap_or_default(),
    );
    summary
}

/// One member's job: send on its schedule, count and sample what it receives.
struct Member {
    index: usize,
    /// Who sent what, when a room has a slow reader.
    senders: Option<Arc<slow::Senders>>,
    table: Arc<SendTable>,
    next_seq: Arc<AtomicU64>,
    window: Window,
    drain_end: std::time::Instant,
    rate: f64,
    /// Members that should receive each of our moves.
    others: u64,
    sampled: bool,
    /// With several servers, which one this member is connected to, and
    /// how many there are.
    server: Option<(u64, u64)>,
}

impl Member {
    async fn run(self, mut client: Client) -> Stats {
        let mut stats = Stats::default();
        let period = Duration::from_secs_f64(1.0 / self.rate);
        // A random phase, so members do not all send in the same millisecond.
        let phase = period.mul_f64(rand::rng().random::<f64>());
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let drain = tokio::time::sleep_until(self.drain_end.into());
        tokio::pin!(drain);
        let mut events = Vec::new();
        let mut sending = true;
        loop {
            tokio::select! {
                frame = client.recv() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(error)) => { stats.disconnect(format!("receive failed: {error}")); break; }
                        None => { stats.disconnect("closed by server"); break; }
                    };
                    client.decode(&frame, self.sampled, &mut events);
                    let now = std::time::Instant::now();
                    let now_us = micros_of(now);
                    let counting = self.window.contains(now) || (now >= self.window.end && now < self.drain_end);
                    for event in events.drain(..) {
                        match event {
                            Event::Presence { seq } => {
                                if counting {
                                    stats.delivered += 1;
                                }
                                if let Some(seq) = seq
                                    && let Some(sent) = self.table.lookup(seq)
                                    && self.window.contains_us(sent)
                                {
                                    let histogram = match self.server {
                                        Some((server, servers)) if seq % servers != server => &mut stats.latency_cross,
                                        _ => &mut stats.latency,
                                    };
                                    record(histogram, now_us.saturating_sub(sent));
                                }
                            }
                            Event::ServerStep1(_) if client.protocol.is_binary() => {
                                if let Err(error) = client.send_step2(EMPTY_UPDATE).await {
                                    stats.disconnect(format!("{error:#}"));
                                }
                            }
                            Event::Error(error) => stats.error(error),
                            _ => {}
                        }
                    }
                }
                _ = ticker.tick(), if sending => {
                    let now = std::time::Instant::now();
                    if now >= self.window.end {
                        sending = false;
                        continue;
                    }
                    let seq = match self.server {
                        Some((server, servers)) => self.next_seq.fetch_add(1, Ordering::Relaxed) * servers + server,
                        None => self.next_seq.fetch_add(1, Ordering::Relaxed),
                    };
                    self.table.record(seq, now_us());
                    if let Some(senders) = &self.senders {
                        senders.record(seq, self.index);
                    }
                    if let Err(error) = client.send_presence(seq).await {
                        stats.disconnect(format!("{error:#}"));
                        break;
                    }
                    if self.window.contains(now) {
                        stats.sent += 1;
                        stats.expected += self.others;
                    }
                }
                _ = &mut drain => break,
            }
        }
        // Deliveries counted during the drain belong to sends in the window,
        // so the ratio compares like with like; the rate uses the window length.
        client.close().await;
        stats
    }
}
