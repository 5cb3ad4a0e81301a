//! Arbitrary bytes decoded as checkpoints of the shipped solver states (and of the streaming
//! firmware's NSBO on a ring of minibatches with its generator and position): never a panic;
//! what decodes re-encodes, and the re-encoding decodes to the same bytes again.
#![no_main]

use bilevel::algo::aid::Aid;
use bilevel::algo::itd::ItdReverse;
use bilevel::algo::nbo::Nbo;
use bilevel::algo::nsbo::Nsbo;
use bilevel::checkpoint::{Checkpoint, MaxSize, decode, encode};
use bilevel::rng::Rng128;
use bilevel::sample::Ring;
use libfuzzer_sys::fuzz_target;

fn round_trip<S, const DX: usize>(data: &[u8])
where
    S: serde::Serialize + serde::de::DeserializeOwned,
    Checkpoint<S, f32, DX>: MaxSize,
{
    if let Ok(c) = decode::<Checkpoint<S, f32, DX>>(data) {
        let mut buf = [0u8; 1024];
        let max = <Checkpoint<S, f32, DX> as MaxSize>::POSTCARD_MAX_SIZE;
        let bytes = encode(&c, &mut buf[..max]).expect("the maximum size suffices");
        let again = decode::<Checkpoint<S, f32, DX>>(bytes).expect("re-encoded bytes decode");
        let mut buf2 = [0u8; 1024];
        assert_eq!(
            encode(&again, &mut buf2).expect("encodes"),
            bytes,
            "bytes, not only lengths"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Nbo<f32, 8>, 2>(data);
    round_trip::<Aid<f32, 8>, 2>(data);
    round_trip::<ItdReverse<f32, 8, 16>, 2>(data);
    // The streaming firmware's checkpoint (`StreamCheckpoint`: NSBO on a ring, 4 features).
    round_trip::<(Nsbo<f32, 1, 5, Ring>, Rng128, [u64; 4]), 1>(data);
});
