//! Metrics: the node's figures in Prometheus form, and the same figures as JSON.
//!
//! Figures are read at scrape time from a [`Snapshot`] (the node's counters and histograms,
//! plus chaos and WAL figures when those are in use), so nothing is counted twice and a scrape
//! costs one request to the node's driver. Names follow `dcore_<area>_<what>_<unit>`.
//!
//! Two formats: the classic Prometheus text format 0.0.4 (the default: promtool 2.42 and older
//! scrapers reject prometheus-client's OpenMetrics help lines for counters), and OpenMetrics
//! 1.0 when the scraper asks for it in `Accept`.

use crate::common::Histogram;
use crate::identity::NodeId;
use crate::node::{KindCount, MemberHealth, NodeStats};
use crate::persistence::wal::WalFigures;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::BTreeMap;

/// Everything `/metrics` and `/v1/metrics` show.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The node's own figures.
    pub node: NodeStats,
    /// What the node measures of each member it has heard an ack from (phi at the time of the
    /// snapshot, round trips).
    pub member_health: BTreeMap<NodeId, MemberHealth>,
    /// Faults injected by the chaos layer, by kind.
    pub chaos_faults: BTreeMap<String, u64>,
    /// The WAL's figures, if the node persists.
    pub wal: Option<WalFigures>,
    /// Requests and connections the admin API refused, by reason (`admin_host`, ...): shown
    /// in `dcore_rejected_total` next to the node's own reasons.
    pub admin_rejected: BTreeMap<String, u64>,
}

/// The exposition format of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `accept` names `application/openmetrics-text`, else the classic text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Renders `snap` in `format`.
pub fn render(snap: &Snapshot, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snap.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    match format {
        Format::OpenMetrics => out,
        Format::Text => openmetrics_to_text(&out),
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: a counter's `# HELP` and `# TYPE` lines
/// name its sample (`x_total`), and `# UNIT` and `# EOF` lines go.
pub(crate) fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

/// A value encoded as one sample of a metric.
enum Value<'a> {
    Counter(u64),
    Gauge(i64),
    GaugeF64(f64),
    Histogram(&'a Histogram),
}

impl EncodeMetric for Value<'_> {
    fn encode(&self, mut e: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Value::Counter(v) => e.encode_counter::<NoLabelSet, _, u64>(v, None),
            Value::Gauge(v) => e.encode_gauge(v),
            Value::GaugeF64(v) => e.encode_gauge(v),
            Value::Histogram(h) => {
                // prometheus-client writes le="+Inf" only for f64::MAX; INFINITY came out "inf".
                let b: Vec<_> = h
                    .per_bucket()
                    .into_iter()
                    .map(|(le, n)| (le.min(f64::MAX), n))
                    .collect();
                e.encode_histogram::<NoLabelSet>(h.sum_seconds(), h.count(), &b, None)
            }
        }
    }

    fn metric_type(&self) -> MetricType {
        match self {
            Value::Counter(_) => MetricType::Counter,
            Value::Gauge(_) | Value::GaugeF64(_) => MetricType::Gauge,
            Value::Histogram(_) => MetricType::Histogram,
        }
    }
}

fn one(e: &mut DescriptorEncoder, name: &str, help: &str, v: Value) -> std::fmt::Result {
    let m = e.encode_descriptor(name, help, None, v.metric_type())?;
    v.encode(m)
}

fn family<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    rows: impl IntoIterator<Item = (Vec<(&'a str, String)>, Value<'a>)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in rows {
        v.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for SnapshotCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = &self.0;
        members(&mut e, &snap.node)?;
        member_health(&mut e, &snap.member_health)?;
        core(&mut e, &snap.node)?;
        messages(&mut e, &snap.node.messages)?;
        transport(&mut e, &snap.node, &snap.admin_rejected)?;
        chaos(&mut e, &snap.chaos_faults)?;
        if let Some(w) = &snap.wal {
            wal(&mut e, w)?;
        }
        Ok(())
    }
}

