//! The state store: a property test against a `BTreeMap` model (puts, deletes, batches,
//! snapshots, reopens), snapshots that let the WAL drop its prefix, damaged snapshots and missing
//! records refused, concurrent writers applied in log order, a full disk, and the in-memory twin.

mod harness;

use distributed_core::persistence::store::{
    Batch, Limits, MemStore, Store, StoreConfig, StoreError, WalStore,
};
use distributed_core::persistence::wal::{Durability, WalConfig};
use harness::{faulty_fs, modes_under, wal_segments};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

fn config(snapshot_every: u64, durability: Durability) -> StoreConfig {
    StoreConfig {
        wal: WalConfig {
            segment_bytes: 4096,
            record_bytes_max: 2048,
            durability,
        },
        limits: Limits {
            key_bytes_max: 64,
            value_bytes_max: 256,
        },
        snapshot_every,
    }
}

fn open(dir: &Path, snapshot_every: u64) -> WalStore {
    WalStore::open(dir, config(snapshot_every, Durability::Never)).expect("open store")
}

fn dump(s: &dyn Store) -> BTreeMap<Vec<u8>, Vec<u8>> {
    s.scan_prefix(b"").unwrap().into_iter().collect()
}

#[derive(Debug, Clone)]
enum Step {
    Put(u8, Vec<u8>),
    Delete(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Snapshot,
    Reopen,
}

fn key(k: u8) -> Vec<u8> {
    format!("k/{}/{k}", k % 4).into_bytes()
}

fn step() -> impl Strategy<Value = Step> {
    let value = prop::collection::vec(any::<u8>(), 0..200);
    let op = (0u8..24, prop::option::of(value.clone()));
    prop_oneof![
        6 => (0u8..24, value).prop_map(|(k, v)| Step::Put(k, v)),
        2 => (0u8..24).prop_map(Step::Delete),
        2 => prop::collection::vec(op, 0..6).prop_map(Step::Batch),
        1 => Just(Step::Snapshot),
        1 => Just(Step::Reopen),
    ]
}

fn apply(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, store: &dyn Store, step: &Step) {
    match step {
        Step::Put(k, v) => {
            store.put(&key(*k), v).unwrap();
            model.insert(key(*k), v.clone());
        }
        Step::Delete(k) => {
            store.delete(&key(*k)).unwrap();
            model.remove(&key(*k));
        }
        Step::Batch(ops) => {
            let mut b = Batch::new();
            for (k, v) in ops {
                b = match v {
                    Some(v) => b.put(&key(*k), v),
                    None => b.delete(&key(*k)),
                };
            }
            store.write(b).unwrap();
            for (k, v) in ops {
                match v {
                    Some(v) => model.insert(key(*k), v.clone()),
                    None => model.remove(&key(*k)),
                };
            }
        }
        Step::Snapshot => store.snapshot().unwrap(),
        Step::Reopen => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// proptest prints the failing (shrunk) sequence; replay it by pasting it into a test.
    #[test]
    fn random_operations_match_a_btreemap(
        steps in prop::collection::vec(step(), 1..80),
        snapshot_every in prop::sample::select(vec![0u64, 3, 10]),
    ) {
        let d = tempfile::tempdir().unwrap();
        let mut model = BTreeMap::new();
        let mem = MemStore::with_limits(config(0, Durability::Never).limits);
        let mut store = open(d.path(), snapshot_every);
        for (i, s) in steps.iter().enumerate() {
            if let Step::Reopen = s {
                drop(store);
                store = open(d.path(), snapshot_every);
            }
            apply(&mut model, &store, s);
            apply(&mut BTreeMap::new(), &mem, s);
            prop_assert_eq!(&dump(&store), &model, "after step {} {:?}", i, s);
            prop_assert_eq!(&dump(&mem), &model);
            for p in [&b"k/1/"[..], b"k/3/1", b"x"] {
                let want: Vec<_> = model
                    .iter()
                    .filter(|(k, _)| k.starts_with(p))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                prop_assert_eq!(store.scan_prefix(p).unwrap(), want);
            }
        }
        drop(store);
        prop_assert_eq!(&dump(&open(d.path(), snapshot_every)), &model);
    }
}

#[test]
fn a_snapshot_lets_the_wal_drop_its_prefix_and_replay_starts_after_it() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path(), 0);
    for i in 0..800u32 {
        s.put(format!("key{}", i % 50).as_bytes(), &i.to_le_bytes())
            .unwrap();
    }
    let before = wal_segments(&d.path().join("wal"));
    assert!(before > 5, "{before}");
    s.snapshot().unwrap();
    assert_eq!(s.snapshot_index(), 800);
    assert!(s.wal().first_index() > 700, "{}", s.wal().first_index());
    assert!(wal_segments(&d.path().join("wal")) < 3);
    for i in 800..810u32 {
        s.put(format!("key{}", i % 50).as_bytes(), &i.to_le_bytes())
            .unwrap();
    }
    s.delete(b"key7").unwrap();
    let want = dump(&s);
    drop(s);
    let s = open(d.path(), 0);
    assert_eq!(dump(&s), want);
    assert_eq!(s.len(), 49);
    assert_eq!(s.get(b"key9").unwrap(), Some(809u32.to_le_bytes().to_vec()));
}

