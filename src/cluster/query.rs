//! Queries, after serf's: a question gossiped to every member, acknowledged and answered by
//! the members its filters select, the answers gathered by the origin until a timeout.
//!
//! The origin ([`Swim::query`]) queues a [`Query`] in the piggyback queue like a user event
//! (deduplicated by origin and id on the shared Lamport clock) and waits `timeout`: each member
//! that takes it passes it on and, when the filters select it and the origin is a live member
//! in its table (else it could not answer), acknowledges it (if asked) and
//! tells its application ([`Event::Query`]), which may answer once ([`Swim::respond`]) before
//! the deadline. Acknowledgements and answers go in one datagram each to the origin's address
//! *as the answering member's table has it* (never an address from the query: a query cannot
//! steer traffic to a third party), and, with `relay_factor` k, also to k random live members
//! that pass them on to the origin once (so a lossy path between two members does not lose
//! the answer). The origin takes one acknowledgement and one answer per member it knows,
//! reports each as it comes ([`Event::QueryAnswer`]) and, at the timeout, a summary: who
//! acknowledged, who answered, and which members the filters selected at the start that did
//! neither.
//!
//! Everything is best-effort and bounded: the message sizes (`query_bytes_max`,
//! `query_response_bytes_max`), the queries a node waits on (`queries_max`) and remembers
//! answering (four times that), the new queries it takes per second (`queries_per_sec`), the
//! relays it passes on per second ([`RELAYS_PER_SEC`]), the regex of a filter
//! ([`FILTER_REGEX_BYTES_MAX`] compiled) and the timeout ([`QUERY_TIMEOUT_MAX`]).

use super::broadcast::BroadcastKey;
use super::message::{Message, Query, QueryFilter, QueryResponse, QUERY_RELAY_MAX};
use super::swim::{AdmitBucket, CommandError, Swim};
use super::user_events::Verdict;
use super::{Event, MemberState, Output, Timer};
use crate::common::{Now, Time};
use crate::identity::{NodeId, Tags};
use rand::Rng;
use regex::{Regex, RegexBuilder};
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// Longest query timeout; a longer one is cut to it, by the origin and by every member.
pub const QUERY_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// Compiled size of a tag filter's regular expression at most (the regex crate's
/// `size_limit`); a larger one does not select anybody.
pub const FILTER_REGEX_BYTES_MAX: usize = 64 << 10;
/// Relayed answers a node passes on per second at most (a token bucket holding one second's
/// worth); past it they are dropped and counted (`queries_limited`).
pub const RELAYS_PER_SEC: u32 = 1024;

/// What to ask (see [`Swim::query`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParams {
    /// What is asked: the name a handler answers to.
    pub name: String,
    /// Opaque payload.
    pub payload: Vec<u8>,
    /// Every filter must select a member (none: every member).
    pub filters: Vec<QueryFilter>,
    /// Whether selected members acknowledge the query. Default true.
    pub ack: bool,
    /// Other members each answer also goes through, at most [`QUERY_RELAY_MAX`]. Default 0.
    pub relay_factor: u8,
    /// How long to wait for answers; `None` (the default) scales with the cluster (see
    /// `Config::query_timeout_mult`).
    pub timeout: Option<Duration>,
}

impl QueryParams {
    /// A query of `name` with `payload` to every member, acknowledged, not relayed, with the
    /// default timeout.
    pub fn new(name: impl Into<String>, payload: Vec<u8>) -> Self {
        QueryParams {
            name: name.into(),
            payload,
            filters: Vec::new(),
            ack: true,
            relay_factor: 0,
            timeout: None,
        }
    }
}

/// A query this node's filters selected, for the application to answer (with
/// [`Swim::respond`]; a `Node` hands it to the handler registered for its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRequest {
    /// The member that asks.
    pub origin: NodeId,
    /// The query's id (with `origin`, what [`Swim::respond`] names).
    pub id: u64,
    /// What is asked.
    pub name: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// The last moment (this node's monotonic time) an answer is taken.
    pub deadline: Time,
}

/// What the origin of a query hears of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryAnswer {
    /// A member acknowledged the query.
    Ack(NodeId),
    /// A member answered.
    Response {
        /// The member.
        from: NodeId,
        /// Its answer.
        payload: Vec<u8>,
    },
    /// The timeout ended the query: nothing more comes.
    Done(QuerySummary),
}

/// The end of a query: who took part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuerySummary {
    /// Members that acknowledged, by name.
    pub acks: Vec<NodeId>,
    /// Members that answered, by name.
    pub responses: Vec<NodeId>,
    /// Members the filters selected when the query started (alive or suspect then) that
    /// neither acknowledged nor answered, by name.
    pub missing: Vec<NodeId>,
}

/// A query this node started and waits on.
#[derive(Debug)]
struct Pending {
    ltime: u64,
    ack: bool,
    expected: Vec<NodeId>,
    acks: BTreeSet<NodeId>,
    responses: BTreeSet<NodeId>,
}

/// A query this node took and may answer.
#[derive(Debug)]
struct Answering {
    ltime: u64,
    relay_factor: u8,
    deadline: Time,
    answered: bool,
}

/// The query state of one node.
#[derive(Debug)]
pub(crate) struct Queries {
    pending: FxHashMap<u64, Pending>,
    answering: FxHashMap<(NodeId, u64), Answering>,
    bucket: AdmitBucket,
    relays: AdmitBucket,
}

impl Queries {
    pub fn new(queries_per_sec: u32) -> Self {
        Queries {
            pending: FxHashMap::default(),
            answering: FxHashMap::default(),
            bucket: AdmitBucket::full(queries_per_sec),
            relays: AdmitBucket::full(RELAYS_PER_SEC),
        }
    }