/// Labels of one sample: `(name, value)` pairs.
fn labels<'a>(pairs: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// A counter family with one label: `(label value, count)` rows.
fn counters_by(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    rows: &[(&str, u64)],
) -> std::fmt::Result {
    family(
        e,
        name,
        help,
        MetricType::Counter,
        rows.iter()
            .map(|(v, n)| (labels(&[(label, v)]), Value::Counter(*n))),
    )
}

/// Members by state, this node's incarnation, health and broadcast queue.
fn members(e: &mut DescriptorEncoder, s: &NodeStats) -> std::fmt::Result {
    let states = [
        ("alive", s.members.alive),
        ("suspect", s.members.suspect),
        ("failed", s.members.failed),
        ("left", s.members.left),
    ];
    family(
        e,
        "dcore_members",
        "Other members by state, as this node sees them",
        MetricType::Gauge,
        states
            .iter()
            .map(|(st, n)| (labels(&[("state", st)]), Value::Gauge(*n as i64))),
    )?;
    let gauges = [
        (
            "dcore_incarnation",
            "This node's incarnation",
            s.incarnation as i64,
        ),
        (
            "dcore_health_score",
            "Lifeguard local health: 0 is healthy, higher stretches probe timeouts",
            i64::from(s.health),
        ),
        (
            "dcore_broadcast_queue_messages",
            "Claims and events waiting to be piggybacked",
            s.broadcast_queue as i64,
        ),
    ];
    for (name, help, v) in gauges {
        one(e, name, help, Value::Gauge(v))?;
    }
    Ok(())
}

/// Per member: phi and smoothed round trip, as this node measures them.
fn member_health(
    e: &mut DescriptorEncoder,
    health: &BTreeMap<NodeId, MemberHealth>,
) -> std::fmt::Result {
    family(
        e,
        "dcore_member_phi",
        "Phi-accrual suspicion level of each member, from the acks to this node's pings: about 0 just after an ack, rising with silence (8: such a gap is a 1e-8 event for a live member)",
        MetricType::Gauge,
        health
            .iter()
            .map(|(id, h)| (labels(&[("member", id.as_str())]), Value::GaugeF64(h.phi))),
    )?;
    family(
        e,
        "dcore_member_rtt_seconds",
        "Smoothed round trip (SRTT, 1/8 weight per sample) of the pings each member answered itself",
        MetricType::Gauge,
        health.iter().filter_map(|(id, h)| {
            let rtt = h.rtt?;
            Some((
                labels(&[("member", id.as_str())]),
                Value::GaugeF64(rtt.as_secs_f64()),
            ))
        }),
    )
}

