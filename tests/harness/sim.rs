//! Seeded simulations: one scenario over several seeds, and checks that say what failed.

use distributed_core::cluster::Config;
use distributed_core::sim::{self, Report, Scenario};
use std::time::Duration;

/// How long a crash among `members` takes to be declared failed at most (docs/tuning.md): two
/// probe periods to probe the dead member, then Lifeguard's longest suspicion.
pub fn detection_time(c: &Config, members: usize) -> Duration {
    let min = c
        .probe_interval
        .mul_f64(f64::from(c.suspicion_mult) * (members as f64).log10().max(1.0));
    c.probe_interval * 2 + min * c.suspicion_max_mult
}

/// Runs `scenario` once per seed and hands each report to `check`; a failed check names the seed
/// and the whole report, so the run can be replayed with `dcore sim --seed S ...`.
pub fn for_seeds(
    scenario: &Scenario,
    seeds: &[u64],
    check: impl Fn(&Report) -> Result<(), String>,
) {
    for &seed in seeds {
        let s = Scenario {
            seed,
            ..scenario.clone()
        };
        let report = sim::run(&s).unwrap_or_else(|e| panic!("seed {seed}: scenario refused: {e}"));
        if let Err(why) = check(&report) {
            panic!(
                "seed {seed}: {why}\nreport: {}",
                serde_json::to_string(&report).unwrap()
            );
        }
    }
}

/// `Err(msg)` unless `cond`.
pub fn ensure(cond: bool, msg: impl Into<String>) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg.into())
    }
}
