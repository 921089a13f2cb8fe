//! What a node keeps in its `data_dir` (a [`WalStore`]): its id, its highest incarnation and
//! the members it last knew (like serf's snapshot). A restarted node starts one incarnation
//! above the stored one, so its `Alive` claim beats whatever peers remember of its previous
//! life, and joins the members it knew when no seed is given or its seeds are gone.
//!
//! Keys: `node/id`, `node/incarnation` (decimal), `members/<name>` = `addr`. Writes go through
//! `spawn_blocking`: a durable write waits for an fsync.
//!
//! A save is the change since the last one, split into store batches that each fit in one WAL
//! record ([`Store::batch_bytes_max`]: 10,000 members of 128-byte names take about 1.6 MB, over
//! the 1 MiB record limit). Each batch is atomic, the save as a whole is not, and is ordered so
//! that a crash between batches is harmless: the incarnation comes first (in the first batch),
//! then the new and moved members, then the deletions of members gone, so the saved list is
//! always a superset of the old one or of the new one, never smaller than both. The next save
//! writes what a failed one left out.

use super::{NodeError, Request};
use crate::cluster::{Event, MemberState, MemberView};
use crate::identity::PersistedIdentity;
use crate::persistence::store::{Batch, Op, Store, StoreConfig, StoreError, WalStore};
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
        for (k, v) in store
            .scan_prefix(MEMBERS_PREFIX.as_bytes())
            .map_err(store_err)?
        {
            let name = String::from_utf8_lossy(&k[MEMBERS_PREFIX.len()..]).into_owned();
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
        let now = saveable(&members.lock().expect("members lock"), &me);
        let inc = incarnation.filter(|i| Some(*i) != saved_incarnation);
        let batches = save_plan(&saved, &now, inc).split(store.batch_bytes_max());
        if !batches.is_empty() {
            let s = store.clone();
            let mut mirror = std::mem::take(&mut saved);
            let wrote = tokio::task::spawn_blocking(move || {
                let r = write_all(&*s, batches, &mut mirror);
                (mirror, r)
            })
            .await;
            match wrote {
                Ok((mirror, r)) => {
                    saved = mirror;
                    match r {
                        Ok(()) => saved_incarnation = inc.or(saved_incarnation),
                        Err(e) => tracing::error!(error = %e, "saving node state failed"),
                    }
                }
                // The task panicked: next save starts from an empty mirror, rewriting everything.
                Err(e) => tracing::error!(error = %e, "saving node state failed"),
            }
        }
        if last {
            return;
        }
    }
}

/// The members worth saving: alive or suspect, not this node, at most [`SAVED_MEMBERS_MAX`].
fn saveable(members: &[MemberView], me: &str) -> BTreeMap<String, SocketAddr> {
    members
        .iter()
        .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
        .filter(|m| m.info.id.as_str() != me)
        .take(SAVED_MEMBERS_MAX)
        .map(|m| (m.info.id.as_str().to_string(), m.info.addr))
        .collect()
}

/// The change from `saved` to `now` as one batch, in the order that makes a partial write
/// harmless (see the module doc): incarnation, puts, deletes. Members that are gone stay saved
/// while `now` is empty: a node alone after a partition must not erase what it could rejoin.
fn save_plan(
    saved: &BTreeMap<String, SocketAddr>,
    now: &BTreeMap<String, SocketAddr>,
    incarnation: Option<u64>,
) -> Batch {
    let mut batch = Batch::new();
    if let Some(inc) = incarnation {
        batch = batch.put(
            PersistedIdentity::INCARNATION_KEY,
            &PersistedIdentity::encode_incarnation(inc),
        );
    }
    if now.is_empty() {
        return batch;
    }
    for (name, addr) in now.iter().filter(|(n, a)| saved.get(*n) != Some(a)) {
        batch = batch.put(member_key(name).as_bytes(), addr.to_string().as_bytes());
    }
    for name in saved.keys().filter(|n| !now.contains_key(*n)) {
        batch = batch.delete(member_key(name).as_bytes());
    }
    batch
}

fn member_key(name: &str) -> String {
    format!("{MEMBERS_PREFIX}{name}")
}

const MEMBERS_PREFIX: &str = "members/";

/// Writes `batches` in order, keeping `mirror` (the saved member list) equal to what the store
/// holds after each one; stops at the first failure.
fn write_all(
    store: &dyn Store,
    batches: Vec<Batch>,
    mirror: &mut BTreeMap<String, SocketAddr>,
) -> Result<(), StoreError> {
    for batch in batches {
        let ops = batch.ops().to_vec();
        store.write(batch)?;
        for op in ops {
            let (Op::Put { key, .. } | Op::Delete { key }) = &op;
            let Some(name) = key.strip_prefix(MEMBERS_PREFIX.as_bytes()) else {
                continue;
            };
            let name = String::from_utf8_lossy(name).into_owned();
            match &op {
                Op::Put { value, .. } => {
                    if let Some(addr) = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
                    {
                        mirror.insert(name, addr);
                    }
                }
                Op::Delete { .. } => {
                    mirror.remove(&name);
                }
            }
        }
    }
    Ok(())
}

