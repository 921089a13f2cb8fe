//! Live counters shared by tasks and threads, and `counters!`, the macro that declares a set of them with
//! its plain snapshot.
//!
//! Every layer that counts (transport, chaos, the node's traffic, the WAL) keeps relaxed
//! atomics that its tasks bump, and hands out a `Copy` struct of plain numbers for metrics and
//! the admin API. `counters!` writes both structs and the `snapshot()`
//! between them from one list, so a new counter is one line.

use std::sync::atomic::{AtomicU64, Ordering};

/// One live count (a relaxed atomic: each value is exact; a snapshot of several is not one
/// instant).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n` (wrapping at `u64::MAX`, which no real count reaches).
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n`, for counts that are gauges (items held now).
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Declares a struct of live [`Counter`]s and a snapshot struct of the same fields as `u64`,
/// with `snapshot()` from the first to the second.
///
/// ```ignore
/// counters! {
///     /// Live counters of the thing.
///     pub struct ThingCounters;
///     /// The counters as numbers.
///     #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
///     pub struct ThingStats {
///         /// Things sent.
///         sent,
///     }
///     // Fields of the snapshot that are not counters: left at `Default` by `snapshot()`,
///     // filled in by the caller.
///     extra {}
/// }
/// ```
macro_rules! counters {
    (
        $(#[$live_meta:meta])*
        $live_vis:vis struct $Live:ident;
        $(#[$snap_meta:meta])*
        $snap_vis:vis struct $Snap:ident {
            $( $(#[$field_meta:meta])* $field:ident ),* $(,)?
        }
        extra {
            $( $(#[$extra_meta:meta])* $extra_vis:vis $extra:ident : $extra_ty:ty ),* $(,)?
        }
    ) => {
        $(#[$live_meta])*
        #[derive(Debug, Default)]
        $live_vis struct $Live {
            $( $(#[$field_meta])* pub $field: $crate::common::Counter, )*
        }

        $(#[$snap_meta])*
        $snap_vis struct $Snap {
            $( $(#[$field_meta])* pub $field: u64, )*
            $( $(#[$extra_meta])* $extra_vis $extra: $extra_ty, )*
        }

        impl $Live {
            /// Every counter now (each exact; together not one instant). Fields of the snapshot
            /// that are not counters are left at their default.
            #[allow(clippy::needless_update)]
            pub fn snapshot(&self) -> $Snap {
                $Snap {
                    $( $field: self.$field.get(), )*
                    ..::core::default::Default::default()
                }
            }
        }
    };
}
pub(crate) use counters;

#[cfg(test)]
mod tests {
    crate::common::counters! {
        /// Test counters.
        struct Live;
        /// Their snapshot.
        #[derive(Debug, Default, PartialEq, Eq)]
        struct Snap {
            /// One.
            a,
            /// Two.
            b,
        }
        extra {
            /// Not a counter.
            note: &'static str,
        }
    }

    #[test]
    fn snapshot_copies_every_counter_and_defaults_the_rest() {
        let live = Live::default();
        live.a.add(3);
        live.b.add(5);
        live.b.sub(1);
        assert_eq!(
            live.snapshot(),
            Snap {
                a: 3,
                b: 4,
                note: ""
            }
        );
    }
}
