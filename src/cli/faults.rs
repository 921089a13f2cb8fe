//! The compact fault syntax of `dcore sim` flags: `--latency-ms LO..HI`, `--pause K:SECS`,
//! `--slow K:MS`, `--partition FRACTION:FROM..TO`.

use anyhow::{anyhow, bail};
use distributed_core::sim::{NodeFault, PartitionSpec};
use std::time::Duration;

fn parse_u64(s: &str, what: &str) -> anyhow::Result<u64> {
    s.trim()
        .parse()
        .map_err(|_| anyhow!("{what}: '{s}' is not a whole number"))
}

fn parse_f64(s: &str, what: &str) -> anyhow::Result<f64> {
    s.trim()
        .parse()
        .map_err(|_| anyhow!("{what}: '{s}' is not a number"))
}

fn split2<'a>(s: &'a str, sep: &str, what: &str) -> anyhow::Result<(&'a str, &'a str)> {
    s.split_once(sep)
        .ok_or_else(|| anyhow!("{what}: expected '{sep}' in '{s}'"))
}

/// `LO..HI` in milliseconds.
pub(crate) fn parse_latency(s: &str) -> anyhow::Result<(Duration, Duration)> {
    let (lo, hi) = split2(s, "..", "--latency-ms")?;
    let (lo, hi) = (
        parse_u64(lo, "--latency-ms")?,
        parse_u64(hi, "--latency-ms")?,
    );
    if lo > hi {
        bail!("--latency-ms: LO must be at most HI");
    }
    Ok((Duration::from_millis(lo), Duration::from_millis(hi)))
}

/// `K:SECS` (pause) or `K:MS` (slow), with `unit_ms` the size of one unit in milliseconds.
pub(crate) fn parse_node_fault(s: &str, what: &str, unit_ms: u64) -> anyhow::Result<NodeFault> {
    let (k, amount) = split2(s, ":", what)?;
    let amount = parse_f64(amount, what)?;
    if !(amount.is_finite() && amount > 0.0) {
        bail!(format!("{what}: the amount must be above zero"));
    }
    let count = parse_u64(k, what)? as usize;
    Ok(NodeFault {
        count,
        amount: Duration::from_secs_f64(amount * unit_ms as f64 / 1000.0),
    })
}

/// `FRACTION:FROM..TO` with FROM and TO in seconds.
pub(crate) fn parse_partition(s: &str) -> anyhow::Result<PartitionSpec> {
    let (fraction, range) = split2(s, ":", "--partition")?;
    let (from, to) = split2(range, "..", "--partition")?;
    let fraction = parse_f64(fraction, "--partition")?;
    let (from, to) = (
        parse_f64(from, "--partition")?,
        parse_f64(to, "--partition")?,
    );
    if !(fraction > 0.0 && fraction < 1.0 && 0.0 <= from && from < to && to.is_finite()) {
        bail!("--partition: FRACTION in (0, 1) and 0 <= FROM < TO");
    }
    Ok(PartitionSpec {
        fraction,
        from: Duration::from_secs_f64(from),
        to: Duration::from_secs_f64(to),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse() {
        assert_eq!(
            parse_latency("1..5").unwrap(),
            (Duration::from_millis(1), Duration::from_millis(5))
        );
        assert!(parse_latency("5..1").is_err());
        assert!(parse_latency("5").is_err());
        let p = parse_node_fault("2:30", "--pause", 1000).unwrap();
        assert_eq!(
            p,
            NodeFault {
                count: 2,
                amount: Duration::from_secs(30)
            }
        );
        let s = parse_node_fault("5:400", "--slow", 1).unwrap();
        assert_eq!(s.amount, Duration::from_millis(400));
        assert!(parse_node_fault("5:-1", "--slow", 1).is_err());
        let part = parse_partition("0.5:60..120").unwrap();
        assert_eq!(
            (part.fraction, part.from, part.to),
            (0.5, Duration::from_secs(60), Duration::from_secs(120))
        );
        assert!(parse_partition("1.5:60..120").is_err());
        assert!(parse_partition("0.5:120..60").is_err());
    }
}
