//! Join storm: one document with a large history (about 1 MB of updates),
//! then many clients connecting within a short window, each syncing the
//! whole document. Measures the time until 99% of them hold it all.
//!
//! A seeder writes the history (paced under tandem's per-connection rate
//! limit) and waits until the server has it all (JSON: every ack, so it is
//! durable; binary: a sync step 1 / 2 round trip, answered after the earlier
//! updates). With `cold_wait` the seeder then leaves and the storm starts
//! that much later, so a server that unloads idle documents (tandem, with a
//! short room grace period) must load it from storage for the first joiner.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use yrs::{
    Doc, ReadTxn, StateVector, Text, Transact, Update,
    updates::{decoder::Decode, encoder::Encode},
};

use crate::{
    common::{Common, HANDSHAKE_LIMIT},
    procstat::{CpuMark, Proc, RssSampler},
    report::{Report, round2, samples},
    timing::{Stats, histogram, record},
    wire::{Client, Event, Protocol},
};

#[derive(Debug, Clone, Copy)]
pub struct StormParams {
    pub clients: usize,
    /// Joins are spread evenly over this window.
    pub window: Duration,
    pub history_bytes: usize,
    pub update_bytes: usize,
    /// Seeder leaves, then wait this long before the storm (0: stay, warm).
    pub cold_wait: Duration,
    /// Give up on joiners not synced after this long.
    pub timeout: Duration,
}

/// Updates per second the seeder sends once tandem's burst (200) is spent.
const SEED_RATE: f64 = 90.0;
const SEED_BURST: usize = 150;

pub async fn run(common: &Common, params: StormParams) -> Report {
    let mut report = Report::new("joinstorm", common.target.protocol.name(), &common.label);
    report.set("clients", params.clients);
    report.set("window_s", params.window.as_secs_f64());
    report.set("history_bytes", params.history_bytes);
    report.set("cold", !params.cold_wait.is_zero());
    let mut totals = Stats::default();
    let doc_name = common.doc("s", 0);
    if let Err(error) = common.create_docs(std::slice::from_ref(&doc_name)).await {
        totals.error(format!("{error:#}"));
    }

    let seeded = match seed(common, doc_name.clone(), params).await {
        Ok(seeded) => seeded,
        Err(error) => {
            totals.error(format!("seeding failed: {error:#}"));
            report.set("errors", totals.errors);
            report.set("error_samples", samples(&totals.error_samples));
            return report;
        }
    };
    report.set("history_updates", seeded.updates);
    report.set("seed_s", round2(seeded.elapsed.as_secs_f64()));
    let target_sv = Arc::new(seeded.state_vector);
    if let Some(seeder) = seeded.client {
        if !params.cold_wait.is_zero() {
            seeder.close().await;
            tokio::time::sleep(params.cold_wait).await;
            report.set("seeder", "left before the storm");
        } else {
            // Keep it connected (and reading) so the document stays warm.
            tokio::spawn(drain(
                seeder,
                params.timeout + params.window + Duration::from_secs(5),
            ));
            report.set("seeder", "connected during the storm");
        }
    }

    let rss = common.server.map(RssSampler::start);
    let server_cpu = common.server.map(CpuMark::now);
    let loadgen_cpu = CpuMark::now(Proc::Myself);
    let storm_start = Instant::now();
    // Each joiner reports as soon as it is synced, then holds its connection
    // until released, so the server carries all of them at once (that is
    // the peak we measure).
    let (release, released) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..params.clients {
        let at = storm_start + params.window.mul_f64(index as f64 / params.clients as f64);
        let identity = common.identity(doc_name.clone(), index + 1);
        let (target, target_sv) = (common.target.clone(), target_sv.clone());
        let (mut released, done_tx) = (released.clone(), done_tx.clone());
        let timeout = params.timeout;
        tasks.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let started = Instant::now();
            match join(&target, identity, &target_sv, timeout).await {
                Ok(client) => {
                    let finished = Instant::now();
                    let _ = done_tx.send(Ok((finished - storm_start, finished - started)));
                    let _ = released.wait_for(|go| *go).await;
                    client.close().await;
                }
                Err(error) => {
                    let _ = done_tx.send(Err(format!("{error:#}")));
                }
            }
        });
    }
    drop(done_tx);

    let mut finish_times = Vec::new();
    let mut own_times = histogram();
    let deadline = storm_start + params.window + params.timeout;
    let mut reported = 0;
    while reported < params.clients {
        match tokio::time::timeout_at(deadline.into(), done_rx.recv()).await {
            Ok(Some(Ok((since_storm, own)))) => {
                finish_times.push(since_storm);
                record(&mut own_times, own.as_micros() as u64);
            }
            Ok(Some(Err(error))) => totals.error(error),
            Ok(None) => break,
            Err(_) => {
                totals.error(format!(
                    "{} joiners not synced in time",
                    params.clients - reported
                ));
                break;
            }
        }
        reported += 1;
    }
    // Everyone is connected (or failed): resources now, then release.
    if let (Some(process), Some(cpu), Some(rss)) = (common.server, &server_cpu, &rss) {
        report.resources(Some((process, cpu, rss)), &loadgen_cpu);
    } else {
        report.resources(None, &loadgen_cpu);
    }
    let _ = release.send(true);
    // Closing takes a moment per client; do not wait forever for stragglers.
    let closing = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    finish_times.sort();
    let synced = finish_times.len();
    report.set("synced", synced);
    let quantile_time = |q: f64| {
        let needed = ((params.clients as f64) * q).ceil() as usize;
        (needed >= 1 && needed <= synced).then(|| round2(finish_times[needed - 1].as_secs_f64() * 1000.0))
    };
    report.set("time_to_50pct_ms", quantile_time(0.50));
    report.set("time_to_99pct_ms", quantile_time(0.99));
    report.set("time_to_all_ms", quantile_time(1.0));
    report.histogram("join", &own_times);
    report.set("errors", totals.errors);
    report.set("error_samples", samples(&totals.error_samples));
    report
}

