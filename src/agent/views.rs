//! JSON views of members and events, as the admin API and `dcore members --json` show them.

use crate::cluster::vivaldi::Coordinate;
use crate::cluster::{Event, MemberState, MemberView, QueryAnswer};
use crate::node::MemberHealth;
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

/// A row of `/v1/members`: the member's fields, plus what this node measures of it: `phi`
/// (suspicion level now, 2 decimals) and `rtt_ms` (smoothed round trip of its acks, in
/// milliseconds, 3 decimals). Each is `null` until measured: no ack heard yet (or it left, or
/// this is the node itself), or for `rtt_ms`, only acks relayed through ping-req.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MemberRowJson {
    /// `name`, `addr`, `state`, `incarnation`, `tags`.
    #[serde(flatten)]
    pub member: MemberJson,
    /// Phi-accrual suspicion level now.
    pub phi: Option<f64>,
    /// Smoothed round trip, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Network coordinate (Vivaldi): this node's own, or the member's as its last ack to this
    /// node carried it; `null` until then.
    #[serde(default)]
    pub coordinate: Option<Coordinate>,
}

impl MemberRowJson {
    /// `member` with the figures of `health`, if any.
    pub fn new(member: MemberJson, health: Option<&MemberHealth>) -> Self {
        MemberRowJson {
            member,
            phi: health.map(|h| round_to(h.phi, 100.0)),
            rtt_ms: health
                .and_then(|h| h.rtt)
                .map(|d| round_to(d.as_secs_f64() * 1e3, 1e3)),
            coordinate: None,
        }
    }
}

/// `x` rounded to `1 / scale`; left as it is where scaling would overflow.
fn round_to(x: f64, scale: f64) -> f64 {
    let scaled = x * scale;
    if scaled.is_finite() {
        scaled.round() / scale
    } else {
        x
    }
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
        Event::Message(m) => json!({
            "type": "message",
            "from": m.from.as_str(),
            "reliable": m.reliable,
            "payload": String::from_utf8_lossy(&m.payload),
        }),
        Event::Query(q) => json!({
            "type": "query",
            "name": q.name,
            "origin": q.origin.as_str(),
            "id": q.id,
            "payload": String::from_utf8_lossy(&q.payload),
        }),
        Event::QueryAnswer { id, answer } => match answer {
            QueryAnswer::Ack(from) => json!({"type": "query_ack", "id": id, "from": from.as_str()}),
            QueryAnswer::Response { from, payload } => json!({
                "type": "query_response",
                "id": id,
                "from": from.as_str(),
                "payload": String::from_utf8_lossy(payload),
            }),
            QueryAnswer::Done(s) => json!({
                "type": "query_done",
                "id": id,
                "acks": s.acks.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
                "responses": s.responses.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
                "missing": s.missing.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            }),
        },
        Event::JoinCompleted { members } => json!({"type": "join_completed", "members": members}),
        Event::Refuted { incarnation } => json!({"type": "refuted", "incarnation": incarnation.0}),
        Event::MemberConflict { member, claimed } => json!({
            "type": "member_conflict",
            "member": MemberJson::from(member),
            "claimed_addr": claimed.addr.to_string(),
        }),
    }
}
