//! Arbitrary bytes decoded as checkpoints of the shipped solver states: never a panic; what
//! decodes re-encodes to the bytes it consumed.
#![no_main]

use bilevel::algo::aid::Aid;
use bilevel::algo::itd::ItdReverse;
use bilevel::algo::nbo::Nbo;
use bilevel::checkpoint::{Checkpoint, MaxSize, decode, encode};
use libfuzzer_sys::fuzz_target;

fn round_trip<S>(data: &[u8])
where
    S: serde::Serialize + serde::de::DeserializeOwned,
    Checkpoint<S, f32, 2>: MaxSize,
{
    if let Ok(c) = decode::<Checkpoint<S, f32, 2>>(data) {
        let mut buf = [0u8; 1024];
        let max = <Checkpoint<S, f32, 2> as MaxSize>::POSTCARD_MAX_SIZE;
        let bytes = encode(&c, &mut buf[..max]).expect("the maximum size suffices");
        let again = decode::<Checkpoint<S, f32, 2>>(bytes).expect("re-encoded bytes decode");
        let mut buf2 = [0u8; 1024];
        assert_eq!(encode(&again, &mut buf2).expect("encodes").len(), bytes.len());
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Nbo<f32, 8>>(data);
    round_trip::<Aid<f32, 8>>(data);
    round_trip::<ItdReverse<f32, 8, 16>>(data);
});
