//! nginx's MurmurHash2 and the `split_clients` cohort threshold.
//!
//! docs/decision.md: a key is in the new cohort when
//! `hash < percentage_bp * 0xFFFFFFFF / 10000`, hashing `hash_salt + key` with
//! `ngx_murmur_hash2`. Keeping the arithmetic identical to
//! `ngx_http_split_clients_module.c` is what makes every replica, and nginx's own
//! `split_clients`, agree on every user.

const M: u32 = 0x5bd1_e995;

/// `ngx_murmur_hash2` from `src/core/ngx_murmurhash.c`, bit for bit.
pub fn murmur2(data: &[u8]) -> u32 {
    let mut h: u32 = data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        h = mix(h, u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    }
    finish(h, chunks.remainder())
}

/// `murmur2(prefix ++ key)` without building the concatenation.
pub fn murmur2_salted(prefix: &[u8], key: &[u8]) -> u32 {
    if prefix.is_empty() {
        return murmur2(key);
    }
    let mut h: u32 = (prefix.len() + key.len()) as u32;
    let mut word = [0u8; 4];
    let mut filled = 0;
    for &b in prefix.iter().chain(key.iter()) {
        word[filled] = b;
        filled += 1;
        if filled == 4 {
            h = mix(h, u32::from_le_bytes(word));
            filled = 0;
        }
    }
    finish(h, &word[..filled])
}

#[inline]
fn mix(h: u32, mut k: u32) -> u32 {
    k = k.wrapping_mul(M);
    k ^= k >> 24;
    k = k.wrapping_mul(M);
    h.wrapping_mul(M) ^ k
}

#[inline]
fn finish(mut h: u32, tail: &[u8]) -> u32 {
    match tail.len() {
        3 => {
            h ^= (tail[2] as u32) << 16;
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// A percentage compiled to `split_clients`' 32-bit threshold.
///
/// `percentage_bp` is the percentage in basis points (20.5 % = 2050).
/// 100 % is "everyone": `split_clients` would leave the single hash value
/// `0xFFFFFFFF` unmatched (its variable becomes empty); an operator who writes 100
/// means all, so that one value is sent to new as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    bound: u32,
    everyone: bool,
}

impl Threshold {
    pub fn from_basis_points(percentage_bp: u32) -> Threshold {
        debug_assert!(percentage_bp <= 10_000);
        let bound = (0xFFFF_FFFFu64 * percentage_bp as u64 / 10_000) as u32;
        Threshold { bound, everyone: percentage_bp >= 10_000 }
    }

    /// Whether a 32-bit hash (or uniform draw) falls in the new cohort.
    #[inline]
    pub fn admits(self, value: u32) -> bool {
        value < self.bound || self.everyone
    }

    pub fn bound(self) -> u32 {
        self.bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors printed by nginx 1.28's own `ngx_murmur_hash2` (compiled from
    /// `src/core/ngx_murmurhash.c`), covering every tail length.
    const VECTORS: &[(&[u8], u32)] = include!("hash_vectors.in");

    #[test]
    fn matches_nginx_vectors() {
        for (input, expected) in VECTORS {
            assert_eq!(murmur2(input), *expected, "murmur2({:?})", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn salted_equals_hash_of_concatenation() {
        for (salt, key) in [("", "alice"), ("s", "alice"), ("salt-1", "u"), ("abc", "defgh"), ("abcd", "")] {
            let joined = format!("{salt}{key}");
            assert_eq!(murmur2_salted(salt.as_bytes(), key.as_bytes()), murmur2(joined.as_bytes()));
        }
    }

    /// The bounds nginx's split_clients computes (`percent * (uint64_t) 0xffffffff
    /// / 10000`, ngx_http_split_clients_module.c), worked out by hand: fixed
    /// numbers, not the formula again.
    #[test]
    fn threshold_is_split_clients_bound() {
        for (bp, bound) in [
            (0, 0),
            (1, 429_496),
            (100, 42_949_672),
            (2000, 858_993_459),
            (3333, 1_431_512_599),
            (5000, 2_147_483_647),
            (9999, 4_294_537_798),
            (10_000, 4_294_967_295),
        ] {
            let t = Threshold::from_basis_points(bp);
            assert_eq!(t.bound(), bound, "{bp} bp");
            if bound > 0 {
                assert!(t.admits(bound - 1), "{bp} bp: the last hash below the bound is new");
            }
            assert_eq!(t.admits(bound), bp == 10_000, "{bp} bp: the bound itself is old, but at 100 %");
        }
        assert_eq!(Threshold::from_basis_points(5000).bound(), 0x7FFF_FFFF);
        assert!(!Threshold::from_basis_points(0).admits(0));
        assert!(Threshold::from_basis_points(1).admits(0));
        assert!(!Threshold::from_basis_points(9999).admits(u32::MAX));
        assert!(Threshold::from_basis_points(10_000).admits(u32::MAX));
    }
}