    /// Queries this node waits on.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// A query's filters, compiled.
#[derive(Debug)]
pub(crate) struct Filters {
    names: Vec<Vec<NodeId>>,
    tags: Vec<(String, Regex)>,
}

impl Filters {
    /// Compiles the tag filters' regular expressions (anchored at both ends, as placement's),
    /// each within [`FILTER_REGEX_BYTES_MAX`].
    pub fn compile(filters: &[QueryFilter]) -> Result<Self, String> {
        let mut names = Vec::new();
        let mut tags = Vec::new();
        for f in filters {
            match f {
                QueryFilter::Names(n) => names.push(n.clone()),
                QueryFilter::Tag { key, pattern } => {
                    let re = RegexBuilder::new(&format!("^(?:{pattern})$"))
                        .size_limit(FILTER_REGEX_BYTES_MAX)
                        .build()
                        .map_err(|e| format!("tag filter {key}={pattern}: {e}"))?;
                    tags.push((key.clone(), re));
                }
            }
        }
        Ok(Filters { names, tags })
    }

    /// Whether every filter selects the member `id` with `tags`.
    pub fn selects(&self, id: &NodeId, tags: &Tags) -> bool {
        self.names.iter().all(|n| n.contains(id))
            && (self.tags.iter()).all(|(k, re)| tags.get(k).is_some_and(|v| re.is_match(v)))
    }
}

/// Whether a query may ask for `relay_factor` relays (at most [`QUERY_RELAY_MAX`]).
fn relays_allowed(relay_factor: u8) -> bool {
    relay_factor <= QUERY_RELAY_MAX
}

/// Bytes of a message carrying `q`.
fn query_len(q: &Query) -> usize {
    1 + size(q)
}

/// Bytes of a message carrying `r`.
fn response_len(r: &QueryResponse) -> usize {
    1 + size(r)
}

fn size<T: serde::Serialize>(m: &T) -> usize {
    postcard::serialize_with_flavor(m, postcard::ser_flavors::Size::default())
        .expect("size flavor cannot fail")
}

impl Swim {
    /// Starts a query (see the module doc) and returns its id: its acknowledgements and
    /// answers come as [`Event::QueryAnswer`] with that id, the last one
    /// [`QueryAnswer::Done`] at the timeout. This node takes its own query as any member
    /// does. Refused (nothing sent) once this node has left, with `queries_max` queries
    /// running, a relay factor over [`QUERY_RELAY_MAX`], a tag filter that does not compile,
    /// a zero timeout, or a message over `query_bytes_max`.
    pub fn query(
        &mut self,
        now: Now,
        params: QueryParams,
        out: &mut Vec<Output>,
    ) -> Result<u64, CommandError> {
        self.now = now;
        let r = self.start_query(params);
        self.gossip_urgent();
        self.hand_over(out);
        r
    }

    /// Answers the query `id` of `origin` with `payload`, once, before its deadline: the answer
    /// goes to the origin (and through the relays it asked for). Refused when this node did
    /// not take that query (or has forgotten it), after its deadline, when it was answered
    /// already, or when the answer is over `query_response_bytes_max`.
    pub fn respond(
        &mut self,
        now: Now,
        origin: &NodeId,
        id: u64,
        payload: Vec<u8>,
        out: &mut Vec<Output>,
    ) -> Result<(), CommandError> {
        self.now = now;
        let r = self.answer_query(origin, id, payload);
        self.hand_over(out);
        r
    }

    /// Queries this node waits on.
    pub fn queries_pending(&self) -> usize {
        self.queries.pending()
    }

    /// The timeout of a query whose origin names none (serf's rule; see
    /// `Config::query_timeout_mult`).
    pub fn default_query_timeout(&self) -> Duration {
        let n = self.members.active() as f64 + 1.0;
        let scale = n.log10().ceil().max(1.0) as u32;
        (self.config.gossip_interval)
            .saturating_mul(self.config.query_timeout_mult.saturating_mul(scale))
            .min(QUERY_TIMEOUT_MAX)
    }

    /// `Some((len, max))` when a message carrying `q` is over the size in force: the same rule
    /// for a query asked here and one from the wire.
    fn query_over(&self, q: &Query) -> Option<(usize, usize)> {
        let (len, max) = (query_len(q), self.config.query_len_max());
        (len > max).then_some((len, max))
    }

    /// As `query_over`, for an acknowledgement or answer.
    fn response_over(&self, r: &QueryResponse) -> Option<(usize, usize)> {
        let (len, max) = (response_len(r), self.config.query_response_len_max());
        (len > max).then_some((len, max))
    }

    fn start_query(&mut self, p: QueryParams) -> Result<u64, CommandError> {
        if self.leaving {
            return Err(CommandError::Left);
        }
        let max = self.config.queries_max;
        if self.queries.pending.len() >= max {
            return Err(CommandError::TooManyQueries { max });
        }
        if !relays_allowed(p.relay_factor) {
            return Err(CommandError::BadQuery(format!(
                "relay factor {} is over {QUERY_RELAY_MAX}",
                p.relay_factor
            )));
        }
        let filters = Filters::compile(&p.filters).map_err(CommandError::BadQuery)?;
        let timeout = (p.timeout)
            .unwrap_or_else(|| self.default_query_timeout())
            .min(QUERY_TIMEOUT_MAX);
        if timeout < Duration::from_millis(1) {
            return Err(CommandError::BadQuery(
                "the timeout must be at least 1 ms".into(),
            ));
        }
        let id = loop {
            let id: u64 = self.rng.gen();
            if !self.queries.pending.contains_key(&id) {
                break id;
            }
        };
        let query = Query {
            ltime: self.user_events.clock(),
            id,
            origin: self.id.clone(),
            filters: p.filters,
            ack: p.ack,
            relay_factor: p.relay_factor,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            name: p.name,
            payload: p.payload,
        };
        if let Some((len, max)) = self.query_over(&query) {
            return Err(CommandError::QueryTooLarge { len, max });
        }
        let ltime = self.user_events.next_time();
        debug_assert_eq!(ltime, query.ltime);
        self.user_events.observe_query(&self.id, ltime, id);
        let expected = (self.members.iter())
            .filter(|m| m.is_active() && filters.selects(m.id(), &m.info.tags))
            .map(|m| m.id().clone())
            .collect();
        self.queries.pending.insert(
            id,
            Pending {
                ltime,
                ack: query.ack,
                expected,
                acks: BTreeSet::new(),
                responses: BTreeSet::new(),
            },
        );
        self.arm(timeout, Timer::QueryEnd { id });
        self.broadcasts.push(
            BroadcastKey::Query(self.id.clone(), id),
            Message::Query(Box::new(query.clone())),
        );
        // The question goes out now, not at the next gossip tick.
        self.urgent = true;
        if filters.selects(&self.id, &self.local().info.tags) {
            self.take_query(query);
        }
        Ok(id)
    }

