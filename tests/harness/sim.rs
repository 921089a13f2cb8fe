//! Seeded simulations: one scenario over several seeds, and checks that say what failed.

use distributed_core::sim::{self, Report, Scenario};

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
