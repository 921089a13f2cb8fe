//! Any bytes: the packet decoder returns an error or messages that re-encode to a decodable packet.
#![no_main]
use distributed_core::testing::{decode_packet, encode_packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = decode_packet(data) {
        let again = decode_packet(&encode_packet(&p.messages)).expect("re-encoded packet decodes");
        assert_eq!(again.messages, p.messages);
    }
});
