//! Mercado Pago: `x-signature: ts=<ts>,v1=<hex HMAC-SHA256(secret, manifest)>` with the manifest
//! `id:{data.id};request-id:{x-request-id};ts:{ts};`, `data.id` taken from the query string
//! and parts that are absent left out. The official SDKs sign `data.id` as received (they
//! stopped lowercasing it in 2026); the lowercased form, which older docs asked for, is tried
//! too. `ts` is read as milliseconds when it has 13 or more digits, else as seconds.

use sha2::Sha256;

use super::{header, hmac, verify_hex, SignedRequest, VerifyError};
use hookline_shared::Secret;

const HEADER: &str = "x-signature";

pub fn verify(secret: &Secret, req: &SignedRequest<'_>, tolerance_s: i64) -> Result<(), VerifyError> {
    let value = header(req.headers, HEADER)?;
    let mut ts = None;
    let mut v1 = None;
    for part in value.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "ts" => ts = Some(v.trim()),
            "v1" => v1 = Some(v.trim()),
            _ => {}
        }
    }
    let ts = ts.filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).ok_or(VerifyError::Malformed(HEADER))?;
    let v1 = v1.ok_or(VerifyError::Malformed(HEADER))?;
    let ts_num: i64 = ts.parse().map_err(|_| VerifyError::Malformed(HEADER))?;
    let ts_s = if ts_num >= 1_000_000_000_000 { ts_num / 1000 } else { ts_num };
    if (req.now.unix_timestamp() - ts_s).abs() > tolerance_s {
        return Err(VerifyError::Stale);
    }
    let request_id = req.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty());
    let data_id =
        req.query.and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "data.id").map(|(_, v)| v.trim().to_string()));
    let data_id = data_id.filter(|s| !s.is_empty());
    let mut candidates = vec![data_id.clone()];
    if let Some(id) = &data_id {
        if id.bytes().all(|b| b.is_ascii_alphanumeric()) && id.to_ascii_lowercase() != *id {
            candidates.push(Some(id.to_ascii_lowercase()));
        }
    }
    let mut result = Err(VerifyError::Mismatch);
    for id in candidates {
        let mut manifest = String::new();
        if let Some(id) = &id {
            manifest.push_str(&format!("id:{id};"));
        }
        if let Some(rid) = request_id {
            manifest.push_str(&format!("request-id:{rid};"));
        }
        manifest.push_str(&format!("ts:{ts};"));
        result = verify_hex(hmac::<Sha256>(secret.expose().as_bytes(), &[manifest.as_bytes()]), v1, HEADER);
        if result.is_ok() {
            break;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::VerifyError;
    use hookline_shared::Source;
    use proptest::prelude::*;

    // Constructed from the official SDKs' test inputs (they compute the hash at run time).
    const SECRET: &str = "your_secret_key_here";
    const RID: &str = "2066ca19-c6f1-498a-be75-1923005edd06";
    const TS_MS: i64 = 1742505638683;

    fn h(v1: &str, rid: Option<&str>) -> http::HeaderMap {
        let sig = format!("ts={TS_MS},v1={v1}");
        match rid {
            Some(r) => headers(&[("x-signature", &sig), ("x-request-id", r)]),
            None => headers(&[("x-signature", &sig)]),
        }
    }

    #[test]
    fn verifies_the_manifest_with_data_id_as_received_or_lowercased() {
        let ch = channel(Source::Mercadopago, SECRET);
        let now = at(TS_MS / 1000 + 5);
        let url = "https://h/webhooks/ch1?data.id=ORD01JQ4S4KY8HWQ6NA5PXB65B3D3&type=order";
        let as_received = "fb15ae6472eb449173c556793205d77787d58f384d183bb5bc3b724c27bd103c";
        let lowercased = "633f91233312dd391ec75fa0bea539cfc2d6c4918873305b84a96cc1c58db71c";
        assert_eq!(check(&ch, &h(as_received, Some(RID)), b"{}", url, now), Ok(()));
        assert_eq!(check(&ch, &h(lowercased, Some(RID)), b"{}", url, now), Ok(()));
        let other_id = "https://h/webhooks/ch1?data.id=ORD01JQ4S4KY8HWQ6NA5PXB65B3D4";
        assert_eq!(check(&ch, &h(as_received, Some(RID)), b"{}", other_id, now), Err(VerifyError::Mismatch));
    }

    #[test]
    fn absent_parts_are_left_out_of_the_manifest() {
        let ch = channel(Source::Mercadopago, SECRET);
        let now = at(TS_MS / 1000);
        let no_id = "8a7b0cc777a8217c3bab41a50c95dc92debbc6f8448f1c967dfe10ac1cb8b894";
        assert_eq!(check(&ch, &h(no_id, Some(RID)), b"{}", "https://h/webhooks/ch1", now), Ok(()));
        let no_rid = "a20c44820ab71562e89a7c9f64d5636efc8beba587b16c2f9bbbc3504892741a";
        assert_eq!(check(&ch, &h(no_rid, None), b"{}", "https://h/x?data.id=ord01jq4s4ky8hwq6na5pxb65b3d3", now), Ok(()));
        let ts_only = "3f075add3ddb923bebf0bc0648457b8244cf4420b98d5b445167d379bec0ca54";
        assert_eq!(check(&ch, &h(ts_only, None), b"{}", "https://h/x", now), Ok(()));
    }

    #[test]
    fn timestamps_in_seconds_or_milliseconds_must_be_recent() {
        let ch = channel(Source::Mercadopago, SECRET);
        let ts_only = "3f075add3ddb923bebf0bc0648457b8244cf4420b98d5b445167d379bec0ca54";
        assert_eq!(check(&ch, &h(ts_only, None), b"{}", "https://h/x", at(TS_MS / 1000 + 601)), Err(VerifyError::Stale));
        // The same ts in seconds: 1742505638 (signature over "ts:1742505638;", computed here).
        use hmac::Mac;
        let secs = TS_MS / 1000;
        let v1 = hex::encode(super::hmac::<sha2::Sha256>(SECRET.as_bytes(), &[format!("ts:{secs};").as_bytes()]).finalize().into_bytes());
        let hs = headers(&[("x-signature", &format!("ts={secs},v1={v1}"))]);
        assert_eq!(check(&ch, &hs, b"{}", "https://h/x", at(secs + 30)), Ok(()));
        assert_eq!(check(&ch, &hs, b"{}", "https://h/x", at(secs - 601)), Err(VerifyError::Stale));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let ch = channel(Source::Mercadopago, SECRET);
        for bad in ["v1=abc", "ts=abc,v1=00", "ts=1742505638683", ""] {
            let r = check(&ch, &headers(&[("x-signature", bad)]), b"{}", "https://h/x", at(TS_MS / 1000));
            assert_eq!(r, Err(VerifyError::Malformed("x-signature")), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic(value in "[ -~]{0,120}", rid in "[ -~]{0,40}", query in "[ -~]{0,60}") {
            let ch = channel(Source::Mercadopago, SECRET);
            let url = format!("https://h/x?{query}");
            let _ = check(&ch, &headers(&[("x-signature", &value), ("x-request-id", &rid)]), b"{}", &url, at(TS_MS / 1000));
        }
    }
}
