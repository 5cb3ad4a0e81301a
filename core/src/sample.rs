//! Where minibatches come from: shuffled epochs over a finite data set, independent draws,
//! the full batch, or a stream the caller fills as samples arrive. Nothing allocates; a
//! sampler's state is a few integers and a 16-byte generator.
//!
//! Minibatches follow benchopt's `MinibatchSampler`: the `n` samples (in the problem's
//! fixed order) are cut into `m = ⌈n / b⌉` contiguous ranges of `b` samples, the last one
//! possibly shorter; batch `j` is [`Batch::Range`] `{ id: j, start: j·b, len }`. Each epoch
//! visits the `m` ranges once, in an order given by a seeded bijection on `0..m` (a
//! four-round Feistel network with cycle walking, keyed afresh every epoch), so no
//! permutation table is stored. Variance-reduced methods weight batch `j` by `len_j / n`
//! ([`Minibatches::weight`]), so a short last batch counts for what it holds. Plain
//! minibatch estimates (SGD-type methods) visit every batch equally often, so with a short
//! last batch its samples weigh more over an epoch, as in benchopt; choose `b` dividing `n`
//! when that matters.

use crate::error::{Error, ensure};
use crate::problem::Batch;
use crate::rng::Rng128;
use crate::scalar::Real;

/// A source of minibatches: every stochastic solver draws its batches through this.
pub trait BatchSource {
    /// The next minibatch.
    fn next_batch(&mut self) -> Result<Batch, Error>;

    /// Doubles the batch size (up to the whole data set), halving the variance of the
    /// estimates drawn from it; `false`, changing nothing, when it cannot grow. By default a
    /// source cannot.
    fn grow(&mut self) -> bool {
        false
    }
}

/// Always [`Batch::Full`]: runs a stochastic method deterministically (and the
/// deterministic PZOBO).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub struct FullBatch;

impl BatchSource for FullBatch {
    #[inline]
    fn next_batch(&mut self) -> Result<Batch, Error> {
        Ok(Batch::Full)
    }
}

/// How [`Minibatches`] orders its batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub enum Order {
    /// Shuffled epochs without replacement (benchopt): every batch once per epoch, in a new
    /// random order each epoch. SAGA tables need this to be refreshed evenly.
    Shuffled,
    /// Each batch drawn uniformly and independently (with replacement): consecutive draws
    /// are independent, which makes products of minibatch oracles (Neumann series, inner
    /// SGD) unbiased for their full-batch counterparts when all batches have equal size.
    Independent,
}

/// Minibatches of a finite data set of `n` samples, `b` at a time (see the module docs).
///
/// ```
/// use bilevel::problem::Batch;
/// use bilevel::sample::{BatchSource, Minibatches, Order};
/// let mut s = Minibatches::new(10, 4, Order::Shuffled, 7).unwrap();
/// assert_eq!(s.batches(), 3); // ranges 0..4, 4..8, 8..10
/// let mut seen = [false; 3];
/// for _ in 0..3 {
///     let b = s.next_batch().unwrap();
///     seen[b.id() as usize] = true;
///     assert_eq!(b.range(10).len(), if b.id() == 2 { 2 } else { 4 });
/// }
/// assert_eq!(seen, [true; 3]); // one epoch visits every batch once
/// assert_eq!(s.weight::<f64>(Batch::Range { id: 2, start: 8, len: 2 }), 0.2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub struct Minibatches {
    samples: u32,
    batch_size: u32,
    batches: u32,
    order: Order,
    /// Feistel half-width in bits: the permutation acts on `0..4^half_bits ⊇ 0..m`.
    half_bits: u32,
    keys: [u32; 4],
    position: u32,
    epoch: u32,
    rng: Rng128,
}

impl Minibatches {
    /// `samples` samples in batches of `batch_size` (clamped to `samples`), ordered by
    /// `order`, seeded by `seed`. Errors: no samples, a zero batch size, or more than
    /// `u32::MAX` samples.
    pub fn new(samples: usize, batch_size: usize, order: Order, seed: u64) -> Result<Self, Error> {
        ensure(samples >= 1, "samples", "≥ 1")?;
        ensure(samples <= u32::MAX as usize, "samples", "≤ u32::MAX")?;
        ensure(batch_size >= 1, "batch size", "≥ 1")?;
        let n = samples as u32;
        let b = batch_size.min(samples) as u32;
        let batches = n.div_ceil(b);
        let half_bits = half_bits_for(batches);
        Ok(Minibatches {
            samples: n,
            batch_size: b,
            batches,
            order,
            half_bits,
            keys: [0; 4],
            position: 0,
            epoch: 0,
            rng: Rng128::new(seed),
        })
    }