    /// A query from the wire: passed on and, when its filters select this node, taken.
    pub(crate) fn on_query(&mut self, q: Query) {
        if self.query_over(&q).is_some() || !relays_allowed(q.relay_factor) {
            self.stats.over_limit += 1;
            return;
        }
        // Our own query coming back, or a forgery in our name.
        if q.origin == self.id {
            return;
        }
        match self.user_events.observe_query(&q.origin, q.ltime, q.id) {
            Verdict::Deliver => {}
            Verdict::Duplicate => return,
            Verdict::TooOld => {
                self.stats.dropped += 1;
                return;
            }
            Verdict::Implausible => {
                self.stats.implausible += 1;
                return;
            }
        }
        let (rate, now) = (self.config.queries_per_sec, self.now.mono);
        if !self.queries.bucket.take(rate, now) {
            self.stats.queries_limited += 1;
            return;
        }
        self.stats.queries_in += 1;
        self.broadcasts.push(
            BroadcastKey::Query(q.origin.clone(), q.id),
            Message::Query(Box::new(q.clone())),
        );
        // An origin that is not a live member here could not be answered: the handler does
        // not run for it (a stranger's query, or one from a member not yet heard of).
        if self.live_addr(&q.origin).is_none() {
            self.stats.misdirected += 1;
            return;
        }
        match Filters::compile(&q.filters) {
            Ok(f) if f.selects(&self.id, &self.local().info.tags) => self.take_query(q),
            Ok(_) => {}
            // Passed on: a member with a larger regex budget may take it.
            Err(_) => self.stats.dropped += 1,
        }
    }

    /// This node takes part: remembers the query, acknowledges it if asked, tells the
    /// application.
    fn take_query(&mut self, q: Query) {
        let timeout = Duration::from_millis(u64::from(q.timeout_ms)).min(QUERY_TIMEOUT_MAX);
        let deadline = self.now.mono + timeout;
        self.remember_answering(
            (q.origin.clone(), q.id),
            Answering {
                ltime: q.ltime,
                relay_factor: q.relay_factor,
                deadline,
                answered: false,
            },
        );
        if q.ack {
            self.send_answer(&q.origin, q.ltime, q.id, true, Vec::new(), q.relay_factor);
        }
        self.emit(Event::Query(Box::new(QueryRequest {
            origin: q.origin,
            id: q.id,
            name: q.name,
            payload: q.payload,
            deadline,
        })));
    }

    /// Keeps at most four times `queries_max` queries to answer: the expired go first, then
    /// the one whose deadline is nearest.
    fn remember_answering(&mut self, key: (NodeId, u64), a: Answering) {
        let max = self.config.queries_max.saturating_mul(4);
        let now = self.now.mono;
        let answering = &mut self.queries.answering;
        if answering.len() >= max {
            answering.retain(|_, a| a.deadline >= now);
        }
        if answering.len() >= max {
            let nearest = (answering.iter())
                .min_by(|x, y| (x.1.deadline, &x.0).cmp(&(y.1.deadline, &y.0)))
                .map(|(k, _)| k.clone());
            if let Some(k) = nearest {
                answering.remove(&k);
            }
        }
        answering.insert(key, a);
    }

    fn answer_query(
        &mut self,
        origin: &NodeId,
        id: u64,
        payload: Vec<u8>,
    ) -> Result<(), CommandError> {
        let now = self.now.mono;
        let key = (origin.clone(), id);
        let a = (self.queries.answering.get(&key)).ok_or(CommandError::QueryUnknown)?;
        if now > a.deadline {
            return Err(CommandError::QueryExpired);
        }
        if a.answered {
            return Err(CommandError::QueryAnswered);
        }
        let r = QueryResponse {
            ltime: a.ltime,
            id,
            origin: origin.clone(),
            from: self.id.clone(),
            ack: false,
            relay: false,
            payload,
        };
        if let Some((len, max)) = self.response_over(&r) {
            return Err(CommandError::ResponseTooLarge { len, max });
        }
        let (ltime, relay_factor) = (a.ltime, a.relay_factor);
        if let Some(a) = self.queries.answering.get_mut(&key) {
            a.answered = true;
        }
        self.send_answer(origin, ltime, id, false, r.payload, relay_factor);
        Ok(())
    }

