//! Every request type: decode arbitrary bytes and validate them as the handlers do.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = dispatch_grpc::fuzzing::decode_and_validate(data);
});
