//! Property test: no parser panics on any input, and frame lengths are
//! always checked before anything is allocated.

use proptest::prelude::*;

use super::*;

fn all_parsers(bytes: &[u8]) {
    let _ = frame::peek_frame(bytes, 1 << 20);
    let _ = startup::peek_startup_len(bytes);
    let _ = startup::decode(bytes);
    let _ = authentication::decode(bytes);
    let _ = authentication::decode_password(bytes);
    let _ = backend_key_data::decode(bytes);
    let _ = error_response::decode(bytes);
    let _ = parameter_status::decode(bytes);
    let _ = ready_for_query::decode(bytes);
    let _ = query::decode(bytes);
    let _ = parse::decode(bytes);
    let _ = bind::decode(bytes);
    let _ = bind::decode_parameters(bytes);
    let _ = describe::decode_describe(bytes);
    let _ = describe::decode_close(bytes);
    let _ = describe::execute::decode(bytes);
    let _ = row_description::decode(bytes);
    let _ = data_row::decode(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn parsers_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        all_parsers(&bytes);
    }

    #[test]
    fn parsers_never_panic_on_framed_garbage(
        tag in prop::sample::select(b"RKEZSQPTDNpv".to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..128),
        len_delta in -8i32..8,
    ) {
        let mut bytes = vec![tag];
        let len = body.len() as i32 + 4 + len_delta;
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&body);
        all_parsers(&bytes);
    }

    #[test]
    fn peek_frame_never_exceeds_max(bytes in proptest::collection::vec(any::<u8>(), 5..16)) {
        if let Ok(Some(h)) = frame::peek_frame(&bytes, 4096) {
            prop_assert!(h.total_len <= 4096);
            prop_assert!(h.total_len >= 5);
        }
    }
}