    /// Two samplers for a problem with `samples = (lower, upper)` samples (as
    /// [`crate::problem::Problem::samples`] returns), batches of `batch_size` on both
    /// levels, independent streams derived from `seed`.
    pub fn for_levels(samples: (usize, usize), batch_size: usize, order: Order, seed: u64) -> Result<[Self; 2], Error> {
        let lower = Minibatches::new(samples.0, batch_size, order, seed)?;
        let upper = Minibatches::new(samples.1, batch_size, order, seed ^ 0x9e37_79b9_7f4a_7c15)?;
        Ok([lower, upper])
    }

    /// Number of samples `n`.
    pub fn samples(&self) -> usize {
        self.samples as usize
    }

    /// Number of minibatches `m = ⌈n / b⌉` (the rows a SAGA table needs).
    pub fn batches(&self) -> usize {
        self.batches as usize
    }

    /// Batch size `b` (after clamping to `n`).
    pub fn batch_size(&self) -> usize {
        self.batch_size as usize
    }

    /// Completed epochs (shuffled order) or completed rounds of `m` draws (independent).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The SAGA weight of `batch`: its number of samples over `n` (1 for [`Batch::Full`]).
    pub fn weight<T: Real>(&self, batch: Batch) -> T {
        let len = batch.range(self.samples as usize).len();
        T::from_f64(len as f64 / self.samples as f64)
    }

    /// The batch with index `id` (`id < m`).
    fn batch(&self, id: u32) -> Batch {
        let start = id.saturating_mul(self.batch_size);
        Batch::Range {
            id,
            start,
            len: self.batch_size.min(self.samples.saturating_sub(start)),
        }
    }

    /// The `index`-th batch id of the current epoch: the keyed Feistel permutation of
    /// `0..4^half_bits`, walked along its cycle until it lands in `0..m`. Starting from an
    /// index `< m`, the cycle returns below `m` within one period, so the walk ends.
    fn permuted(&self, index: u32) -> u32 {
        let domain = 1u64 << (2 * self.half_bits);
        let mut v = index;
        let mut walked = 0u64;
        while walked < domain {
            v = feistel(v, self.half_bits, &self.keys);
            if v < self.batches {
                return v;
            }
            walked += 1;
        }
        index
    }
}

/// The Feistel half-width whose domain `0..4^half_bits` covers `0..batches`.
fn half_bits_for(batches: u32) -> u32 {
    let mut half_bits = 0u32;
    while half_bits < 16 && (1u64 << (2 * half_bits)) < batches as u64 {
        half_bits += 1;
    }
    half_bits
}

impl BatchSource for Minibatches {
    /// Batches of twice the size (the last one possibly shorter), from a new epoch.
    fn grow(&mut self) -> bool {
        if self.batch_size >= self.samples {
            return false;
        }
        self.batch_size = self.batch_size.saturating_mul(2).min(self.samples);
        self.batches = self.samples.div_ceil(self.batch_size.max(1));
        self.half_bits = half_bits_for(self.batches);
        self.position = 0;
        true
    }

    fn next_batch(&mut self) -> Result<Batch, Error> {
        let id = match self.order {
            Order::Shuffled => {
                if self.position == 0 {
                    for k in self.keys.iter_mut() {
                        *k = self.rng.next_u32();
                    }
                }
                self.permuted(self.position)
            }
            Order::Independent => self.rng.below(self.batches),
        };
        self.position += 1;
        if self.position >= self.batches {
            self.position = 0;
            self.epoch = self.epoch.wrapping_add(1);
        }
        Ok(self.batch(id))
    }
}

/// A 32-bit integer hash (lowbias32): the Feistel round function.
#[inline]
fn mix(mut v: u32) -> u32 {
    v ^= v >> 16;
    v = v.wrapping_mul(0x7feb_352d);
    v ^= v >> 15;
    v = v.wrapping_mul(0x846c_a68b);
    v ^ (v >> 16)
}

/// A balanced four-round Feistel network on `2·half_bits`-bit integers: a bijection for any
/// keys.
#[inline]
fn feistel(v: u32, half_bits: u32, keys: &[u32; 4]) -> u32 {
    if half_bits == 0 {
        return 0;
    }
    let mask = if half_bits >= 32 {
        u32::MAX
    } else {
        (1u32 << half_bits) - 1
    };
    let mut left = (v >> half_bits) & mask;
    let mut right = v & mask;
    for &k in keys {
        let next = left ^ (mix(right ^ k) & mask);
        left = right;
        right = next;
    }
    (left << half_bits) | right
}

