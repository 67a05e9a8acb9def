//! Stable hashes: the same on every platform and every run, because they decide which fold a
//! source group falls in ([`crate::dataset::group_folds`]), which shard an image belongs to
//! ([`crate::shard`]) and an index node's graph level. Changing them moves folds and shards,
//! so their values are pinned by a test.

/// FNV-1a of `bytes` with its offset basis salted by `seed`, then the splitmix64 finaliser
/// (FNV's high bits barely change between "g12" and "g13").
pub fn stable_hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    finalise(h)
}

/// splitmix64: a well-mixed 64-bit value from a counter.
pub fn splitmix64(x: u64) -> u64 {
    finalise(x.wrapping_add(0x9e37_79b9_7f4a_7c15))
}

/// splitmix64's finaliser.
fn finalise(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_values_that_place_folds_shards_and_levels_do_not_move() {
        // the values of the three copies this module replaced (and of a Python twin)
        assert_eq!(stable_hash(b"g12", 42), 0x5391_956b_d81f_f2d6);
        assert_eq!(
            stable_hash(b"NEUTROPHIL/_0_1.jpeg", 0),
            0x2550_11f5_a339_8700
        );
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    }
}