fn snapshot_file(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "snap"))
        .expect("a snapshot")
}

#[test]
fn a_damaged_snapshot_or_missing_records_refuse_to_open() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path(), 0);
    for i in 0..100u32 {
        s.put(&i.to_le_bytes(), b"v").unwrap();
    }
    s.snapshot().unwrap();
    drop(s);
    let snap = snapshot_file(d.path());
    let good = std::fs::read(&snap).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x10;
    std::fs::write(&snap, &bad).unwrap();
    match WalStore::open(d.path(), config(0, Durability::Never)) {
        Err(StoreError::CorruptSnapshot { path, .. }) => assert_eq!(path, snap),
        other => panic!("damaged snapshot accepted: {other:?}"),
    }
    // Without the snapshot, the WAL no longer starts at 1: records are missing.
    std::fs::remove_file(&snap).unwrap();
    match WalStore::open(d.path(), config(0, Durability::Never)) {
        Err(StoreError::MissingRecords {
            snapshot: 0,
            wal_first,
        }) => assert!(wal_first > 1),
        other => panic!("missing records accepted: {other:?}"),
    }
}

#[test]
fn concurrent_writers_are_applied_in_log_order() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(WalStore::open(d.path(), config(40, Durability::Always)).unwrap());
    let hs: Vec<_> = (0..8u8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..60u8 {
                    let b = Batch::new().put(b"hot", &[t, i]).put(&[b'w', t], &[i]);
                    s.write(b).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let live = dump(&*s);
    assert_eq!(live.len(), 9);
    drop(s);
    // Replay applies the log in index order: the in-memory result must be the same.
    let again = WalStore::open(d.path(), config(40, Durability::Always)).unwrap();
    assert_eq!(dump(&again), live);
}

#[test]
fn disk_full_keeps_every_acknowledged_write() {
    for budget in (4096..12_000).step_by(1499) {
        let d = tempfile::tempdir().unwrap();
        let (plan, fs) = faulty_fs();
        plan.set_write_budget(budget);
        let s = WalStore::open_with_fs(d.path(), config(25, Durability::Always), fs).unwrap();
        let mut acked = BTreeMap::new();
        for i in 0..1000u32 {
            let (k, v) = (format!("k{}", i % 30).into_bytes(), vec![i as u8; 50]);
            match s.put(&k, &v) {
                Ok(()) => {
                    acked.insert(k, v);
                }
                Err(e) => {
                    assert!(matches!(e, StoreError::Wal(_)), "{e}");
                    break;
                }
            }
        }
        assert!(
            s.put(b"after", b"x").is_err(),
            "budget {budget}: poisoned store wrote"
        );
        drop(s);
        let s = WalStore::open(d.path(), config(25, Durability::Always)).unwrap();
        let got = dump(&s);
        // Only acknowledged writes, plus at most the one in flight at the failure.
        let differing = acked
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .count();
        assert!(
            differing <= 1,
            "budget {budget}: {differing} acknowledged writes lost"
        );
        assert!(got.len() >= acked.len(), "budget {budget}");
    }
}

#[test]
fn limits_are_enforced_alike_by_both_stores() {
    let d = tempfile::tempdir().unwrap();
    let wal = open(d.path(), 0);
    let mem = MemStore::with_limits(config(0, Durability::Never).limits);
    for s in [&wal as &dyn Store, &mem] {
        assert!(matches!(s.put(b"", b"v"), Err(StoreError::EmptyKey)));
        assert!(matches!(
            s.put(&[1; 65], b"v"),
            Err(StoreError::TooLarge { what: "key", .. })
        ));
        let big = vec![0; 257];
        assert!(matches!(
            s.put(b"k", &big),
            Err(StoreError::TooLarge { what: "value", .. })
        ));
        let ok = Batch::new().put(b"a", b"1").put(b"bad", &big);
        assert!(s.write(ok).is_err());
        assert_eq!(
            s.get(b"a").unwrap(),
            None,
            "a refused batch must change nothing"
        );
    }
    let huge = (0..20u8).fold(Batch::new(), |b, i| b.put(&[i + 1], &[0; 200]));
    assert!(matches!(
        wal.write(huge),
        Err(StoreError::TooLarge { what: "batch", .. })
    ));
}

#[test]
fn store_files_are_private_and_new_directories_are_flushed_into_their_parents() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("a").join("b").join("data");
    let (plan, fs) = faulty_fs();
    let store = WalStore::open_with_fs(&dir, config(4, Durability::Always), fs).unwrap();
    for i in 0..10u8 {
        store.put(&[b'k', i], &[i; 100]).unwrap();
    }
    store.snapshot().unwrap();
    store.put(b"last", b"1").unwrap();
    let (dirs, files) = modes_under(&dir);
    assert!(files.len() >= 3, "segments, LOCK, a snapshot: {files:?}");
    for (p, mode) in &dirs {
        assert_eq!(*mode, 0o700, "{} is {mode:o}", p.display());
    }
    for (p, mode) in &files {
        assert_eq!(*mode, 0o600, "{} is {mode:o}", p.display());
    }
    // Each directory the store made (a, a/b, a/b/data, data/wal) is flushed into its parent.
    let synced = plan.synced_dirs();
    let a = base.path().join("a");
    for parent in [
        base.path().to_path_buf(),
        a.clone(),
        a.join("b"),
        dir.clone(),
    ] {
        assert!(
            synced.contains(&parent),
            "{} not flushed: {synced:?}",
            parent.display()
        );
    }
}

#[test]
fn an_existing_data_dir_open_to_others_is_reported_and_left_as_it_is() {
    use distributed_core::persistence::wal::fs::{make_private_dir, OsFs};
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let report = make_private_dir(&OsFs, &dir).unwrap();
    assert_eq!((report.created.len(), report.loose_mode), (0, Some(0o750)));
    let store = open(&dir, 0);
    store.put(b"k", b"v").unwrap();
    let (dirs, files) = modes_under(&dir);
    assert_eq!(dirs[0].1, 0o750, "the operator's mode is kept");
    assert!(dirs[1..].iter().all(|(_, m)| *m == 0o700), "{dirs:?}");
    assert!(files.iter().all(|(_, m)| *m == 0o600), "{files:?}");
    let private = base.path().join("private");
    let report = make_private_dir(&OsFs, &private).unwrap();
    assert_eq!(
        (report.created, report.loose_mode),
        (vec![private.clone()], None)
    );
    assert_eq!(make_private_dir(&OsFs, &private).unwrap().loose_mode, None);
}