    /// An acknowledgement (`ack`) or answer to the origin's address in this node's table, and
    /// to `relay_factor` random live members to pass on. Not sent (counted `misdirected`) when
    /// the origin is not a live member here.
    fn send_answer(
        &mut self,
        origin: &NodeId,
        ltime: u64,
        id: u64,
        ack: bool,
        payload: Vec<u8>,
        relay_factor: u8,
    ) {
        let r = QueryResponse {
            ltime,
            id,
            origin: origin.clone(),
            from: self.id.clone(),
            ack,
            relay: false,
            payload,
        };
        if origin == &self.id {
            self.on_answer(r);
            return;
        }
        let Some(to) = self.live_addr(origin) else {
            self.stats.misdirected += 1;
            return;
        };
        let me = self.id.clone();
        let relays = (self.members).sample(&mut self.rng, usize::from(relay_factor), |m| {
            m.is_active() && m.id() != &me && m.id() != origin
        });
        for i in relays {
            let via = self.members.at(i).info.addr;
            let relayed = QueryResponse {
                relay: true,
                ..r.clone()
            };
            self.out.push(Output::Packet {
                to: via,
                msgs: vec![Message::QueryResponse(Box::new(relayed))],
            });
        }
        self.out.push(Output::Packet {
            to,
            msgs: vec![Message::QueryResponse(Box::new(r))],
        });
    }

    /// The address of `id` if it is a live (alive or suspect) member here.
    fn live_addr(&self, id: &NodeId) -> Option<SocketAddr> {
        (self.members.get(id))
            .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .map(|m| m.info.addr)
    }

    /// An acknowledgement or answer from the wire: for one of our queries, taken; to relay,
    /// passed on once to the origin's address in our table.
    pub(crate) fn on_query_response(&mut self, r: QueryResponse) {
        if self.response_over(&r).is_some() {
            self.stats.over_limit += 1;
            return;
        }
        if r.origin == self.id {
            self.on_answer(r);
            return;
        }
        if !r.relay {
            self.stats.misdirected += 1;
            return;
        }
        if !self.queries.relays.take(RELAYS_PER_SEC, self.now.mono) {
            self.stats.queries_limited += 1;
            return;
        }
        let Some(to) = self.live_addr(&r.origin) else {
            self.stats.misdirected += 1;
            return;
        };
        self.stats.query_relays += 1;
        let r = QueryResponse { relay: false, ..r };
        self.out.push(Output::Packet {
            to,
            msgs: vec![Message::QueryResponse(Box::new(r))],
        });
    }

    /// One acknowledgement and one answer per member this node knows, for a query it waits
    /// on; anything else (late, unknown, repeated) is dropped.
    fn on_answer(&mut self, r: QueryResponse) {
        let known = self.members.get(&r.from).is_some();
        let Some(p) = self.queries.pending.get_mut(&r.id) else {
            self.stats.query_answers_late += 1;
            return;
        };
        if p.ltime != r.ltime || !known || (r.ack && !p.ack) {
            self.stats.dropped += 1;
            return;
        }
        let answer = if r.ack {
            if !p.acks.insert(r.from.clone()) {
                return;
            }
            QueryAnswer::Ack(r.from)
        } else {
            if !p.responses.insert(r.from.clone()) {
                return;
            }
            QueryAnswer::Response {
                from: r.from,
                payload: r.payload,
            }
        };
        self.stats.query_answers_in += 1;
        self.emit(Event::QueryAnswer { id: r.id, answer });
    }