/// Minibatches handed in by the caller as samples arrive (a sensor feeding a ring buffer
/// that the problem reads): up to `C` pending batches in arrival order. Each draw consumes
/// one; drawing from an empty stream is an error, never a stale batch.
///
/// ```
/// use bilevel::problem::Batch;
/// use bilevel::sample::{BatchSource, Stream};
/// let mut s = Stream::<2>::new();
/// s.push(Batch::Range { id: 0, start: 0, len: 8 }).unwrap();
/// s.push(Batch::Range { id: 1, start: 8, len: 8 }).unwrap();
/// assert!(s.push(Batch::Full).is_err()); // full
/// assert_eq!(s.next_batch().unwrap().id(), 0);
/// assert_eq!(s.next_batch().unwrap().id(), 1);
/// assert!(s.next_batch().is_err()); // empty
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub struct Stream<const C: usize> {
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    pending: [Batch; C],
    head: usize,
    len: usize,
}

impl<const C: usize> Default for Stream<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const C: usize> Stream<C> {
    /// An empty stream.
    pub fn new() -> Self {
        Stream {
            pending: [Batch::Full; C],
            head: 0,
            len: 0,
        }
    }

    /// Appends a batch; [`Error::Capacity`] when `C` batches are already pending.
    pub fn push(&mut self, batch: Batch) -> Result<(), Error> {
        if self.len >= C {
            return Err(Error::Capacity {
                what: "pending batches of a stream",
                capacity: C,
            });
        }
        let slot = (self.head + self.len) % C;
        if let Some(p) = self.pending.get_mut(slot) {
            *p = batch;
        }
        self.len += 1;
        Ok(())
    }

    /// Batches handed in and not yet drawn.
    pub fn pending(&self) -> usize {
        self.len
    }
}

impl<const C: usize> BatchSource for Stream<C> {
    fn next_batch(&mut self) -> Result<Batch, Error> {
        match self.pending.get(self.head) {
            Some(&b) if self.len > 0 => {
                self.head = (self.head + 1) % C;
                self.len -= 1;
                Ok(b)
            }
            _ => Err(Error::InvalidData {
                reason: "the batch stream is empty: push the next batch before drawing",
            }),
        }
    }
}

/// Minibatches that arrive one after the other into a ring of `slots` buffers of
/// `batch_size` samples: the `n`-th draw names the `n`-th minibatch of the stream,
/// [`Batch::Range`] `{ id: n, start: (n mod slots)·batch_size, len: batch_size }`. The
/// problem receives minibatch `n` into slot `n mod slots` when an oracle first asks for it,
/// so each sample is used once, in arrival order, and only `slots` minibatches are ever in
/// memory. The state is three integers.
///
/// ```
/// use bilevel::problem::Batch;
/// use bilevel::sample::{BatchSource, Ring};
/// let mut r = Ring::new(2, 8).unwrap();
/// assert_eq!(r.next_batch().unwrap(), Batch::Range { id: 0, start: 0, len: 8 });
/// assert_eq!(r.next_batch().unwrap(), Batch::Range { id: 1, start: 8, len: 8 });
/// assert_eq!(r.next_batch().unwrap(), Batch::Range { id: 2, start: 0, len: 8 });
/// assert_eq!(r.drawn(), 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub struct Ring {
    slots: u32,
    batch_size: u32,
    next: u32,
}

impl Ring {
    /// A ring of `slots` buffers of `batch_size` samples, nothing drawn yet. Errors: a zero
    /// slot count or batch size, or a ring beyond `u32::MAX` samples.
    pub fn new(slots: usize, batch_size: usize) -> Result<Self, Error> {
        ensure(slots >= 1, "ring slots", "≥ 1")?;
        ensure(batch_size >= 1, "batch size", "≥ 1")?;
        ensure(
            slots.checked_mul(batch_size).is_some_and(|n| n <= u32::MAX as usize),
            "ring samples",
            "≤ u32::MAX",
        )?;
        Ok(Ring {
            slots: slots as u32,
            batch_size: batch_size as u32,
            next: 0,
        })
    }

    /// Minibatches drawn so far (the id of the next one).
    pub fn drawn(&self) -> u32 {
        self.next
    }
}