/// The protocol core's counters and histograms.
fn core(e: &mut DescriptorEncoder, s: &NodeStats) -> std::fmt::Result {
    let c = &s.core;
    let counters = [
        ("dcore_probes", "Probes started", c.probes),
        (
            "dcore_probes_failed",
            "Probes that ended without any ack",
            c.probes_failed,
        ),
        (
            "dcore_probes_late",
            "Probes this node ran an ack wait late (no suspicion raised; local health lowered)",
            c.probes_late,
        ),
        ("dcore_indirect_probes", "Ping-reqs sent", c.indirect_probes),
        ("dcore_nacks_received", "Nacks received", c.nacks),
        (
            "dcore_suspicions_raised",
            "Suspicions this node raised after its own failed probes",
            c.suspicions_raised,
        ),
        (
            "dcore_suspicions_refuted",
            "Suspicions of this node that it refuted",
            c.refutations,
        ),
        (
            "dcore_failures_declared",
            "Members this node declared failed",
            c.failures_declared,
        ),
        ("dcore_user_events", "User events delivered", c.user_events),
        (
            "dcore_encryption_failures",
            "Datagrams and records that did not decrypt (unknown key, wrong key or label)",
            s.traffic.rejected_key,
        ),
    ];
    for (name, help, v) in counters {
        one(e, name, help, Value::Counter(v))?;
    }
    counters_by(
        e,
        "dcore_push_pulls",
        "Anti-entropy exchanges (syncs, and full-state push-pulls to join), started here or answered",
        "role",
        &[
            ("started", c.push_pulls),
            ("answered", c.push_pulls_answered),
        ],
    )?;
    counters_by(
        e,
        "dcore_sync_rows",
        "Member rows carried by syncs (the rows a peer's digest did not hold)",
        "direction",
        &[
            ("sent", c.sync_rows_sent),
            ("received", c.sync_rows_received),
        ],
    )?;
    counters_by(
        e,
        "dcore_direct_messages",
        "Direct messages (Node::send, send_reliable): sent from here (handed to the network or queued), delivered here, or refused here because their sender is not a live member at the address they came from",
        "outcome",
        &[
            ("sent", s.traffic.direct_sent),
            ("delivered", c.direct_in),
            ("refused", c.direct_refused),
        ],
    )?;
    counters_by(
        e,
        "dcore_queries",
        "Queries from other members taken here (passed on, answered when selected), dropped past queries_per_sec (or relays past their rate), handed to no handler because its queue was full",
        "outcome",
        &[
            ("taken", c.queries_in),
            ("limited", c.queries_limited),
            ("unhandled", s.traffic.queries_unhandled),
        ],
    )?;
    counters_by(
        e,
        "dcore_query_answers",
        "Acknowledgements and answers: taken for this node's queries, arrived after their query ended, relayed to their query's origin",
        "outcome",
        &[
            ("taken", c.query_answers_in),
            ("late", c.query_answers_late),
            ("relayed", c.query_relays),
        ],
    )?;
    one(
        e,
        "dcore_join_syncs",
        "Syncs made by the join sync while the cluster formed (see join_sync_interval)",
        Value::Counter(c.join_syncs),
    )?;
    one(
        e,
        "dcore_probe_duration_seconds",
        "From a probe's ping to its first ack, direct or relayed through ping-req",
        Value::Histogram(&c.probe_rtt),
    )?;
    one(
        e,
        "dcore_ping_rtt_seconds",
        "Round trip of every ping answered by the member pinged (probes, TCP fallback, pings run for ping-reqs); acks relayed through ping-req excluded",
        Value::Histogram(&s.ping_rtt),
    )?;
    one(
        e,
        "dcore_push_pull_duration_seconds",
        "From sending a push-pull to merging its answer",
        Value::Histogram(&c.push_pull_duration),
    )
}

/// Which number of a [`KindCount`] a family shows.
type KindValue = fn(&KindCount) -> u64;

/// Protocol messages and their bytes by direction, transport and kind.
fn messages(e: &mut DescriptorEncoder, kinds: &[KindCount]) -> std::fmt::Result {
    let by_kind: [(&str, &str, KindValue); 2] = [
        (
            "dcore_messages",
            "Protocol messages by direction, transport and kind",
            |k| k.messages,
        ),
        (
            "dcore_message_bytes",
            "Encoded bytes of protocol messages by direction, transport and kind (frame and packet headers excluded)",
            |k| k.bytes,
        ),
    ];
    for (name, help, value) in by_kind {
        family(
            e,
            name,
            help,
            MetricType::Counter,
            kinds.iter().map(|k| {
                (
                    labels(&[
                        ("direction", k.direction),
                        ("transport", k.transport),
                        ("kind", k.kind),
                    ]),
                    Value::Counter(value(k)),
                )
            }),
        )?;
    }
    Ok(())
}

