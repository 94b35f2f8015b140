//! The operator console: hand-written HTML, CSS and JavaScript (no build step, no Node toolchain)
//! embedded in the binary with `include_bytes!`, and [`router`], the axum routes that serve them
//! under `/console`. The console is a single page (`/console`, pages chosen by the URL's `#`)
//! that calls the setup API under `/api/v1` with the operator's bearer token; it holds no state
//! on the server and needs no route of its own beyond its files.
//!
//! Every answer carries a strict Content-Security-Policy (scripts, styles and images from this
//! origin only, no inline script or style, no framing, no form submission), `X-Frame-Options:
//! DENY`, `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`. The page is
//! `Cache-Control: no-store`; the assets are `no-cache` with an `ETag` (revalidated, answered
//! 304 when unchanged), so a new binary's assets are used at once.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Where the console is mounted.
pub const MOUNT: &str = "/console";

/// The policy of every console answer. `connect-src 'self'`: the API is on the same origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
pub struct Asset {
    /// The path under `/console/`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    etag: &'static str,
}

/// FNV-1a, 64 bits: the asset's `ETag` (computed at compile time; not a security measure).
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The `ETag` text of `bytes`: `"` + 16 hex digits + `"`, built at compile time.
const fn etag_bytes(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($path:literal, $type:expr) => {{
        const BYTES: &[u8] = include_bytes!(concat!("../assets/", $path));
        const ETAG: [u8; 18] = etag_bytes(BYTES);
        Asset {
            path: $path,
            content_type: $type,
            bytes: BYTES,
            etag: match std::str::from_utf8(&ETAG) {
                Ok(s) => s,
                Err(_) => panic!("an ETag is ASCII"),
            },
        }
    }};
}

const JS: &str = "text/javascript; charset=utf-8";

/// The page itself.
pub static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");

/// Every file served under `/console/`.
pub static ASSETS: &[Asset] = &[
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/app.js", JS),
    asset!("js/api.js", JS),
    asset!("js/ui.js", JS),
    asset!("js/overview.js", JS),
    asset!("js/channels.js", JS),
    asset!("js/destinations.js", JS),
    asset!("js/events.js", JS),
    asset!("js/dlq.js", JS),
    asset!("js/replay.js", JS),
];

/// The console's routes: `/console`, `/console/` (the page) and `/console/<file>`. Merge them
/// into an application's router; they need no state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(MOUNT, get(index))
        .route("/console/", get(index))
        .route("/console/{*file}", get(file))
        .layer(axum::middleware::map_response(protect))
}

/// The headers every console answer carries.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(INDEX.content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        INDEX.bytes,
    )
        .into_response()
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "not found\n").into_response();
    };
    let etag = HeaderValue::from_static(asset.etag);
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii() == asset.etag.as_bytes()));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), cache]).into_response();
    }
    ([(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)), (header::ETAG, etag), cache], asset.bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>().oneshot(req.body(Body::empty()).expect("request")).await.expect("answer")
    }

    fn text(response: &Response, name: header::HeaderName) -> String {
        response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn every_answer_carries_the_policy_and_no_framing() {
        for path in ["/console", "/console/", "/console/js/app.js", "/console/console.css", "/console/nope.js", "/console/../Cargo.toml"] {
            let r = get(path, None).await;
            assert_eq!(text(&r, header::CONTENT_SECURITY_POLICY), CONTENT_SECURITY_POLICY, "{path}");
            assert_eq!(text(&r, header::X_FRAME_OPTIONS), "DENY", "{path}");
            assert_eq!(text(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
            assert!(!text(&r, header::CACHE_CONTROL).is_empty(), "{path}");
        }
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }

    #[tokio::test]
    async fn the_page_is_not_stored_and_assets_revalidate() {
        let page = get("/console", None).await;
        assert_eq!(page.status(), 200);
        assert_eq!(text(&page, header::CACHE_CONTROL), "no-store");
        assert!(text(&page, header::CONTENT_TYPE).starts_with("text/html"));
        let js = get("/console/js/app.js", None).await;
        assert_eq!(js.status(), 200);
        assert_eq!(text(&js, header::CACHE_CONTROL), "no-cache");
        assert!(text(&js, header::CONTENT_TYPE).starts_with("text/javascript"));
        let tag = text(&js, header::ETAG);
        assert_eq!(tag.len(), 18);
        let again = get("/console/js/app.js", Some(&tag)).await;
        assert_eq!(again.status(), 304);
        assert_eq!(get("/console/js/app.js", Some("\"0000000000000000\"")).await.status(), 200);
        assert_eq!(get("/console/missing.js", None).await.status(), 404);
    }

    #[test]
    fn the_page_loads_no_inline_script_or_style() {
        let html = std::str::from_utf8(INDEX.bytes).expect("utf-8");
        let lower = html.to_ascii_lowercase();
        for (at, _) in lower.match_indices("<script") {
            let tag = &lower[at..at + lower[at..].find('>').expect("closed tag")];
            assert!(tag.contains(" src="), "an inline script: {tag}");
        }
        assert!(!lower.contains("<style"), "an inline style element");
        assert!(!lower.contains(" style="), "an inline style attribute");
        for tag in lower.split('<').skip(1) {
            let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
            for attr in tag.split_ascii_whitespace().skip(1) {
                assert!(!(attr.starts_with("on") && attr.contains('=')), "an inline event handler: <{tag}>");
            }
        }
        for src in lower.split("src=\"").skip(1).chain(lower.split("href=\"").skip(1)) {
            let url = &src[..src.find('"').expect("quoted")];
            if let Some(path) = url.strip_prefix("/console/") {
                assert!(ASSETS.iter().any(|a| a.path == path), "{url} is not embedded");
            }
        }
    }

    #[test]
    fn no_script_writes_html_from_data() {
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let js = std::str::from_utf8(asset.bytes).expect("utf-8");
            for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "localStorage"] {
                assert!(!js.contains(banned), "{} uses {banned}", asset.path);
            }
        }
    }
}