    /// The timeout of query `id`: its summary, and it is forgotten.
    pub(crate) fn on_query_end(&mut self, id: u64) {
        let Some(p) = self.queries.pending.remove(&id) else {
            return;
        };
        let missing = (p.expected.into_iter())
            .filter(|m| !p.acks.contains(m) && !p.responses.contains(m))
            .collect();
        let summary = QuerySummary {
            acks: p.acks.into_iter().collect(),
            responses: p.responses.into_iter().collect(),
            missing,
        };
        self.emit(Event::QueryAnswer {
            id,
            answer: QueryAnswer::Done(summary),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{addr, at, events, fail, id, packets, T};
    use super::*;
    use crate::cluster::{Command, Config};

    /// Starts a query at `t` and returns its id and the query message gossiped.
    /// (A second later than the last: the urgent gossip round goes at most once a gossip
    /// interval.)
    fn ask(t: &mut T, params: QueryParams) -> (u64, Query) {
        t.ms += 1000;
        let mut out = Vec::new();
        let qid = t.swim.query(at(t.ms), params, &mut out).unwrap();
        t.out.extend(out.iter().cloned());
        let q = (packets(&out).into_iter())
            .flat_map(|(_, msgs)| msgs)
            .find_map(|m| match m {
                Message::Query(q) => Some(*q),
                _ => None,
            })
            .expect("the query goes out at once");
        (qid, q)
    }

    fn responses(out: &[Output]) -> Vec<(SocketAddr, QueryResponse)> {
        (packets(out).into_iter())
            .flat_map(|(to, msgs)| msgs.into_iter().map(move |m| (to, m)))
            .filter_map(|(to, m)| match m {
                Message::QueryResponse(r) => Some((to, *r)),
                _ => None,
            })
            .collect()
    }

    fn answers(out: &[Output]) -> Vec<QueryAnswer> {
        (events(out).into_iter())
            .filter_map(|e| match e {
                Event::QueryAnswer { answer, .. } => Some(answer),
                _ => None,
            })
            .collect()
    }

    fn requests(out: &[Output]) -> Vec<QueryRequest> {
        (events(out).into_iter())
            .filter_map(|e| match e {
                Event::Query(q) => Some(*q),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_query_is_acked_and_answered_by_the_members_it_selects_and_summed_up_at_the_end() {
        let mut a = T::new(1, &[2, 3, 4]);
        let mut p = QueryParams::new("who-has", b"stream-7".to_vec());
        p.filters = vec![QueryFilter::Names(vec![id(2), id(3)])];
        p.timeout = Some(Duration::from_secs(2));
        let (qid, q) = ask(&mut a, p);
        assert!(requests(&a.out).is_empty(), "the origin is not selected");
        assert_eq!(a.swim.queries_pending(), 1);

        // n2 is selected: it acks to the origin's address and hands the query up.
        let mut b = T::new(2, &[1, 3, 4]);
        let out = b.msg(1, Message::Query(Box::new(q.clone())));
        let req = requests(&out);
        assert_eq!(req.len(), 1);
        assert_eq!(
            (req[0].name.as_str(), &req[0].payload[..]),
            ("who-has", &b"stream-7"[..])
        );
        let acks = responses(&out);
        assert_eq!(acks.len(), 1, "one ack, no relay asked");
        assert_eq!(acks[0].0, addr(1));
        assert!(acks[0].1.ack && !acks[0].1.relay && acks[0].1.from == id(2));
        assert!(b.swim.broadcast_queue_len() > 0, "passed on");
        assert!(
            b.msg(3, Message::Query(Box::new(q.clone()))).is_empty(),
            "once only"
        );
        let mut out = Vec::new();
        b.swim
            .respond(at(10), &id(1), qid, b"yes".to_vec(), &mut out)
            .unwrap();
        let answer = responses(&out);
        assert_eq!(answer.len(), 1);
        assert!(!answer[0].1.ack && answer[0].1.payload == b"yes");
        let again = b
            .swim
            .respond(at(10), &id(1), qid, b"no".to_vec(), &mut Vec::new());
        assert_eq!(again, Err(CommandError::QueryAnswered));

        // n4 is not selected: it passes the query on, silently.
        let mut d = T::new(4, &[1, 2, 3]);
        let out = d.msg(2, Message::Query(Box::new(q)));
        assert!(requests(&out).is_empty() && responses(&out).is_empty());
        assert!(d.swim.broadcast_queue_len() > 0);

        // The origin takes one ack and one answer from n2, then sums up: n3 never answered.
        let out = a.msg(2, Message::QueryResponse(Box::new(acks[0].1.clone())));
        assert_eq!(answers(&out), vec![QueryAnswer::Ack(id(2))]);
        assert!(a
            .msg(2, Message::QueryResponse(Box::new(acks[0].1.clone())))
            .is_empty());
        let out = a.msg(2, Message::QueryResponse(Box::new(answer[0].1.clone())));
        assert_eq!(
            answers(&out),
            vec![QueryAnswer::Response {
                from: id(2),
                payload: b"yes".to_vec()
            }]
        );
        let out = a.timer(Timer::QueryEnd { id: qid });
        assert_eq!(
            answers(&out),
            vec![QueryAnswer::Done(QuerySummary {
                acks: vec![id(2)],
                responses: vec![id(2)],
                missing: vec![id(3)],
            })]
        );
        assert_eq!(a.swim.queries_pending(), 0);
        let late = a.msg(2, Message::QueryResponse(Box::new(answer[0].1.clone())));
        assert!(answers(&late).is_empty());
        assert_eq!(a.swim.stats().query_answers_late, 1);
        assert_eq!(a.swim.stats().query_answers_in, 2, "one ack, one answer");
    }

    #[test]
    fn the_origin_answers_its_own_query_without_the_network() {
        let mut a = T::new(1, &[2]);
        let (qid, _) = ask(&mut a, QueryParams::new("ping", Vec::new()));
        assert_eq!(answers(&a.out), vec![QueryAnswer::Ack(id(1))]);
        assert_eq!(requests(&a.out).len(), 1);
        let mut out = Vec::new();
        a.swim
            .respond(at(0), &id(1), qid, b"me".to_vec(), &mut out)
            .unwrap();
        assert!(responses(&out).is_empty(), "nothing on the wire");
        assert_eq!(answers(&out).len(), 1);
    }

    #[test]
    fn answers_go_through_relays_that_pass_them_on_once_to_the_origin_they_know() {
        let mut p = QueryParams::new("q", Vec::new());
        p.relay_factor = 2;
        let mut a = T::new(1, &[2, 3, 4, 5]);
        let (_, q) = ask(&mut a, p);
        let mut b = T::new(2, &[1, 3, 4, 5]);
        let out = b.msg(1, Message::Query(Box::new(q.clone())));
        let sent = responses(&out);
        assert_eq!(sent.len(), 3, "to the origin and through two relays");
        let relayed: Vec<_> = sent.iter().filter(|(_, r)| r.relay).collect();
        assert_eq!(relayed.len(), 2);
        for (to, _) in &relayed {
            assert!(*to != addr(1) && *to != addr(2));
        }
        // A relay passes it on to the origin's address in its own table, without the flag.
        let mut c = T::new(3, &[1, 2]);
        let out = c.msg(2, Message::QueryResponse(Box::new(relayed[0].1.clone())));
        let passed = responses(&out);
        assert_eq!(passed.len(), 1);
        assert_eq!(passed[0].0, addr(1));
        assert!(!passed[0].1.relay);
        assert_eq!(c.swim.stats().query_relays, 1);
        // Without the flag, an answer for somebody else is not passed on.
        assert!(
            responses(&c.msg(2, Message::QueryResponse(Box::new(passed[0].1.clone())))).is_empty()
        );
        // Nor is one for an origin this node does not know: no traffic to strangers.
        let mut stray = relayed[0].1.clone();
        stray.origin = id(9);
        assert!(responses(&c.msg(2, Message::QueryResponse(Box::new(stray)))).is_empty());
        assert_eq!(c.swim.stats().misdirected, 2);
        // The origin takes the ack once, however many ways it comes.
        let via_relay = a.msg(3, Message::QueryResponse(Box::new(passed[0].1.clone())));
        assert_eq!(answers(&via_relay), vec![QueryAnswer::Ack(id(2))]);
        let direct = sent.iter().find(|(_, r)| !r.relay).unwrap().1.clone();
        assert!(answers(&a.msg(2, Message::QueryResponse(Box::new(direct)))).is_empty());
        // Asked for more relays than there are: every live member but this node and the
        // origin, and never a failed one.
        let mut b = T::new(2, &[1, 3, 4, 5]);
        fail(&mut b, 5);
        let wide = Query {
            relay_factor: QUERY_RELAY_MAX,
            ..q
        };
        let out = b.msg(1, Message::Query(Box::new(wide)));
        let mut via: Vec<_> = (responses(&out).into_iter())
            .filter_map(|(to, r)| r.relay.then_some(to))
            .collect();
        via.sort();
        assert_eq!(via, [addr(3), addr(4)]);
    }

    #[test]
    fn tag_filters_match_whole_values_and_bad_ones_are_refused() {
        let mut a = T::new(1, &[]);
        let mut tags = Tags::new();
        tags.insert("role".into(), "webserver".into());
        let mut out = Vec::new();
        a.swim
            .command(at(0), Command::SetTags(tags), &mut out)
            .unwrap();
        for (pattern, selected) in [("web", false), ("web.*", true), ("db|webserver", true)] {
            let mut p = QueryParams::new("q", Vec::new());
            p.filters = vec![QueryFilter::Tag {
                key: "role".into(),
                pattern: pattern.into(),
            }];
            let mut out = Vec::new();
            a.swim.query(at(0), p, &mut out).unwrap();
            assert_eq!(requests(&out).len(), usize::from(selected), "{pattern}");
        }
        let mut p = QueryParams::new("q", Vec::new());
        p.filters = vec![QueryFilter::Tag {
            key: "role".into(),
            pattern: "(".into(),
        }];
        let r = a.swim.query(at(0), p, &mut Vec::new());
        assert!(matches!(r, Err(CommandError::BadQuery(_))), "{r:?}");
        let mut p = QueryParams::new("q", Vec::new());
        p.filters = vec![QueryFilter::Tag {
            key: "role".into(),
            pattern: "x{1000}{1000}".into(),
        }];
        let r = a.swim.query(at(0), p, &mut Vec::new());
        assert!(
            matches!(r, Err(CommandError::BadQuery(_))),
            "regex over its size limit: {r:?}"
        );
    }

    #[test]
    fn queries_are_bounded_in_size_count_rate_and_time() {
        let config = Config {
            queries_max: 2,
            queries_per_sec: 3,
            ..Config::lan()
        };
        let mut a = T::with(config.clone(), 1, &[2]);
        let big = QueryParams::new("q", vec![0; 1100]);
        let r = a.swim.query(at(0), big, &mut Vec::new());
        assert!(
            matches!(r, Err(CommandError::QueryTooLarge { .. })),
            "{r:?}"
        );
        let mut relay = QueryParams::new("q", Vec::new());
        relay.relay_factor = QUERY_RELAY_MAX + 1;
        let r = a.swim.query(at(0), relay, &mut Vec::new());
        assert!(matches!(r, Err(CommandError::BadQuery(_))), "{r:?}");
        ask(&mut a, QueryParams::new("q", Vec::new()));
        ask(&mut a, QueryParams::new("q", Vec::new()));
        let r = a
            .swim
            .query(at(0), QueryParams::new("q", Vec::new()), &mut Vec::new());
        assert_eq!(r, Err(CommandError::TooManyQueries { max: 2 }));

        // Received: over the size, the relay cap or the rate, dropped and counted.
        let mut b = T::with(config, 2, &[1]);
        let q = |i: u64, payload: usize, relay_factor: u8| Query {
            ltime: i,
            id: i,
            origin: id(1),
            filters: Vec::new(),
            ack: true,
            relay_factor,
            timeout_ms: 1000,
            name: "q".into(),
            payload: vec![0; payload],
        };
        b.msg(1, Message::Query(Box::new(q(1, 1100, 0))));
        b.msg(1, Message::Query(Box::new(q(2, 0, 200))));
        assert_eq!(b.swim.stats().over_limit, 2);
        for i in 3..8 {
            b.msg(1, Message::Query(Box::new(q(i, 0, 0))));
        }
        assert_eq!(b.swim.stats().queries_in, 3, "one second's worth");
        assert_eq!(b.swim.stats().queries_limited, 2);
        // An answer after the deadline (1 s) is refused.
        b.ms = 1001;
        let r = b
            .swim
            .respond(at(1001), &id(1), 3, Vec::new(), &mut Vec::new());
        assert_eq!(r, Err(CommandError::QueryExpired));
        let r = b
            .swim
            .respond(at(1001), &id(1), 99, Vec::new(), &mut Vec::new());
        assert_eq!(r, Err(CommandError::QueryUnknown));
        let r = b
            .swim
            .respond(at(900), &id(1), 4, vec![0; 1100], &mut Vec::new());
        assert!(
            matches!(r, Err(CommandError::ResponseTooLarge { .. })),
            "{r:?}"
        );
    }

    /// A query or answer exactly at a limit is taken, one byte or relay more is not; an answer
    /// at the deadline itself is still sent.
    #[test]
    fn queries_and_answers_at_their_limits_are_taken() {
        let mut b = T::new(2, &[1]);
        let q = |i: u64, payload: usize, relay_factor: u8| Query {
            ltime: i,
            id: i,
            origin: id(1),
            filters: Vec::new(),
            ack: false,
            relay_factor,
            timeout_ms: 1000,
            name: "q".into(),
            payload: vec![0; payload],
        };
        let max = b.swim.config().query_len_max();
        // The payload's length prefix takes two bytes at this size.
        let most = max - query_len(&q(1, 0, 0)) - 1;
        assert_eq!(query_len(&q(1, most, 0)), max);
        // Measured on the bytes themselves, not by the rule under test.
        let encoded = |m: Message| {
            let mut bytes = Vec::new();
            m.encode_into(&mut bytes);
            bytes.len()
        };
        assert_eq!(encoded(Message::Query(Box::new(q(1, most, 0)))), max);
        b.msg(1, Message::Query(Box::new(q(1, most, 0))));
        b.msg(1, Message::Query(Box::new(q(2, 0, QUERY_RELAY_MAX))));
        assert_eq!(b.swim.stats().queries_in, 2);
        b.msg(1, Message::Query(Box::new(q(3, most + 1, 0))));
        b.msg(1, Message::Query(Box::new(q(4, 0, QUERY_RELAY_MAX + 1))));
        assert_eq!(
            (b.swim.stats().queries_in, b.swim.stats().over_limit),
            (2, 2)
        );
        // An answer of exactly the largest size, at the deadline (1 s after the query came).
        let rmax = b.swim.config().query_response_len_max();
        let answer = |payload: usize| QueryResponse {
            ltime: 1,
            id: 1,
            origin: id(1),
            from: id(2),
            ack: false,
            relay: false,
            payload: vec![0; payload],
        };
        let most = rmax - response_len(&answer(0)) - 1;
        assert_eq!(response_len(&answer(most)), rmax);
        let bytes = encoded(Message::QueryResponse(Box::new(answer(most))));
        assert_eq!(bytes, rmax);
        let r = b
            .swim
            .respond(at(1000), &id(1), 1, vec![0; most + 1], &mut Vec::new());
        assert!(
            matches!(r, Err(CommandError::ResponseTooLarge { .. })),
            "{r:?}"
        );
        let mut out = Vec::new();
        let r = b.swim.respond(at(1000), &id(1), 1, vec![0; most], &mut out);
        assert_eq!(r, Ok(()));
        assert_eq!(responses(&out).len(), 1);
        // From the wire: one of exactly the largest size is read (here: an answer to a query
        // b does not have, so late), one byte more is dropped as over the limit.
        b.ms = 1000;
        let mine = |payload: usize| QueryResponse {
            origin: id(2),
            from: id(1),
            ..answer(payload)
        };
        b.msg(1, Message::QueryResponse(Box::new(mine(most))));
        assert_eq!(
            (b.swim.stats().query_answers_late, b.swim.stats().over_limit),
            (1, 2)
        );
        b.msg(1, Message::QueryResponse(Box::new(mine(most + 1))));
        assert_eq!(b.swim.stats().over_limit, 3);
    }

    /// Queries and answers from the wire that lie about their time, their filters, their
    /// origin or their relaying are dropped and counted; a full table of queries to answer
    /// makes room without growing.
    #[test]
    fn hostile_queries_and_answers_are_dropped_and_counted() {
        let config = Config {
            queries_max: 2,
            queries_per_sec: 1000,
            ..Config::lan()
        };
        let mut b = T::with(config, 2, &[1, 3]);
        let q = |ltime: u64, id_: u64, timeout_ms: u32| Query {
            ltime,
            id: id_,
            origin: id(1),
            filters: Vec::new(),
            ack: false,
            relay_factor: 0,
            timeout_ms,
            name: "q".into(),
            payload: Vec::new(),
        };
        let send = |b: &mut T, q: Query| b.msg(1, Message::Query(Box::new(q)));
        // A Lamport time far ahead of ours: implausible, not taken and not passed on.
        let queued = b.swim.broadcast_queue_len();
        let out = send(&mut b, q(u64::MAX, 1, 1000));
        assert!(requests(&out).is_empty());
        assert_eq!(b.swim.stats().implausible, 1);
        assert_eq!(b.swim.broadcast_queue_len(), queued);
        // Taken once; the same again is a duplicate, dropped without a count.
        assert_eq!(requests(&send(&mut b, q(5_000, 2, 1000))).len(), 1);
        assert!(requests(&send(&mut b, q(5_000, 2, 1000))).is_empty());
        assert_eq!(b.swim.stats().queries_in, 1);
        // Older than the dedup window (user_event_buffer times back): too old, dropped.
        let dropped = b.swim.stats().dropped;
        assert!(requests(&send(&mut b, q(1, 3, 1000))).is_empty());
        assert_eq!(b.swim.stats().dropped, dropped + 1);
        // A filter that does not compile here: passed on, not taken, counted.
        let mut bad = q(5_001, 4, 1000);
        bad.filters = vec![QueryFilter::Tag {
            key: "role".into(),
            pattern: "(".into(),
        }];
        let queued = b.swim.broadcast_queue_len();
        assert!(requests(&send(&mut b, bad)).is_empty());
        assert_eq!(b.swim.stats().dropped, dropped + 2);
        assert_eq!(b.swim.broadcast_queue_len(), queued + 1, "passed on");

        // Queries to answer are kept at four times queries_max (8): query 2 is held; 8 more
        // with later deadlines push out the one whose deadline is nearest (query 2's).
        for i in 0..8 {
            assert_eq!(requests(&send(&mut b, q(5_010 + i, 10 + i, 2000))).len(), 1);
        }
        assert_eq!(b.swim.queries.answering.len(), 8);
        let r = b
            .swim
            .respond(at(b.ms), &id(1), 2, Vec::new(), &mut Vec::new());
        assert_eq!(r, Err(CommandError::QueryUnknown));
        b.swim
            .respond(at(b.ms), &id(1), 10, Vec::new(), &mut Vec::new())
            .unwrap();
        // Later, the expired go first: all 8 (deadline 2 s), and the new one is the only one.
        b.ms = 2_001;
        assert_eq!(requests(&send(&mut b, q(5_100, 99, 1000))).len(), 1);
        assert_eq!(b.swim.queries.answering.len(), 1);

        // Answers: too large, counted; not for us and not relayed, misdirected; relayed to
        // an origin that is not live here, misdirected too.
        let resp = |origin: u8, relay: bool, payload: usize| QueryResponse {
            ltime: 5_100,
            id: 99,
            origin: id(origin),
            from: id(3),
            ack: false,
            relay,
            payload: vec![0; payload],
        };
        let answer = |b: &mut T, r: QueryResponse| b.msg(3, Message::QueryResponse(Box::new(r)));
        let over = b.swim.stats().over_limit;
        assert!(responses(&answer(&mut b, resp(1, true, 1100))).is_empty());
        assert_eq!(b.swim.stats().over_limit, over + 1);
        let misdirected = b.swim.stats().misdirected;
        assert!(responses(&answer(&mut b, resp(1, false, 0))).is_empty());
        assert!(responses(&answer(&mut b, resp(9, true, 0))).is_empty());
        assert_eq!(b.swim.stats().misdirected, misdirected + 2);
        // Relayed to a live origin: passed on once, marked as no longer relayed; at most
        // RELAYS_PER_SEC a second (the relay to a stranger above took one of them).
        let out = answer(&mut b, resp(1, true, 0));
        assert_eq!(responses(&out), vec![(addr(1), resp(1, false, 0))]);
        for _ in 2..RELAYS_PER_SEC {
            answer(&mut b, resp(1, true, 0));
        }
        assert_eq!(b.swim.stats().query_relays, u64::from(RELAYS_PER_SEC - 1));
        assert!(responses(&answer(&mut b, resp(1, true, 0))).is_empty());
        assert_eq!(b.swim.stats().queries_limited, 1);

        // Our answer to a query whose origin has since failed here: not sent, counted.
        fail(&mut b, 1);
        let mut out = Vec::new();
        b.swim
            .respond(at(b.ms), &id(1), 99, Vec::new(), &mut out)
            .unwrap();
        assert!(responses(&out).is_empty());
        assert_eq!(b.swim.stats().misdirected, misdirected + 3);
    }

    #[test]
    fn a_leaving_node_asks_nothing_and_a_timeout_under_a_millisecond_is_refused() {
        let mut a = T::new(1, &[2]);
        let mut quick = QueryParams::new("q", Vec::new());
        quick.timeout = Some(Duration::from_micros(999));
        let r = a.swim.query(at(0), quick, &mut Vec::new());
        assert!(matches!(r, Err(CommandError::BadQuery(_))), "{r:?}");
        let mut ms = QueryParams::new("q", Vec::new());
        ms.timeout = Some(Duration::from_millis(1));
        assert!(a.swim.query(at(0), ms, &mut Vec::new()).is_ok());
        a.input(crate::cluster::Input::Command(Command::Leave));
        let r = a
            .swim
            .query(at(0), QueryParams::new("q", Vec::new()), &mut Vec::new());
        assert_eq!(r, Err(CommandError::Left));
    }

    #[test]
    fn answers_from_strangers_and_for_other_queries_are_dropped() {
        let mut a = T::new(1, &[2]);
        let (qid, q) = ask(&mut a, QueryParams::new("q", Vec::new()));
        let dropped = a.swim.stats().dropped;
        let ack = |from: u8, ltime: u64, id_: u64| QueryResponse {
            ltime,
            id: id_,
            origin: id(1),
            from: id(from),
            ack: true,
            relay: false,
            payload: Vec::new(),
        };
        assert!(
            answers(&a.msg(2, Message::QueryResponse(Box::new(ack(9, q.ltime, qid))))).is_empty()
        );
        assert!(answers(&a.msg(
            2,
            Message::QueryResponse(Box::new(ack(2, q.ltime + 1, qid)))
        ))
        .is_empty());
        assert!(answers(&a.msg(
            2,
            Message::QueryResponse(Box::new(ack(2, q.ltime, qid ^ 1)))
        ))
        .is_empty());
        let s = a.swim.stats();
        assert_eq!((s.dropped - dropped, s.query_answers_late), (2, 1));
        assert_eq!(
            answers(&a.msg(2, Message::QueryResponse(Box::new(ack(2, q.ltime, qid))))).len(),
            1
        );
        // An ack without an answer is taking part: not missing (the origin acks itself).
        let out = a.timer(Timer::QueryEnd { id: qid });
        assert_eq!(
            answers(&out),
            vec![QueryAnswer::Done(QuerySummary {
                acks: vec![id(1), id(2)],
                responses: Vec::new(),
                missing: Vec::new(),
            })]
        );
    }

    #[test]
    fn a_query_from_a_stranger_is_passed_on_but_not_taken() {
        let mut b = T::new(2, &[1]);
        let q = Query {
            ltime: 1,
            id: 5,
            origin: id(9),
            filters: Vec::new(),
            ack: true,
            relay_factor: 0,
            timeout_ms: 1000,
            name: "rm".into(),
            payload: Vec::new(),
        };
        let out = b.msg(1, Message::Query(Box::new(q)));
        assert!(requests(&out).is_empty() && responses(&out).is_empty());
        assert!(b.swim.broadcast_queue_len() > 0, "passed on");
        assert_eq!(b.swim.stats().misdirected, 1);
    }

    #[test]
    fn the_default_timeout_scales_with_the_cluster_as_serfs() {
        let t = T::new(1, &[2, 3, 4, 5, 6, 7, 8, 9]);
        // 9 members: ceil(log10(10)) = 1; 200 ms x 16.
        assert_eq!(t.swim.default_query_timeout(), Duration::from_millis(3200));
        // 10: ceil(log10(11)) = 2, the first size past one decade.
        let t = T::new(1, &(2..=10).collect::<Vec<u8>>());
        assert_eq!(t.swim.default_query_timeout(), Duration::from_millis(6400));
        let t = T::new(1, &(2..=50).collect::<Vec<u8>>());
        assert_eq!(t.swim.default_query_timeout(), Duration::from_millis(6400));
    }
}