/// Frame bytes, rejected input (the admin API's refusals too), outgoing connections and dropped
/// records.
fn transport(
    e: &mut DescriptorEncoder,
    s: &NodeStats,
    admin_rejected: &BTreeMap<String, u64>,
) -> std::fmt::Result {
    let t = &s.traffic;
    let tr = &t.transport;
    let bytes = [
        ("in", "udp", t.datagram_bytes_in),
        ("in", "tcp", t.stream_bytes_in),
        ("out", "udp", t.datagram_bytes_out),
        ("out", "tcp", t.stream_bytes_out),
    ];
    family(
        e,
        "dcore_transport_bytes",
        "Frame bytes by direction and transport (no IP/UDP/TCP headers)",
        MetricType::Counter,
        bytes.iter().map(|(d, tp, v)| {
            (
                labels(&[("direction", d), ("transport", tp)]),
                Value::Counter(*v),
            )
        }),
    )?;
    let mut rejected = vec![
        ("frame", t.rejected_frame),
        ("key", t.rejected_key),
        ("plain", t.rejected_plain),
        ("label", t.rejected_label),
        ("stale", t.rejected_stale),
        ("replayed", t.rejected_replayed),
        ("packet", t.rejected_packet),
        ("stream", t.rejected_stream),
        ("spoofed", t.rejected_spoofed),
        ("oversized", tr.stream_oversized),
        ("stalled", tr.stream_timeouts),
        ("invalid_record", tr.stream_invalid),
        ("too_many_streams", tr.inbound_refused),
        ("too_many_streams_per_ip", tr.inbound_refused_ip),
        ("queue_full", tr.queue_full),
        ("protocol", s.core.dropped),
        ("implausible", s.core.implausible),
        ("over_limit", s.core.over_limit),
        ("misdirected", s.core.misdirected),
        ("not_allowed", s.core.not_allowed),
        ("table_full", s.core.table_full),
        ("admission", s.core.admission),
        ("conflict", s.core.conflicts),
    ];
    rejected.extend(admin_rejected.iter().map(|(k, v)| (k.as_str(), *v)));
    counters_by(
        e,
        "dcore_rejected",
        "Input refused and dropped, by reason",
        "reason",
        &rejected,
    )?;
    counters_by(
        e,
        "dcore_transport_connections",
        "Outgoing stream connections by outcome",
        "outcome",
        &[
            ("opened", tr.connections_opened),
            ("failed", tr.connections_failed),
            ("evicted", tr.connections_evicted),
        ],
    )?;
    one(
        e,
        "dcore_members_evicted",
        "Failed or departed members dropped early to keep at most as many as active ones",
        Value::Counter(s.core.evicted),
    )?;
    one(
        e,
        "dcore_transport_stream_records_dropped",
        "Outgoing stream records dropped (peer in backoff, queue full, write failed)",
        Value::Counter(tr.streams_out_dropped),
    )
}

/// Faults injected by the chaos layer.
fn chaos(e: &mut DescriptorEncoder, faults: &BTreeMap<String, u64>) -> std::fmt::Result {
    let rows: Vec<(&str, u64)> = faults.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    counters_by(
        e,
        "dcore_chaos_faults",
        "Faults injected by the chaos layer, by kind",
        "kind",
        &rows,
    )
}

/// The write-ahead log's appends and fsyncs.
fn wal(e: &mut DescriptorEncoder, w: &WalFigures) -> std::fmt::Result {
    one(
        e,
        "dcore_wal_appends",
        "WAL records appended",
        Value::Counter(w.stats.records),
    )?;
    one(
        e,
        "dcore_wal_fsyncs",
        "WAL fsyncs",
        Value::Counter(w.stats.fsyncs),
    )?;
    one(
        e,
        "dcore_wal_fsync_duration_seconds",
        "How long WAL fsyncs took",
        Value::Histogram(&w.fsync_duration),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_renamed_for_the_classic_text_format() {
        let om = "# HELP a_b Things.\n# TYPE a_b counter\n# UNIT a_b seconds\na_b_total 3\n\
                  # HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total 3\n\
             # HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn formats_are_negotiated_from_accept() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
    }
}
