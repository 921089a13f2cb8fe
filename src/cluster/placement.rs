//! Placement: which members own a key, by rendezvous (highest-random-weight) hashing.
//!
//! Every member gets a score for the key, a hash of the key seeded by the member's name; the
//! `n` highest scores own it. Nothing is stored or exchanged: two nodes that see the same live
//! members name the same owners, and when one member leaves only the keys it owned move (each
//! to the member with the next score), about `1/N` of them. Weights follow the weighted form
//! (Schindelhauer and Schomaker): the score is `w / -ln(u)` for the hash `u` in (0, 1), so a
//! member of weight 2 owns about twice the keys of one of weight 1, and weight 0 owns none.
//!
//! Placement is as consistent as membership: during a change, nodes that have not heard of it
//! yet name the old owners.
//!
//! ```
//! use distributed_core::cluster::placement::{owners, PlacementFilter};
//! use distributed_core::cluster::{MemberState, MemberView};
//! use distributed_core::identity::{Incarnation, NodeId, NodeInfo};
//! use std::sync::Arc;
//!
//! let member = |name: &str, port: u16| MemberView {
//!     info: Arc::new(NodeInfo::new(NodeId::new(name).unwrap(), ([127, 0, 0, 1], port).into())),
//!     incarnation: Incarnation(0),
//!     state: MemberState::Alive,
//! };
//! let members = [member("a", 1), member("b", 2), member("c", 3)];
//! let two = owners(b"room-42", &members, 2, &PlacementFilter::default());
//! assert_eq!(two.len(), 2);
//! // Without its first owner, the key goes to its second.
//! let rest: Vec<_> = members.iter().filter(|m| m.info.id != two[0].info.id).cloned().collect();
//! assert_eq!(owners(b"room-42", &rest, 1, &PlacementFilter::default())[0].info.id, two[1].info.id);
//! ```

use super::{MemberState, MemberView};
use regex::Regex;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Owners asked for at most (`n` above this is cut to it).
pub const OWNERS_MAX: usize = 64;

/// Which members may own keys, and how much each weighs.
#[derive(Debug, Clone, Default)]
pub struct PlacementFilter {
    /// Every `(tag, pattern)` must hold: the member has the tag and the pattern matches its
    /// whole value (anchored, unlike serf's filters: `role=web` does not match `webserver`).
    pub tags: Vec<(String, Regex)>,
    /// The tag holding a member's weight, a finite number ≥ 0; a member without the tag
    /// weighs 1, one whose tag is not such a number owns nothing. `None`: all weigh 1.
    pub weight_tag: Option<String>,
}

impl PlacementFilter {
    /// A filter from `tag=regex` strings (the CLI's and the HTTP API's form).
    pub fn parse(tags: &[String], weight_tag: Option<String>) -> Result<Self, PlacementError> {
        let tags = tags
            .iter()
            .map(|t| {
                let (k, re) = t
                    .split_once('=')
                    .ok_or_else(|| PlacementError::Filter(format!("{t:?}: want tag=regex")))?;
                let re = Regex::new(&format!("^(?:{re})$"))
                    .map_err(|e| PlacementError::Filter(format!("{t:?}: {e}")))?;
                Ok((k.to_string(), re))
            })
            .collect::<Result<_, PlacementError>>()?;
        Ok(PlacementFilter { tags, weight_tag })
    }

    /// The member's weight, or `None` when it may not own keys.
    fn weight(&self, m: &MemberView) -> Option<f64> {
        if !matches!(m.state, MemberState::Alive | MemberState::Suspect) {
            return None;
        }
        let tags = &m.info.tags;
        let matches = self
            .tags
            .iter()
            .all(|(k, re)| tags.get(k).is_some_and(|v| re.is_match(v)));
        if !matches {
            return None;
        }
        let w = match self.weight_tag.as_ref().and_then(|t| tags.get(t)) {
            None => 1.0,
            Some(v) => v.trim().parse::<f64>().ok()?,
        };
        (w.is_finite() && w > 0.0).then_some(w)
    }
}

/// A filter that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// A tag filter is not `tag=regex`, or its regex does not compile.
    #[error("bad tag filter {0}")]
    Filter(String),
}

/// The member's score for the key: higher wins.
fn score(key: &[u8], m: &MemberView, weight: f64) -> f64 {
    let h = xxh3_64_with_seed(key, xxh3_64(m.info.id.as_str().as_bytes()));
    // 53 random bits as a float strictly inside (0, 1).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight / -u.ln()
}

