//! The expected answers' own arithmetic, owing nothing to the engine's code.

/// `ngx_murmur_hash2` (nginx's src/core/ngx_murmurhash.c) rewritten line by line.
pub fn nginx_murmur2(data: &[u8]) -> u32 {
    let m: u32 = 0x5bd1_e995;
    let mut h: u32 = data.len() as u32;
    let mut rest = data;
    while rest.len() >= 4 {
        let mut k = rest[0] as u32 | (rest[1] as u32) << 8 | (rest[2] as u32) << 16 | (rest[3] as u32) << 24;
        k = k.wrapping_mul(m);
        k ^= k >> 24;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
        rest = &rest[4..];
    }
    if rest.len() == 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(m);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    h
}

/// Whether `split_clients` puts `hash` in the first `percentage_bp` basis points:
/// `hash < percent * 0xffffffff / 10000` as ngx_http_split_clients_module.c
/// computes it, and everyone at 100 %.
pub fn admits(percentage_bp: u32, hash: u32) -> bool {
    percentage_bp == 10_000 || u64::from(hash) < u64::from(percentage_bp) * 0xffff_ffff / 10_000
}
