//! Generated channel ids (`ch_` + 26 Crockford base32 characters, time-ordered like a ULID so
//! that listing by id lists by creation) and generated secrets.

use time::OffsetDateTime;

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// `ch_01j9...`: 48 bits of milliseconds since the epoch, then 80 random bits.
pub fn new_channel_id() -> Result<String, getrandom::Error> {
    let ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    getrandom::fill(&mut bytes[6..])?;
    let n = u128::from_be_bytes(bytes);
    let mut id = String::with_capacity(29);
    id.push_str("ch_");
    for i in (0..26).rev() {
        id.push(CROCKFORD[((n >> (i * 5)) & 31) as usize] as char);
    }
    Ok(id)
}

/// A fresh secret: 32 random bytes as 64 hex characters (valid for every source but webchat,
/// and for Telegram's `secret_token`).
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_shared::names::is_valid_id;

    #[test]
    fn ids_are_valid_unique_and_ordered_by_time() {
        let a = new_channel_id().expect("rng");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_channel_id().expect("rng");
        assert!(is_valid_id(&a) && is_valid_id(&b), "{a} {b}");
        assert_eq!(a.len(), 29);
        assert!(a < b, "{a} !< {b}");
        assert_ne!(new_secret().expect("rng"), new_secret().expect("rng"));
    }
}
