//! Which document channels this instance listens to: one Redis SUBSCRIBE per
//! document while its room is open here, on the one pub/sub connection of
//! the subscriber. An instance then receives (and decodes) only the events
//! of documents it holds, so its Redis traffic and work grow with its own
//! share of the cluster, not with the whole cluster's.
//!
//! A room subscribes when its document starts loading (before the storage
//! read, so an update committed after the read was heard), and is marked
//! unwanted when it unloads. Unsubscribing is lazy: the first message that
//! arrives on an unwanted channel unsubscribes it (a channel nobody
//! publishes on costs nothing), and re-subscribes if the room came back
//! meanwhile, so a reopen racing an unsubscribe never ends deaf. After a
//! reconnect the subscriber subscribes every wanted channel again.

use std::{collections::HashSet, sync::Mutex, time::Duration};

use redis::aio::PubSubSink;

/// How long a room's load waits for its SUBSCRIBE to be confirmed.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub(crate) struct Subscriptions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Channels of the rooms open here.
    wanted: HashSet<String>,
    /// The subscriber's sink, while it is connected.
    sink: Option<PubSubSink>,
}

impl Subscriptions {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Want `channel` and, while connected, subscribe it (confirmed).
    pub(crate) async fn want(&self, channel: String) {
        let sink = {
            let mut inner = self.inner();
            inner.wanted.insert(channel.clone());
            inner.sink.clone()
        };
        if let Some(mut sink) = sink {
            // On failure the subscriber is reconnecting and subscribes it then.
            let _ = tokio::time::timeout(SUBSCRIBE_WAIT, sink.subscribe(&channel)).await;
        }
    }

    /// `channel`'s room unloaded: no longer wanted.
    pub(crate) fn unwant(&self, channel: &str) {
        self.inner().wanted.remove(channel);
    }

    pub(crate) fn is_wanted(&self, channel: &str) -> bool {
        self.inner().wanted.contains(channel)
    }

    /// A (re)connected subscriber: subscribe every wanted channel, then hand
    /// the sink to rooms that open later. Returns false if Redis refused.
    pub(crate) async fn connected(&self, mut sink: PubSubSink) -> bool {
        let wanted: Vec<String> = self.inner().wanted.iter().cloned().collect();
        for chunk in wanted.chunks(500) {
            if sink.subscribe(chunk).await.is_err() {
                return false;
            }
        }
        // Channels wanted while the list above was subscribing.
        let subscribed: HashSet<&String> = wanted.iter().collect();
        let late: Vec<String> = {
            let mut inner = self.inner();
            inner.sink = Some(sink.clone());
            inner
                .wanted
                .iter()
                .filter(|c| !subscribed.contains(c))
                .cloned()
                .collect()
        };
        for channel in late {
            let _ = sink.subscribe(&channel).await;
        }
        true
    }

    /// The subscriber lost its connection.
    pub(crate) fn disconnected(&self) {
        self.inner().sink = None;
    }

    /// A message came on `channel`, which is no longer wanted: unsubscribe,
    /// and subscribe again if its room reopened meanwhile.
    pub(crate) async fn drop_unwanted(&self, channel: &str) {
        let Some(mut sink) = self.inner().sink.clone() else {
            return;
        };
        let _ = sink.unsubscribe(channel).await;
        if self.is_wanted(channel) {
            let _ = sink.subscribe(channel).await;
        }
    }
}
