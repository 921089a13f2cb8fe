//! Any bytes: the frame decoder returns an error or a body inside the input.
#![no_main]
use distributed_core::testing::decode_frame;
use distributed_core::transport::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, body)) = decode_frame(data) {
        assert_eq!(body.len() + frame::FRAME_HEADER_BYTES, data.len());
    }
});
