//! Keyed hashing (HMAC-SHA256): equal values give equal masks, so joins and
//! `GROUP BY` on a hashed column still work, but without the key nobody can
//! test a guess against a mask.

use sha2::{Digest, Sha256};

const BLOCK: usize = 64;

/// HMAC-SHA256 of `value` under `key`.
pub fn hmac_sha256(key: &[u8], value: &[u8]) -> [u8; 32] {
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(value);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The mask a hashed value shows: `h:` and 16 hex digits of its HMAC.
pub fn masked(key: &[u8], value: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mac = hmac_sha256(key, value);
    let mut out = b"h:".to_vec();
    for b in &mac[..8] {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn equal_values_equal_masks_other_keys_other_masks() {
        assert_eq!(masked(b"k", b"v"), masked(b"k", b"v"));
        assert_ne!(masked(b"k", b"v"), masked(b"k2", b"v"));
        assert_ne!(masked(b"k", b"v"), masked(b"k", b"w"));
    }
}
