//! What a node keeps in its `data_dir` (a [`WalStore`]): its id, its highest incarnation and
//! the members it last knew (like serf's snapshot). A restarted node starts one incarnation
//! above the stored one, so its `Alive` claim beats whatever peers remember of its previous
//! life, and joins the members it knew when no seed is given or its seeds are gone.
//!
//! Keys: `node/id`, `node/incarnation` (decimal), `members/<name>` = `addr`. Writes go through
//! `spawn_blocking`: a durable write waits for an fsync.

use super::{NodeError, Request};
use crate::cluster::{Event, MemberState, MemberView};
use crate::identity::PersistedIdentity;
use crate::persistence::store::{Batch, Store, StoreConfig, WalStore};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// How often the member list and incarnation are saved (also on shutdown and on refutation).
pub const SAVE_INTERVAL: Duration = Duration::from_secs(10);
/// Members saved at most (the rest are found again through them).
pub const SAVED_MEMBERS_MAX: usize = 10_000;

/// What a data directory held at start.
pub(crate) struct Restored {
    pub store: Arc<WalStore>,
    /// The incarnation to start at: one above the stored one (or the configured one).
    pub incarnation: u64,
    /// Members known before, by name.
    pub members: BTreeMap<String, SocketAddr>,
}

fn store_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::DataDir(e.to_string())
}

/// Opens (or creates) the store in `dir` for node `name`, and bumps the stored incarnation
/// before the node says anything.
pub(crate) async fn restore(
    dir: &Path,
    name: &str,
    configured: u64,
) -> Result<Restored, NodeError> {
    let dir = dir.to_path_buf();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let mut config = StoreConfig::default();
        config.wal.segment_bytes = 8 << 20;
        let store = WalStore::open(&dir, config).map_err(store_err)?;
        let stored_id = store.get(PersistedIdentity::ID_KEY).map_err(store_err)?;
        let stored_incarnation = store
            .get(PersistedIdentity::INCARNATION_KEY)
            .map_err(store_err)?;
        let me = PersistedIdentity::resume(
            &name,
            stored_id.as_deref(),
            stored_incarnation.as_deref(),
            configured,
        )
        .map_err(|e| NodeError::DataDir(format!("{} {e}", dir.display())))?;
        let mut members = BTreeMap::new();
        for (k, v) in store.scan_prefix(b"members/").map_err(store_err)? {
            let name = String::from_utf8_lossy(&k["members/".len()..]).into_owned();
            if let Some(addr) = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()) {
                members.insert(name, addr);
            }
        }
        store
            .write(
                Batch::new()
                    .put(PersistedIdentity::ID_KEY, name.as_bytes())
                    .put(
                        PersistedIdentity::INCARNATION_KEY,
                        &PersistedIdentity::encode_incarnation(me.incarnation),
                    ),
            )
            .map_err(store_err)?;
        Ok(Restored {
            store: Arc::new(store),
            incarnation: me.incarnation,
            members,
        })
    })
    .await
    .map_err(|e| NodeError::DataDir(format!("store task: {e}")))?
}

/// Keeps the store up to date until `stop`, then saves once more.
pub(crate) async fn keep(
    store: Arc<dyn Store>,
    me: String,
    mut saved: BTreeMap<String, SocketAddr>,
    members: Arc<Mutex<Vec<MemberView>>>,
    requests: mpsc::Sender<Request>,
    mut events: broadcast::Receiver<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let mut saved_incarnation = None;
    let mut tick = tokio::time::interval(SAVE_INTERVAL);
    loop {
        let last = tokio::select! {
            _ = stop.wait_for(|v| *v) => true,
            _ = tick.tick() => false,
            e = events.recv() => match e {
                Ok(Event::Refuted { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => false,
                Ok(_) => continue,
                Err(_) => true,
            },
        };
        let incarnation = current_incarnation(&requests).await;
        let now: BTreeMap<String, SocketAddr> = members
            .lock()
            .expect("members lock")
            .iter()
            .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .filter(|m| m.info.id.as_str() != me)
            .take(SAVED_MEMBERS_MAX)
            .map(|m| (m.info.id.as_str().to_string(), m.info.addr))
            .collect();
        let mut batch = Batch::new();
        if let Some(inc) = incarnation.filter(|i| Some(*i) != saved_incarnation) {
            batch = batch.put(
                PersistedIdentity::INCARNATION_KEY,
                &PersistedIdentity::encode_incarnation(inc),
            );
        }
        // Members that are gone stay saved until a newer list has someone else: an empty list
        // (a node alone after a partition) must not erase what it could rejoin.
        if now != saved && !now.is_empty() {
            for name in saved.keys().filter(|n| !now.contains_key(*n)) {
                batch = batch.delete(format!("members/{name}").as_bytes());
            }
            for (name, addr) in now.iter().filter(|(n, a)| saved.get(*n) != Some(a)) {
                batch = batch.put(
                    format!("members/{name}").as_bytes(),
                    addr.to_string().as_bytes(),
                );
            }
        }
        if !batch.is_empty() {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.write(batch)).await {
                Ok(Ok(())) => {
                    saved_incarnation = incarnation.or(saved_incarnation);
                    if !now.is_empty() {
                        saved = now;
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "saving node state failed"),
                Err(e) => tracing::error!(error = %e, "saving node state failed"),
            }
        }
        if last {
            return;
        }
    }
}

async fn current_incarnation(requests: &mpsc::Sender<Request>) -> Option<u64> {
    let (tx, rx) = oneshot::channel();
    requests.send(Request::Stats(tx)).await.ok()?;
    rx.await.ok().map(|s| s.incarnation)
}