impl BatchSource for Ring {
    fn next_batch(&mut self) -> Result<Batch, Error> {
        let id = self.next;
        self.next = id.checked_add(1).ok_or(Error::Capacity {
            what: "minibatches of a ring",
            capacity: u32::MAX as usize,
        })?;
        Ok(Batch::Range {
            id,
            start: (id % self.slots.max(1)) * self.batch_size,
            len: self.batch_size,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn epoch(s: &mut Minibatches) -> Vec<u32> {
        (0..s.batches()).map(|_| s.next_batch().unwrap().id()).collect()
    }

    #[test]
    fn every_epoch_is_a_permutation_covering_all_samples_once() {
        for (n, b) in [
            (1usize, 1usize),
            (10, 4),
            (64, 8),
            (100, 3),
            (1000, 1),
            (37, 37),
            (5, 9),
        ] {
            let mut s = Minibatches::new(n, b, Order::Shuffled, n as u64).unwrap();
            let mut orders = Vec::new();
            for _ in 0..3 {
                let mut covered = std::vec![0u32; n];
                let e = epoch(&mut s);
                let mut ids = e.clone();
                ids.sort();
                assert_eq!(ids, (0..s.batches() as u32).collect::<Vec<_>>(), "n {n} b {b}");
                for &id in &e {
                    for i in s.batch(id).range(n) {
                        covered[i] += 1;
                    }
                }
                assert!(covered.iter().all(|&c| c == 1));
                orders.push(e);
            }
            assert_eq!(s.epoch(), 3);
            if s.batches() > 3 {
                assert_ne!(orders[0], orders[1], "epochs reshuffle");
            }
        }
    }

    #[test]
    fn weights_of_one_epoch_sum_to_one_with_a_short_last_batch() {
        let mut s = Minibatches::new(10, 4, Order::Shuffled, 1).unwrap();
        let mut sum = 0.0;
        for _ in 0..3 {
            let b = s.next_batch().unwrap();
            sum += s.weight::<f64>(b);
        }
        assert_eq!(sum, 1.0);
        assert_eq!(s.weight::<f64>(Batch::Full), 1.0);
    }

    #[test]
    fn shuffled_first_batch_is_uniform_and_independent_draws_cover_all() {
        let m = 5usize;
        let mut first = [0u32; 5];
        for seed in 0..5000u64 {
            let mut s = Minibatches::new(m * 2, 2, Order::Shuffled, seed).unwrap();
            first[s.next_batch().unwrap().id() as usize] += 1;
        }
        // 1000 expected each; 5 standard deviations is about 140.
        assert!(first.iter().all(|&c| (860..1140).contains(&c)), "{first:?}");
        let mut s = Minibatches::new(m * 2, 2, Order::Independent, 3).unwrap();
        let mut counts = [0u32; 5];
        for _ in 0..5000 {
            counts[s.next_batch().unwrap().id() as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (860..1140).contains(&c)), "{counts:?}");
    }

    #[test]
    fn same_seed_same_batches_and_invalid_sizes_are_errors() {
        let mut a = Minibatches::new(50, 5, Order::Shuffled, 11).unwrap();
        let mut b = a.clone();
        let mut c = Minibatches::new(50, 5, Order::Shuffled, 12).unwrap();
        let (ea, eb, ec) = (epoch(&mut a), epoch(&mut b), epoch(&mut c));
        assert_eq!(ea, eb);
        assert_ne!(ea, ec);
        assert!(Minibatches::new(0, 1, Order::Shuffled, 0).is_err());
        assert!(Minibatches::new(3, 0, Order::Shuffled, 0).is_err());
        assert_eq!(Minibatches::new(3, 10, Order::Shuffled, 0).unwrap().batches(), 1);
    }

    #[test]
    fn feistel_is_a_bijection() {
        for h in 1..=6u32 {
            let d = 1u32 << (2 * h);
            let keys = [1, 2, 3, 0xdead_beef];
            let mut seen = std::vec![false; d as usize];
            for v in 0..d {
                let p = feistel(v, h, &keys);
                assert!(p < d);
                assert!(!seen[p as usize]);
                seen[p as usize] = true;
            }
        }
    }

    #[test]
    fn stream_wraps_around() {
        let mut s = Stream::<3>::new();
        for round in 0..5u32 {
            s.push(Batch::Range {
                id: round,
                start: 0,
                len: 1,
            })
            .unwrap();
            s.push(Batch::Range {
                id: round + 100,
                start: 0,
                len: 1,
            })
            .unwrap();
            assert_eq!(s.pending(), 2);
            assert_eq!(s.next_batch().unwrap().id(), round);
            assert_eq!(s.next_batch().unwrap().id(), round + 100);
        }
        assert!(s.next_batch().is_err());
        assert!(Stream::<0>::new().push(Batch::Full).is_err());
        assert!(Stream::<0>::new().next_batch().is_err());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn a_full_stream_fits_its_checkpoint_bound_and_comes_back_equal() {
        use postcard::experimental::max_size::MaxSize;
        let mut s = Stream::<3>::new();
        let widest = Batch::Range {
            id: u32::MAX,
            start: u32::MAX,
            len: u32::MAX,
        };
        for _ in 0..3 {
            s.push(widest).unwrap();
        }
        s.next_batch().unwrap();
        s.push(widest).unwrap();
        let mut buf = [0u8; Stream::<3>::POSTCARD_MAX_SIZE];
        let bytes = crate::checkpoint::encode(&s, &mut buf).unwrap();
        let back: Stream<3> = crate::checkpoint::decode(bytes).unwrap();
        assert_eq!(back, s);
    }
}