async fn current_incarnation(requests: &mpsc::Sender<Request>) -> Option<u64> {
    let (tx, rx) = oneshot::channel();
    requests.send(Request::Stats(tx)).await.ok()?;
    rx.await.ok().map(|s| s.incarnation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Config;
    use crate::identity::{tags_len, Incarnation, NodeId, NodeInfo, Tags};

    /// `n` alive members with names of exactly `name_len` bytes and tags of `tags_bytes_max`.
    fn members(n: usize, name_len: usize) -> Vec<MemberView> {
        let max = Config::default().tags_bytes_max;
        let mut tags = Tags::new();
        tags.insert("t".into(), "v".repeat(max - 3));
        assert_eq!(tags_len(&tags), max);
        (0..n)
            .map(|i| {
                let name = format!("{i:0>name_len$}");
                let addr = SocketAddr::from(([127, 1, (i / 250) as u8, (i % 250) as u8], 17946));
                let mut info = NodeInfo::new(NodeId::new(&name).unwrap(), addr);
                info.tags = tags.clone();
                MemberView {
                    info: Arc::new(info),
                    incarnation: Incarnation(u64::MAX - 1),
                    state: MemberState::Alive,
                }
            })
            .collect()
    }

    /// Runs one save (`keep` with its stop already raised).
    async fn save_once(
        store: Arc<WalStore>,
        saved: BTreeMap<String, SocketAddr>,
        views: Vec<MemberView>,
    ) {
        let (requests, _) = mpsc::channel(1); // no driver: the incarnation is left as it is
        let (events, _) = broadcast::channel(1);
        let (stop_tx, stop) = watch::channel(true);
        let views = Arc::new(Mutex::new(views));
        keep(
            store,
            "me".into(),
            saved,
            views,
            requests,
            events.subscribe(),
            stop,
        )
        .await;
        drop(stop_tx);
    }

    #[tokio::test]
    async fn ten_thousand_members_with_long_names_are_saved_and_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let views = members(SAVED_MEMBERS_MAX, 80);
        let want: BTreeMap<String, SocketAddr> = views
            .iter()
            .map(|m| (m.info.id.as_str().to_string(), m.info.addr))
            .collect();
        let first = restore(dir.path(), "me", 0).await.unwrap();
        assert!(first.members.is_empty());
        let plan = save_plan(&BTreeMap::new(), &want, None);
        assert!(
            plan.encoded_len() > first.store.batch_bytes_max(),
            "the test must need more than one WAL record ({} bytes)",
            plan.encoded_len()
        );
        let first_incarnation = first.incarnation;
        save_once(first.store.clone(), first.members, views.clone()).await;
        drop(first.store);

        let second = restore(dir.path(), "me", 0).await.unwrap();
        assert_eq!(second.members.len(), SAVED_MEMBERS_MAX);
        assert_eq!(second.members, want);
        assert!(
            second.incarnation > first_incarnation,
            "one above the stored one"
        );

        // Half of them go, the rest move: the store follows, and a third start reads it.
        let mut next: Vec<MemberView> = views[..SAVED_MEMBERS_MAX / 2].to_vec();
        for m in &mut next {
            let mut info = (*m.info).clone();
            info.addr.set_port(17947);
            m.info = Arc::new(info);
        }
        let want: BTreeMap<String, SocketAddr> = next
            .iter()
            .map(|m| (m.info.id.as_str().to_string(), m.info.addr))
            .collect();
        save_once(second.store.clone(), second.members, next).await;
        drop(second.store);
        let third = restore(dir.path(), "me", 0).await.unwrap();
        assert_eq!(third.members, want);
    }

    #[test]
    fn a_partial_save_never_leaves_fewer_members_than_the_old_or_the_new_list() {
        let old: BTreeMap<String, SocketAddr> = (0..50)
            .map(|i| {
                (
                    format!("old-{i:03}"),
                    SocketAddr::from(([127, 0, 0, 1], 1000 + i)),
                )
            })
            .collect();
        let new: BTreeMap<String, SocketAddr> = (0..50)
            .map(|i| {
                (
                    format!("new-{i:03}"),
                    SocketAddr::from(([127, 0, 0, 2], 1000 + i)),
                )
            })
            .collect();
        let parts = save_plan(&old, &new, Some(9)).split(200);
        assert!(parts.len() > 10);
        assert!(
            matches!(&parts[0].ops()[0], Op::Put { key, .. } if key == PersistedIdentity::INCARNATION_KEY)
        );
        // Stop after each batch in turn (a crash there): what the store holds is a superset of
        // one of the two lists, and a later save completes it.
        for done in 0..=parts.len() {
            let store = crate::persistence::store::MemStore::new();
            let mut mirror = BTreeMap::new();
            write_all(
                &store,
                save_plan(&mirror, &old, None).split(200),
                &mut mirror,
            )
            .unwrap();
            write_all(&store, parts[..done].to_vec(), &mut mirror).unwrap();
            let held: BTreeMap<String, SocketAddr> = store
                .scan_prefix(MEMBERS_PREFIX.as_bytes())
                .unwrap()
                .into_iter()
                .map(|(k, v)| {
                    let name = String::from_utf8(k[MEMBERS_PREFIX.len()..].to_vec()).unwrap();
                    (name, std::str::from_utf8(&v).unwrap().parse().unwrap())
                })
                .collect();
            assert_eq!(
                held, mirror,
                "the mirror follows the store after {done} batches"
            );
            let superset =
                |l: &BTreeMap<String, SocketAddr>| l.iter().all(|(k, v)| held.get(k) == Some(v));
            assert!(superset(&old) || superset(&new), "after {done} batches");
            write_all(
                &store,
                save_plan(&mirror, &new, None).split(200),
                &mut mirror,
            )
            .unwrap();
            assert_eq!(mirror, new);
        }
    }
}
