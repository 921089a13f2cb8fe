//! `dcore bench wal`: append N records from W concurrent writers and report throughput, flushes
//! and latency. With `--keep` the log stays in DIR (for `dcore wal verify`).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use distributed_core::persistence::wal::{Durability, RecordType, Wal, WalConfig};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Flags of `dcore bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Append records to a write-ahead log from concurrent writers.
    Wal(BenchWalArgs),
}

/// Flags of `dcore bench wal`.
#[derive(Debug, Args)]
#[command(after_help = "\
DIR must be new or empty (the bench refuses a directory that holds a log). Without --keep the
directory is removed afterwards. Each payload starts with the writer number and its sequence
number (16 bytes, little-endian), then filler.

Example: dcore bench wal --dir /tmp/walbench --writers 8 --records 20000 --json")]
pub struct BenchWalArgs {
    /// Log directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Concurrent writer threads.
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// Records appended in all, shared among the writers.
    #[arg(long, default_value_t = 10_000)]
    pub records: u64,
    /// Payload bytes per record (at least 16).
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// always, interval or never.
    #[arg(long, default_value = "always")]
    pub durability: String,
    /// Flush interval for --durability interval.
    #[arg(long, default_value_t = 10)]
    pub interval_ms: u64,
    /// Segment size in bytes.
    #[arg(long, default_value_t = WalConfig::default().segment_bytes)]
    pub segment_bytes: u64,
    /// Leave the log in DIR.
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Test hook: append to whatever log DIR holds and print "index writer seq" on stdout as
    /// each append is acknowledged (the crash test kills the process and checks them all).
    #[arg(long, hide = true)]
    pub print_acks: bool,
}

/// Runs `dcore bench ...`.
pub fn run(args: BenchArgs) -> anyhow::Result<i32> {
    match args.command {
        BenchCommand::Wal(a) => wal(a),
    }
}

impl BenchWalArgs {
    fn config(&self) -> anyhow::Result<WalConfig> {
        let durability = match self.durability.as_str() {
            "always" => Durability::Always,
            "never" => Durability::Never,
            "interval" => Durability::Interval(Duration::from_millis(self.interval_ms)),
            other => bail!("--durability must be always, interval or never, not '{other}'"),
        };
        if self.writers == 0 || self.writers > 4096 {
            bail!("--writers must be from 1 to 4096");
        }
        if self.records == 0 {
            bail!("--records must be at least 1");
        }
        if self.record_size < 16 {
            bail!("--record-size must be at least 16 (writer and sequence number)");
        }
        let config = WalConfig {
            segment_bytes: self.segment_bytes,
            record_bytes_max: u32::try_from(self.record_size).context("--record-size")?,
            durability,
        };
        config.validate()?;
        Ok(config)
    }
}

fn holds_files(dir: &std::path::Path) -> anyhow::Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .next()
        .is_some())
}

fn wal(a: BenchWalArgs) -> anyhow::Result<i32> {
    let config = a.config()?;
    if !a.print_acks && holds_files(&a.dir)? {
        bail!(
            "{} is not empty: give a new or empty directory",
            a.dir.display()
        );
    }
    let log = Arc::new(Wal::open(&a.dir, config)?);
    let started = Instant::now();
    let mut lat_us = run_writers(&log, &a)?;
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let stats = log.stats();
    drop(log);
    lat_us.sort_unstable();
    let pct = |p: usize| lat_us[(lat_us.len() * p / 100).min(lat_us.len() - 1)];
    let n = a.records as f64;
    let out = json!({
        "writers": a.writers,
        "records": a.records,
        "record_size": a.record_size,
        "durability": a.durability,
        "appends_per_s": (n / elapsed).round(),
        "fsyncs_per_s": (stats.fsyncs as f64 / elapsed).round(),
        "mb_per_s": ((n * a.record_size as f64 / 1e6 / elapsed) * 10.0).round() / 10.0,
        "disk_mb_per_s": ((stats.bytes as f64 / 1e6 / elapsed) * 10.0).round() / 10.0,
        "p50_us": pct(50),
        "p99_us": pct(99),
        "fsyncs": stats.fsyncs,
        "batches": stats.batches,
        "segments_created": stats.segments_created,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
    });
    if !a.keep && !a.print_acks {
        std::fs::remove_dir_all(&a.dir).with_context(|| format!("removing {}", a.dir.display()))?;
    }
    if a.print_acks {
        return Ok(0);
    }
    if a.json {
        println!("{out}");
    } else {
        for (k, v) in out.as_object().expect("an object") {
            println!("{k:>18}: {v}");
        }
    }
    Ok(0)
}

/// Runs the writers; returns every append's latency in microseconds.
fn run_writers(log: &Arc<Wal>, a: &BenchWalArgs) -> anyhow::Result<Vec<u32>> {
    let w = a.writers as u64;
    let handles: Vec<_> = (0..w)
        .map(|id| {
            let log = log.clone();
            let count = a.records / w + u64::from(id < a.records % w);
            let (size, print) = (a.record_size, a.print_acks);
            std::thread::spawn(move || writer(&log, id, count, size, print))
        })
        .collect();
    let mut all = Vec::with_capacity(a.records as usize);
    for h in handles {
        let lat = h
            .join()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        all.extend(lat);
    }
    Ok(all)
}

fn writer(log: &Wal, id: u64, count: u64, size: usize, print: bool) -> anyhow::Result<Vec<u32>> {
    let mut lat = Vec::with_capacity(count as usize);
    let mut payload = vec![0u8; size];
    for seq in 0..count {
        fill_payload(&mut payload, id, seq);
        let t = Instant::now();
        let index = log.append(RecordType::DATA, &payload)?;
        lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
        if print {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{index} {id} {seq}")?;
            out.flush()?;
        }
    }
    Ok(lat)
}

/// The payload of writer `id`'s record `seq`: both numbers, then a filler byte derived from them
/// (so a test can check every byte).
pub fn fill_payload(buf: &mut [u8], id: u64, seq: u64) {
    buf[0..8].copy_from_slice(&id.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    let filler = (id.wrapping_mul(31).wrapping_add(seq) % 251) as u8;
    buf[16..].fill(filler);
}
