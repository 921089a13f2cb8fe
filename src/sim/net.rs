//! The network model: addresses, latency, loss, TCP-like streams, and honest byte counts.

use crate::cluster::message::packet_len;
use crate::cluster::Message;
use crate::transport::frame::{ENCRYPTION_OVERHEAD_BYTES, FRAME_HEADER_BYTES, UDP_IP_HEADER_BYTES};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Port every simulated node listens on.
pub const PORT: u16 = 7946;
/// TCP segments in a stream exchange that can each be lost: SYN, data, and its ack.
const STREAM_SEGMENTS: usize = 3;
/// Retransmissions per segment before the stream gives up.
const STREAM_RETRIES_MAX: u32 = 5;
/// Linux's initial SYN retransmission timeout.
const SYN_RTO: Duration = Duration::from_secs(1);
/// Linux's minimum retransmission timeout for data.
const DATA_RTO: Duration = Duration::from_millis(200);
/// TCP/IP header bytes per segment.
const TCP_IP_HEADER_BYTES: usize = 40;
/// Payload bytes per TCP segment (Ethernet MSS with timestamps).
const TCP_MSS: usize = 1448;

/// Node `i`'s address: `127.{(i>>16)+1}.{(i>>8)&255}.{i&255}:7946`. Loopback, never used for
/// real traffic.
pub fn addr(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(1 + (i >> 16) as u8, (i >> 8) as u8, i as u8, 0);
    let o = ip.octets();
    SocketAddr::from((Ipv4Addr::new(127, o[0], o[1], o[2]), PORT))
}

/// The node index behind a simulated address.
pub fn index(addr: SocketAddr) -> Option<usize> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    let [a, b, c, d] = v4.ip().octets();
    if a != 127 || b == 0 || v4.port() != PORT {
        return None;
    }
    Some((usize::from(b - 1) << 16) | (usize::from(c) << 8) | usize::from(d))
}

/// The model's knobs.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    /// One-way latency range, inclusive.
    pub latency: (Duration, Duration),
    /// Datagram (and TCP segment) loss probability.
    pub loss: f64,
    /// Datagram duplication probability.
    pub dup: f64,
    /// Count encryption overhead.
    pub encrypt: bool,
}

impl Model {
    pub fn latency(&self, rng: &mut ChaCha8Rng) -> Duration {
        let (lo, hi) = (
            self.latency.0.as_micros() as u64,
            self.latency.1.as_micros() as u64,
        );
        Duration::from_micros(rng.gen_range(lo..=hi))
    }

    /// Delays for a datagram: none if lost, one or two (duplicated) otherwise.
    pub fn datagram(&self, rng: &mut ChaCha8Rng) -> (Option<Duration>, Option<Duration>) {
        if self.loss > 0.0 && rng.gen_bool(self.loss) {
            return (None, None);
        }
        let first = self.latency(rng);
        let dup = (self.dup > 0.0 && rng.gen_bool(self.dup)).then(|| self.latency(rng));
        (Some(first), dup)
    }

    /// Delay of a stream message (a short TCP exchange): each segment lost with the loss
    /// probability is retransmitted after an RTO; too many losses and the stream fails (`None`).
    pub fn stream(&self, rng: &mut ChaCha8Rng) -> Option<Duration> {
        let mut delay = self.latency(rng);
        for segment in 0..STREAM_SEGMENTS {
            let rto = if segment == 0 { SYN_RTO } else { DATA_RTO };
            let mut tries = 0;
            while self.loss > 0.0 && rng.gen_bool(self.loss) {
                tries += 1;
                if tries > STREAM_RETRIES_MAX {
                    return None;
                }
                delay += rto * (1 << (tries - 1));
            }
        }
        Some(delay)
    }

    /// Bytes a datagram of `msgs` takes on the wire, IP header included.
    pub fn datagram_bytes(&self, msgs: &[Message]) -> usize {
        packet_len(msgs) + FRAME_HEADER_BYTES + UDP_IP_HEADER_BYTES + self.crypto()
    }

    /// Bytes a stream message takes on the wire, TCP/IP headers included (handshake excluded).
    pub fn stream_bytes(&self, msg: &Message) -> usize {
        let payload = packet_len(std::slice::from_ref(msg)) + FRAME_HEADER_BYTES + self.crypto();
        payload + payload.div_ceil(TCP_MSS) * TCP_IP_HEADER_BYTES
    }

    fn crypto(&self) -> usize {
        if self.encrypt {
            ENCRYPTION_OVERHEAD_BYTES
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn addresses_round_trip_and_stay_on_loopback() {
        for i in [0, 1, 255, 256, 65_535, 65_536, 1_000_000] {
            let a = addr(i);
            assert!(a.ip().is_loopback(), "{a}");
            assert_eq!(index(a), Some(i));
        }
        assert_eq!(index("127.0.0.1:7946".parse().unwrap()), None);
        assert_eq!(index("10.1.0.0:7946".parse().unwrap()), None);
    }

    #[test]
    fn loss_model_matches_its_probability() {
        let m = Model {
            latency: (Duration::from_millis(1), Duration::from_millis(5)),
            loss: 0.1,
            dup: 0.0,
            encrypt: false,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let lost = (0..10_000)
            .filter(|_| m.datagram(&mut rng).0.is_none())
            .count();
        assert!((900..1100).contains(&lost), "{lost}");
        // Streams survive loss but slow down: some take an RTO or more.
        let slow = (0..1000)
            .filter_map(|_| m.stream(&mut rng))
            .filter(|d| *d >= DATA_RTO)
            .count();
        assert!(slow > 100, "{slow}");
    }
}
