//! JSON views of members and events, as the admin API and `dcore members --json` show them.

use crate::cluster::{Event, MemberState, MemberView};
use serde::Serialize;
use std::collections::BTreeMap;

/// A member as JSON: `name`, `addr`, `state` (`alive`, `suspect`, `failed`, `left`),
/// `incarnation`, `tags`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MemberJson {
    /// Member name.
    pub name: String,
    /// Gossip address.
    pub addr: String,
    /// `alive`, `suspect`, `failed` or `left`.
    pub state: String,
    /// Latest incarnation known.
    pub incarnation: u64,
    /// Published tags.
    pub tags: BTreeMap<String, String>,
}

/// The API's name of a state.
pub fn state_name(s: MemberState) -> &'static str {
    match s {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "failed",
        MemberState::Left => "left",
    }
}

impl From<&MemberView> for MemberJson {
    fn from(m: &MemberView) -> Self {
        MemberJson {
            name: m.info.id.as_str().to_string(),
            addr: m.info.addr.to_string(),
            state: state_name(m.state).to_string(),
            incarnation: m.incarnation.0,
            tags: m.info.tags.clone(),
        }
    }
}

/// An event as JSON: `{"type": "member_failed", "member": {...}}`,
/// `{"type": "user_event", "name": .., "payload": .., "origin": .., "ltime": ..}`, ...
pub fn event_json(e: &Event) -> serde_json::Value {
    use serde_json::json;
    let member = |ty: &str, m: &MemberView| json!({"type": ty, "member": MemberJson::from(m)});
    match e {
        Event::MemberJoined(m) => member("member_joined", m),
        Event::MemberUpdated(m) => member("member_updated", m),
        Event::MemberSuspected(m) => member("member_suspected", m),
        Event::MemberFailed(m) => member("member_failed", m),
        Event::MemberLeft(m) => member("member_left", m),
        Event::MemberRecovered(m) => member("member_recovered", m),
        Event::UserEvent(u) => json!({
            "type": "user_event",
            "name": u.name,
            "payload": String::from_utf8_lossy(&u.payload),
            "origin": u.origin.as_str(),
            "ltime": u.ltime,
        }),
        Event::JoinCompleted { members } => json!({"type": "join_completed", "members": members}),
        Event::Refuted { incarnation } => json!({"type": "refuted", "incarnation": incarnation.0}),
    }
}
