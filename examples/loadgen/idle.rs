//! Idle capacity: N connections, R per room, heartbeats only. Measures the
//! server's memory per connection (RSS after the ramp minus before it), the
//! connect rate and the handshake times.

use std::time::Duration;

use crate::{
    common::{Common, connect_all},
    procstat::{CpuMark, Proc, RssSampler},
    report::{Report, round2, samples},
    timing::Stats,
    wire::{Client, EMPTY_UPDATE, Event},
};

#[derive(Debug, Clone, Copy)]
pub struct IdleParams {
    pub connections: usize,
    pub per_room: usize,
    /// How long the connections stay idle after the ramp.
    pub hold: Duration,
    pub heartbeat: Duration,
}

pub async fn run(common: &Common, params: IdleParams) -> Report {
    let mut report = Report::new("idle", common.target.protocol.name(), &common.label);
    report.set("connections_wanted", params.connections);
    report.set("per_room", params.per_room);
    let per_room = params.per_room.max(1);
    let rooms = params.connections.div_ceil(per_room);
    let mut totals = Stats::default();
    let docs = common.room_docs("i", rooms, &mut totals).await;
    let baseline = common.server.and_then(|p| p.rss_kib());
    let rss = common.server.map(RssSampler::start);
    let loadgen_cpu = CpuMark::now(Proc::Myself);

    let identities = common.room_identities(&docs, params.connections, per_room);
    let (clients, ramp) = connect_all(common, identities, false, &mut totals).await;
    let connected = clients.iter().filter(|c| c.is_some()).count();
    report.set("connections", connected);
    report.set("ramp_s", round2(ramp.as_secs_f64()));
    report.set(
        "connect_rate_per_s",
        round2(connected as f64 / ramp.as_secs_f64().max(1e-9)),
    );
    report.histogram("handshake", &totals.handshake);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (client, _) in clients.into_iter().flatten() {
        tasks.spawn(hold(client, params.heartbeat, stopped.clone()));
    }
    let server_cpu = common.server.map(CpuMark::now);
    tokio::time::sleep(params.hold).await;

    // Memory while every connection is idle, before any of them closes.
    if let (Some(process), Some(cpu), Some(rss)) = (common.server, &server_cpu, &rss) {
        report.resources(Some((process, cpu, rss)), &loadgen_cpu);
        if let (Some(before), Some(after)) = (baseline, process.rss_kib()) {
            report.set("server_rss_baseline_kib", before);
            if connected > 0 {
                let per_connection = after.saturating_sub(before) as f64 / connected as f64;
                report.set("rss_per_connection_kib", round2(per_connection));
            }
        }
    } else {
        report.resources(None, &loadgen_cpu);
    }
    let _ = stop.send(true);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(stats) => totals.merge(&stats),
            Err(error) => totals.error(format!("client task failed: {error}")),
        }
    }
    report.set("errors", totals.errors);
    report.set("disconnects", totals.disconnects);
    report.set("error_samples", samples(&totals.error_samples));
    report
}

/// Keep one connection open: answer sync requests, send heartbeats, notice drops.
async fn hold(
    mut client: Client,
    heartbeat: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Stats {
    let mut stats = Stats::default();
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.tick().await;
    let mut events = Vec::new();
    loop {
        tokio::select! {
            frame = client.recv() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(error)) => { stats.disconnect(format!("receive failed: {error}")); break; }
                    None => { stats.disconnect("closed by server"); break; }
                };
                client.decode(&frame, false, &mut events);
                for event in events.drain(..) {
                    match event {
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
            _ = ticker.tick() => {
                if let Err(error) = client.send_heartbeat().await {
                    stats.disconnect(format!("{error:#}"));
                    break;
                }
            }
            _ = stop.changed() => break,
        }
    }
    client.close().await;
    stats
}