struct Seeded {
    client: Option<Client>,
    state_vector: StateVector,
    updates: usize,
    elapsed: Duration,
}

async fn seed(common: &Common, doc_name: Arc<str>, params: StormParams) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let identity = common.identity(doc_name, 0);
    let (mut client, handshake) =
        Client::connect(&common.target, identity.clone(), true, HANDSHAKE_LIMIT).await?;
    let doc = Doc::with_client_id(identity.awareness_id);
    let text = doc.get_or_insert_text("content");
    if let Some(step2) = handshake.step2 {
        doc.transact_mut().apply_update(Update::decode_v1(&step2)?)?;
    }
    let updates = params.history_bytes.div_ceil(params.update_bytes.max(1));
    let chunk: String = (0..params.update_bytes)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let json = client.protocol == Protocol::TandemJson;
    for index in 0..updates {
        if index >= SEED_BURST {
            tokio::time::sleep(Duration::from_secs_f64(1.0 / SEED_RATE)).await;
        }
        let update = {
            let mut txn = doc.transact_mut();
            let end = text.len(&txn);
            text.insert(&mut txn, end, &chunk);
            txn.encode_update_v1()
        };
        client.send_update(&update, json.then_some(index as u64)).await?;
    }
    // Wait until the server has everything: acks (JSON, durable), or the
    // answer to a sync step 1 sent after the updates (binary).
    client
        .send_step1(&doc.transact().state_vector().encode_v1())
        .await?;
    let mut acked = 0;
    let mut answered = false;
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(answered && (!json || acked >= updates)) {
        let frame = tokio::time::timeout_at(deadline.into(), client.recv())
            .await
            .map_err(|_| anyhow::anyhow!("the server did not confirm the history in time ({acked} acks)"))?;
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => anyhow::bail!("seeder connection failed: {error}"),
            None => anyhow::bail!("seeder connection closed"),
        };
        client.decode(&frame, false, &mut events);
        for event in events.drain(..) {
            match event {
                Event::Ack(_) => acked += 1,
                Event::Step2(_) => answered = true,
                Event::Error(error) => anyhow::bail!("server error while seeding: {error}"),
                _ => {}
            }
        }
    }
    let state_vector = doc.transact().state_vector();
    Ok(Seeded {
        client: Some(client),
        state_vector,
        updates,
        elapsed: started.elapsed(),
    })
}

/// Connect and sync; done when the client holds at least `target` (the
/// seeded state). Decoding the sync step 2 is enough in the usual case;
/// later updates are applied to a local document only if it was not.
async fn join(
    target: &crate::wire::Target,
    identity: crate::wire::Identity,
    target_sv: &StateVector,
    timeout: Duration,
) -> anyhow::Result<Client> {
    let (mut client, handshake) = Client::connect(target, identity, true, timeout).await?;
    let covers = |sv: &StateVector| target_sv.iter().all(|(client, clock)| sv.get(client) >= *clock);
    if let Some(step2) = &handshake.step2
        && covers(&Update::decode_v1(step2)?.state_vector())
    {
        return Ok(client);
    }
    let doc = Doc::new();
    if let Some(step2) = handshake.step2 {
        doc.transact_mut().apply_update(Update::decode_v1(&step2)?)?;
    }
    let deadline = Instant::now() + timeout;
    let mut events = Vec::new();
    while !covers(&doc.transact().state_vector()) {
        let frame = tokio::time::timeout_at(deadline.into(), client.recv())
            .await
            .map_err(|_| anyhow::anyhow!("not synced in time"))?;
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => anyhow::bail!("connection failed: {error}"),
            None => anyhow::bail!("connection closed"),
        };
        client.decode(&frame, false, &mut events);
        for event in events.drain(..) {
            if let Event::Update(update) | Event::Step2(update) = event {
                doc.transact_mut().apply_update(Update::decode_v1(&update)?)?;
            }
        }
    }
    Ok(client)
}

/// Keep a client reading (so the server never sees it as slow) for `for_how_long`.
async fn drain(mut client: Client, for_how_long: Duration) {
    let _ = tokio::time::timeout(for_how_long, async {
        while let Some(Ok(_)) = client.recv().await {}
    })
    .await;
    client.close().await;
}
