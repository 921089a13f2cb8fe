//! `dcore wal inspect|verify|repair DIR`: look at a log, check it, and cut it at its first bad
//! record when asked.

use anyhow::Context;
use clap::{Args, Subcommand};
use distributed_core::persistence::wal::fs::OsFs;
use distributed_core::persistence::wal::{self, Problem, ScanReport};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Flags of `dcore wal`.
#[derive(Debug, Args)]
pub struct WalArgs {
    /// What to do with the log.
    #[command(subcommand)]
    pub command: WalCommand,
}

/// The `dcore wal` commands.
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Print the segments and records of the log in DIR (read-only).
    Inspect(InspectArgs),
    /// Verify every record of the log in DIR (read-only); exit 1 and name the first bad record.
    Verify(VerifyArgs),
    /// Truncate the log in DIR at its first bad record, keeping a copy of what changes.
    Repair(RepairArgs),
}

/// Flags of `dcore wal inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The log directory.
    pub dir: PathBuf,
    /// Print at most this many records (segments are always all printed).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `dcore wal verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The log directory.
    pub dir: PathBuf,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `dcore wal repair`.
#[derive(Debug, Args)]
#[command(after_help = "\
The segment with the first bad record and every later segment are copied to --backup-dir
(default DIR/repair-<unix seconds>/) before anything changes. Then the records from the bad one
on are zeroed and the later segments removed. Refuses a log that a process has open.")]
pub struct RepairArgs {
    /// The log directory.
    pub dir: PathBuf,
    /// Where to copy the segments that change.
    #[arg(long)]
    pub backup_dir: Option<PathBuf>,
    /// Only say what would be done.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `dcore wal ...`.
pub fn run(args: WalArgs) -> anyhow::Result<i32> {
    match args.command {
        WalCommand::Inspect(a) => inspect(a),
        WalCommand::Verify(a) => verify(a),
        WalCommand::Repair(a) => repair(a),
    }
}

fn must_be_dir(dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn problem_json(p: &Option<Problem>) -> serde_json::Value {
    match p {
        None => serde_json::Value::Null,
        Some(p) => json!({
            "file": p.path.display().to_string(),
            "offset": p.offset,
            "what": p.what.to_string(),
            "detail": p.what,
            "torn_tail": p.torn_tail,
        }),
    }
}

fn problem_line(p: &Problem) -> String {
    let verdict = if p.torn_tail {
        "torn tail: opening the log truncates it there"
    } else {
        "corruption: opening the log refuses it (dcore wal repair truncates it there)"
    };
    format!(
        "first bad record: {} at offset {}: {}\n{verdict}",
        p.path.display(),
        p.offset,
        p.what
    )
}

fn summary_json(r: &ScanReport) -> serde_json::Value {
    json!({
        "ok": r.problem.is_none(),
        "segments": r.segments.len(),
        "records": r.records,
        "first_index": r.first_index(),
        "last_index": r.last_index(),
        "bytes_scanned": r.bytes_scanned,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "scan_mb_per_s": (r.mb_per_s() * 10.0).round() / 10.0,
        "problem": problem_json(&r.problem),
    })
}

fn verify(a: VerifyArgs) -> anyhow::Result<i32> {
    must_be_dir(&a.dir)?;
    let r = wal::scan(&OsFs, &a.dir, &mut |_| {}).context("scanning the log")?;
    if a.json {
        println!("{}", summary_json(&r));
    } else {
        println!(
            "{} segments, {} records ({}..{}), {:.1} MB in {:.3} s ({:.0} MB/s)",
            r.segments.len(),
            r.records,
            r.first_index().map_or("-".into(), |i| i.to_string()),
            r.last_index().map_or("-".into(), |i| i.to_string()),
            r.bytes_scanned as f64 / 1e6,
            r.elapsed.as_secs_f64(),
            r.mb_per_s()
        );
        match &r.problem {
            None => println!("ok"),
            Some(p) => println!("{}", problem_line(p)),
        }
    }
    Ok(i32::from(r.problem.is_some()))
}

struct Rec {
    index: u64,
    kind: u8,
    offset: u64,
    len: usize,
    crc: u32,
}

fn inspect(a: InspectArgs) -> anyhow::Result<i32> {
    must_be_dir(&a.dir)?;
    let mut recs = Vec::new();
    let r = wal::scan(&OsFs, &a.dir, &mut |v| {
        if recs.len() < a.limit {
            recs.push(Rec {
                index: v.index,
                kind: v.kind.get(),
                offset: v.offset,
                len: v.payload.len(),
                crc: v.payload_crc,
            });
        }
    })
    .context("scanning the log")?;
    let segment_of = |index: u64| {
        r.segments
            .iter()
            .rposition(|s| s.first_index <= index)
            .map_or_else(String::new, |i| file_name(&r.segments[i].path))
    };
    if a.json {
        let segments: Vec<_> = r
            .segments
            .iter()
            .map(|s| {
                json!({"file": file_name(&s.path), "first_index": s.first_index,
                    "last_index": s.last_index(), "records": s.records,
                    "data_bytes": s.data_end, "file_bytes": s.file_bytes})
            })
            .collect();
        let records: Vec<_> = recs
            .iter()
            .map(|x| {
                json!({"index": x.index, "type": x.kind, "segment": segment_of(x.index),
                    "offset": x.offset, "len": x.len, "crc32c": format!("{:08x}", x.crc)})
            })
            .collect();
        let mut out = summary_json(&r);
        out["segment_list"] = json!(segments);
        out["record_list"] = json!(records);
        out["record_list_truncated"] = json!(r.records > recs.len() as u64);
        println!("{out}");
    } else {
        print_inspect(&r, &recs, a.limit);
    }
    Ok(0)
}

fn print_inspect(r: &ScanReport, recs: &[Rec], limit: usize) {
    for s in &r.segments {
        println!(
            "segment {}  first {}  records {}  data {} of {} bytes",
            file_name(&s.path),
            s.first_index,
            s.records,
            s.data_end,
            s.file_bytes
        );
        let end = s.first_index + s.records;
        for x in recs
            .iter()
            .filter(|x| (s.first_index..end).contains(&x.index))
        {
            println!(
                "  #{:<10} type {:<3} offset {:<10} len {:<8} crc32c {:08x}",
                x.index, x.kind, x.offset, x.len, x.crc
            );
        }
    }
    if r.records > recs.len() as u64 {
        println!(
            "({} records, first {limit} printed; --limit N for more)",
            r.records
        );
    }
    if let Some(p) = &r.problem {
        println!("{}", problem_line(p));
    }
}

fn repair(a: RepairArgs) -> anyhow::Result<i32> {
    must_be_dir(&a.dir)?;
    let backup = a.backup_dir.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        a.dir.join(format!("repair-{secs}"))
    });
    let r = wal::repair(&OsFs, &a.dir, &backup, a.dry_run).context("repairing the log")?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(0);
    }
    let Some(p) = &r.problem else {
        println!("no bad record: nothing to do");
        return Ok(0);
    };
    println!("{}", problem_line(p));
    let verb = if a.dry_run { "would" } else { "did" };
    println!(
        "{verb}: copy the affected segments to {}, zero {} bytes, remove {} segments; \
         last record kept: {}",
        backup.display(),
        r.bytes_zeroed,
        r.segments_removed.len(),
        r.last_index_kept.map_or("none".into(), |i| i.to_string())
    );
    Ok(0)
}