/// The (at most) `n` owners of `key` among the live members (alive or suspect) that `filter`
/// lets in, best first. `n` is cut to [`OWNERS_MAX`].
pub fn owners<'a>(
    key: &[u8],
    members: impl IntoIterator<Item = &'a MemberView>,
    n: usize,
    filter: &PlacementFilter,
) -> Vec<&'a MemberView> {
    let n = n.min(OWNERS_MAX);
    if n == 0 {
        return Vec::new();
    }
    let mut scored: Vec<(f64, &MemberView)> = members
        .into_iter()
        .filter_map(|m| filter.weight(m).map(|w| (score(key, m, w), m)))
        .collect();
    // Best first; equal scores (not seen in practice) by name, so every node agrees.
    let order = |a: &(f64, &MemberView), b: &(f64, &MemberView)| {
        b.0.total_cmp(&a.0)
            .then_with(|| a.1.info.id.cmp(&b.1.info.id))
    };
    if scored.len() > n {
        scored.select_nth_unstable_by(n - 1, order);
        scored.truncate(n);
    }
    scored.sort_unstable_by(order);
    scored.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Incarnation, NodeId, NodeInfo};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn member(i: usize, tags: &[(&str, &str)]) -> MemberView {
        let mut info = NodeInfo::new(
            NodeId::new(&format!("node-{i}")).unwrap(),
            ([127, 0, 0, 1], 7000 + i as u16).into(),
        );
        for (k, v) in tags {
            info.tags.insert(k.to_string(), v.to_string());
        }
        MemberView {
            info: Arc::new(info),
            incarnation: Incarnation(0),
            state: MemberState::Alive,
        }
    }

    fn owner_of(key: usize, members: &[MemberView], f: &PlacementFilter) -> String {
        let key = format!("key-{key}");
        owners(key.as_bytes(), members, 1, f)[0]
            .info
            .id
            .as_str()
            .to_string()
    }

    const KEYS: usize = 100_000;

    /// Placement is a pure function other clients may compute (docs/coordination.md gives the
    /// formula): the expected values come from Python's `xxhash` package and the formula.
    #[test]
    fn scores_and_owners_are_the_documented_ones() {
        let named = |name: &str| MemberView {
            info: Arc::new(NodeInfo::new(
                NodeId::new(name).unwrap(),
                ([127, 0, 0, 1], 7000).into(),
            )),
            incarnation: Incarnation(0),
            state: MemberState::Alive,
        };
        for (key, name, weight, want) in [
            (&b"key-1"[..], "node-0", 1.0, 1.661_205_970_727_956_5),
            (b"key-1", "node-1", 2.5, 34.932_784_073_022_94),
            (b"", "node-7", 1.0, 1.257_736_742_276_563_7),
            (b"orders/42", "db-3", 0.5, 3.583_240_543_530_246_6),
        ] {
            let got = score(key, &named(name), weight);
            assert!(
                (got - want).abs() <= 1e-12 * want,
                "{name}: {got} against {want}"
            );
        }
        let members: Vec<MemberView> = (0..10)
            .map(|i| member(i, &[("w", if i == 3 { "2" } else { "1" })]))
            .collect();
        let f = PlacementFilter::parse(&[], Some("w".into())).unwrap();
        for (key, want) in [
            (&b"orders/42"[..], ["node-0", "node-3", "node-7"]),
            (b"key-7", ["node-3", "node-2", "node-5"]),
        ] {
            let got: Vec<&str> = owners(key, &members, 3, &f)
                .iter()
                .map(|m| m.info.id.as_str())
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn one_leave_moves_only_the_leavers_keys_and_about_one_in_n() {
        let members: Vec<_> = (0..100).map(|i| member(i, &[])).collect();
        let f = PlacementFilter::default();
        let before: Vec<_> = (0..KEYS).map(|k| owner_of(k, &members, &f)).collect();
        let leaver = "node-37";
        let rest: Vec<_> = members
            .iter()
            .filter(|m| m.info.id.as_str() != leaver)
            .cloned()
            .collect();
        let mut moved = 0;
        for (k, was) in before.iter().enumerate() {
            let now = owner_of(k, &rest, &f);
            if &now != was {
                assert_eq!(was, leaver, "key-{k} moved from a member that stayed");
                moved += 1;
            }
        }
        let share = moved as f64 / KEYS as f64;
        println!("one leave of 100 moved {moved} of {KEYS} keys ({share})");
        assert!(share <= 0.012, "{moved} keys moved ({share})");
        // The leaver owned keys, and all of them moved.
        assert_eq!(moved, before.iter().filter(|o| *o == leaver).count());
        assert!(moved > 0);
    }

    #[test]
    fn equal_weights_spread_keys_evenly_and_weights_scale_the_share() {
        let members: Vec<_> = (0..100).map(|i| member(i, &[])).collect();
        let f = PlacementFilter::default();
        let mut count: HashMap<String, usize> = HashMap::new();
        for k in 0..KEYS {
            *count.entry(owner_of(k, &members, &f)).or_default() += 1;
        }
        assert_eq!(count.len(), 100);
        let max = *count.values().max().unwrap() as f64;
        let mean = KEYS as f64 / 100.0;
        let min = *count.values().min().unwrap() as f64;
        println!(
            "100 members, {KEYS} keys: max/mean {} min/mean {}",
            max / mean,
            min / mean
        );
        assert!(max / mean <= 1.1, "max/mean {}", max / mean);

        // Weight 3 against 1: about three times the keys; weight 0 none.
        let members = [
            member(0, &[("w", "3")]),
            member(1, &[("w", "1")]),
            member(2, &[("w", "0")]),
            member(3, &[("w", "many")]),
        ];
        let f = PlacementFilter::parse(&[], Some("w".into())).unwrap();
        let mut count: HashMap<String, usize> = HashMap::new();
        for k in 0..20_000 {
            *count.entry(owner_of(k, &members, &f)).or_default() += 1;
        }
        assert_eq!(count.len(), 2, "{count:?}");
        let ratio = count["node-0"] as f64 / count["node-1"] as f64;
        println!("weights 3 and 1: {ratio}");
        assert!((2.7..3.3).contains(&ratio), "{ratio}");
    }

    #[test]
    fn only_a_finite_positive_weight_owns_keys_at_any_rank() {
        let members: Vec<_> = ["2", " 0.5 ", "0", "-1", "inf", "-inf", "NaN", "many", ""]
            .iter()
            .enumerate()
            .map(|(i, w)| member(i, &[("w", w)]))
            .collect();
        let f = PlacementFilter::parse(&[], Some("w".into())).unwrap();
        for key in 0..20 {
            let key = format!("key-{key}");
            let mut names: Vec<_> = owners(key.as_bytes(), &members, 10, &f)
                .iter()
                .map(|m| m.info.id.as_str().to_string())
                .collect();
            names.sort();
            assert_eq!(names, ["node-0", "node-1"], "{key}");
        }
    }

    #[test]
    fn filters_select_exactly_the_matching_live_members() {
        let mut members = vec![
            member(0, &[("role", "web")]),
            member(1, &[("role", "webserver")]),
            member(2, &[("role", "db")]),
            member(3, &[("role", "web"), ("zone", "b")]),
            member(4, &[]),
            member(5, &[("role", "web")]),
        ];
        let mut dead = member(6, &[("role", "web")]);
        dead.state = MemberState::Dead;
        members.push(dead);
        let mut suspect = member(7, &[("role", "web")]);
        suspect.state = MemberState::Suspect;
        members.push(suspect);
        let f = PlacementFilter::parse(&["role=web".into()], None).unwrap();
        let mut names: Vec<_> = owners(b"k", &members, 10, &f)
            .iter()
            .map(|m| m.info.id.as_str().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["node-0", "node-3", "node-5", "node-7"]);
        let f = PlacementFilter::parse(&["role=web|db".into(), "zone=.*".into()], None).unwrap();
        let got: Vec<_> = owners(b"k", &members, 10, &f)
            .iter()
            .map(|m| m.info.id.as_str().to_string())
            .collect();
        assert_eq!(got, ["node-3"]);
        assert!(PlacementFilter::parse(&["role".into()], None).is_err());
        assert!(PlacementFilter::parse(&["role=(".into()], None).is_err());
    }

    #[test]
    fn owners_are_distinct_ordered_and_bounded() {
        let members: Vec<_> = (0..10).map(|i| member(i, &[])).collect();
        let f = PlacementFilter::default();
        let three = owners(b"x", &members, 3, &f);
        let all = owners(b"x", &members, 100, &f);
        assert_eq!(all.len(), 10);
        assert_eq!(three, all[..3]);
        assert!(owners(b"x", &members, 0, &f).is_empty());
        let many: Vec<_> = (0..100).map(|i| member(i, &[])).collect();
        assert_eq!(owners(b"x", &many, usize::MAX, &f).len(), OWNERS_MAX);
    }
}
