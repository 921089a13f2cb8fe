//! Shared helpers for the system tests, by topic. Each test binary declares `mod harness;` and
//! uses only part of them.
#![allow(dead_code)]

mod agent;
mod fixtures;
mod hosts;
mod node;
mod process;
mod sim;
mod store;
mod wait;

// Each binary uses part of these, so an unused re-export is no mistake.
#[allow(unused_imports)]
pub use agent::{agent_config, agents, start_agent, start_agents};
#[allow(unused_imports)]
pub use fixtures::fixture;
#[allow(unused_imports)]
pub use hosts::{testbed_script, Bed, Family, Seen};
#[allow(unused_imports)]
pub use node::{
    alive_count, array, cluster, converged, join, no_task_left, plain_datagram, plain_frame,
    plain_record, start_cluster, state_of, Member, Net,
};
#[allow(unused_imports)]
pub use process::{dcore, dcore_command, KillOnDrop, Lines, Run, DCORE};
#[allow(unused_imports)]
pub use sim::{detection_time, ensure, for_seeds};
#[allow(unused_imports)]
pub use store::{faulty_fs, modes_under, wal_records, wal_segments};
#[allow(unused_imports)]
pub use wait::{eventually, eventually_blocking, serial};
