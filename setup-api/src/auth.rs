//! Who is calling, and what they may reach.
//!
//! Every route under `/api/v1` needs `Authorization: Bearer <token>`: one of `setup_api.tokens`
//! (the bootstrap admins, compared as SHA-256 digests in constant time, all of them every time),
//! or a token created through `POST /api/v1/tokens` (`hlk_` + 32 random base32 characters,
//! stored in `api_tokens` as its SHA-256 only). The middleware turns a token into a
//! [`Principal`] in the request's extensions; handlers receive it as a [`Scope`] (an extractor:
//! a handler that does not take one cannot reach the queries, which all require one) and turn
//! it into a [`Writer`] (`scope.writer()?`, 403 for a read-only token) before any change.
//!
//! Revocation reaches every setup-api process within [`CACHE_TTL`]: a stored token's lookup is
//! cached that long and no longer, so each process asks Postgres again at most every half
//! second per token (the same query stamps `last_used_at`). No notification channel to lose,
//! no LISTEN connection to keep; the cost is one indexed `UPDATE` per token and half second.
//!
//! Failed authentications are counted per client address ([`FailureLimiter`]): past
//! `setup_api.auth_failures_per_minute` in a minute that address is answered 429 without a
//! check of the bootstrap tokens (which may be short); created tokens (160 random bits, not
//! guessable) are still checked, so a valid `hlk_` token is never slowed or refused.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::{Choice, ConstantTimeEq};

use hookline_shared::Secret;

use crate::error::ApiError;

/// The prefix of every created token.
pub const TOKEN_PREFIX: &str = "hlk_";
/// How long a stored token's lookup is trusted: the bound on how late a revocation is seen.
pub const CACHE_TTL: Duration = Duration::from_millis(500);

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The caller, as the middleware found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `bootstrap-<n>` for the n-th of `setup_api.tokens`, else the stored token's id.
    pub token_id: String,
    pub token_name: String,
    /// `None`: an admin (every tenant, and token management).
    pub tenant: Option<String>,
    pub read_only: bool,
}

impl Principal {
    fn bootstrap(index: usize) -> Principal {
        Principal {
            token_id: format!("bootstrap-{index}"),
            token_name: format!("setup_api.tokens[{index}]"),
            tenant: None,
            read_only: false,
        }
    }
}

/// What the caller may reach: every handler under `/api/v1` takes one, and every query of a
/// tenant's resource requires one.
///
/// For a new route: take `scope: Scope` as an argument; filter reads with
/// [`Scope::tenant_filter`] (`Some(t)`: only tenant `t`'s rows, answer 404 for another's, as if
/// absent) or check a loaded resource with [`Scope::allows_tenant`]; get a [`Writer`] with
/// [`Scope::writer`] before a change and pass it to the service (it writes the audit entry).
#[derive(Debug, Clone)]
pub struct Scope(Arc<Principal>);

/// What a tenant-scoped selection (replay, dead letters, a list filter) may select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSelection {
    /// Every tenant (an admin who named none).
    Any,
    /// This tenant alone.
    Only(String),
    /// Nothing: a tenant token asked for another tenant.
    Nothing,
}

impl TenantSelection {
    /// The tenant to put in a selection (`Some(None)`: every tenant); `None` for `Nothing`.
    pub fn selection_tenant(self) -> Option<Option<String>> {
        match self {
            TenantSelection::Any => Some(None),
            TenantSelection::Only(t) => Some(Some(t)),
            TenantSelection::Nothing => None,
        }
    }
}

impl Scope {
    pub fn new(principal: Principal) -> Scope {
        Scope(Arc::new(principal))
    }

    /// An admin scope, for start-up work and tests.
    pub fn admin(name: &str) -> Scope {
        Scope::new(Principal { token_id: name.to_string(), token_name: name.to_string(), tenant: None, read_only: false })
    }

    pub fn principal(&self) -> &Principal {
        &self.0
    }

    /// `Some(tenant)`: only that tenant's resources exist for this caller. `None`: every tenant.
    pub fn tenant_filter(&self) -> Option<&str> {
        self.0.tenant.as_deref()
    }

    pub fn is_admin(&self) -> bool {
        self.0.tenant.is_none()
    }

    /// Whether a resource of `tenant` (`None`: of every tenant) is visible to this caller.
    pub fn allows_tenant(&self, tenant: Option<&str>) -> bool {
        match (self.tenant_filter(), tenant) {
            (None, _) => true,
            (Some(own), Some(t)) => own == t,
            (Some(_), None) => false,
        }
    }

    /// A requested tenant narrowed to this caller's: a tenant token that named none gets its
    /// own; one that named another gets `Nothing`.
    pub fn narrow(&self, requested: Option<&str>) -> TenantSelection {
        match (self.tenant_filter(), requested) {
            (None, None) => TenantSelection::Any,
            (None, Some(t)) => TenantSelection::Only(t.to_string()),
            (Some(own), None) => TenantSelection::Only(own.to_string()),
            (Some(own), Some(t)) if own == t => TenantSelection::Only(own.to_string()),
            (Some(_), Some(_)) => TenantSelection::Nothing,
        }
    }

    /// The right to change things: 403 for a read-only token.
    pub fn writer(&self) -> Result<Writer, ApiError> {
        if self.0.read_only {
            return Err(ApiError::forbidden(None, "this token is read-only"));
        }
        Ok(Writer(self.clone()))
    }

    /// 403 unless an admin token.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden(None, format!("only admin tokens may {what}")))
        }
    }

    /// 403 naming `field` unless the caller may write resources of `tenant`.
    pub fn require_tenant(&self, field: &str, tenant: Option<&str>) -> Result<(), ApiError> {
        if self.allows_tenant(tenant) {
            return Ok(());
        }
        Err(ApiError::forbidden(
            Some(field),
            match self.tenant_filter() {
                Some(own) => format!("this token may only write resources of tenant {own:?}"),
                None => "not allowed".to_string(),
            },
        ))
    }
}

/// A scope that may change things (not read-only): what every service function that writes
/// takes, and who the audit log names.
#[derive(Debug, Clone)]
pub struct Writer(Scope);

impl Writer {
    pub fn scope(&self) -> &Scope {
        &self.0
    }

    pub fn principal(&self) -> &Principal {
        self.0.principal()
    }
}

impl std::ops::Deref for Writer {
    type Target = Scope;
    fn deref(&self) -> &Scope {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = ApiError;

    /// The principal the middleware put there; a route outside the middleware gets 401.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Scope>().cloned().ok_or_else(ApiError::unauthorized)
    }
}

/// `api_tokens`' id, name, tenant_id, read_only, hash.
type StoredToken = (String, String, Option<String>, bool, Vec<u8>);

/// The bootstrap tokens and the stored ones, with the short cache of lookups.
pub struct Tokens {
    bootstrap: Vec<[u8; 32]>,
    cache: Mutex<HashMap<[u8; 32], (Instant, Principal)>>,
}

/// What an `Authorization` header gave.
pub enum Authenticated {
    Yes(Principal),
    No,
}

impl Tokens {
    pub fn new(tokens: &[Secret]) -> Self {
        Tokens { bootstrap: tokens.iter().map(|t| digest(t.expose().as_bytes())).collect(), cache: Mutex::new(HashMap::new()) }
    }

    pub fn is_empty(&self) -> bool {
        self.bootstrap.is_empty()
    }

    /// Which bootstrap token `token` is, compared in constant time against all of them.
    fn bootstrap_index(&self, presented: &[u8; 32]) -> Option<usize> {
        let mut found = Choice::from(0);
        let mut index = 0usize;
        for (i, d) in self.bootstrap.iter().enumerate() {
            let hit = d.ct_eq(presented);
            found |= hit;
            // Branch-free select of the index of the hit.
            let mask = 0usize.wrapping_sub(usize::from(hit.unwrap_u8()));
            index = (index & !mask) | (i & mask);
        }
        bool::from(found).then_some(index)
    }

    /// Whether the value of an `Authorization` header carries a bootstrap token (no database).
    pub fn accepts_header(&self, header: Option<&[u8]>) -> bool {
        header.and_then(strip_bearer).is_some_and(|t| self.bootstrap_index(&digest(t)).is_some())
    }

    /// Authenticates the header. `bootstrap_allowed`: false for an address over its failure
    /// budget (only created tokens are checked then).
    pub async fn authenticate(&self, pool: &PgPool, header: Option<&[u8]>, bootstrap_allowed: bool) -> Result<Authenticated, ApiError> {
        let Some(token) = header.and_then(strip_bearer) else {
            return Ok(Authenticated::No);
        };
        let presented = digest(token);
        if !token.starts_with(TOKEN_PREFIX.as_bytes()) {
            if !bootstrap_allowed {
                return Ok(Authenticated::No);
            }
            return Ok(match self.bootstrap_index(&presented) {
                Some(i) => Authenticated::Yes(Principal::bootstrap(i)),
                None => Authenticated::No,
            });
        }
        if let Some(p) = self.cached(&presented) {
            return Ok(Authenticated::Yes(p));
        }
        let row: Option<StoredToken> = sqlx::query_as(
            "UPDATE api_tokens SET last_used_at = now() WHERE hash = $1 AND revoked_at IS NULL \
             RETURNING id, name, tenant_id, read_only, hash",
        )
        .bind(&presented[..])
        .fetch_optional(pool)
        .await?;
        let Some((id, name, tenant, read_only, hash)) = row else {
            return Ok(Authenticated::No);
        };
        // The lookup was by digest; compare it again in constant time all the same.
        if !bool::from(hash.as_slice().ct_eq(&presented[..])) {
            return Ok(Authenticated::No);
        }
        let principal = Principal { token_id: id, token_name: name, tenant, read_only };
        self.lock().insert(presented, (Instant::now(), principal.clone()));
        Ok(Authenticated::Yes(principal))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Instant, Principal)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, presented: &[u8; 32]) -> Option<Principal> {
        let mut cache = self.lock();
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        }
        match cache.get(presented) {
            Some((at, p)) if at.elapsed() < CACHE_TTL => Some(p.clone()),
            _ => None,
        }
    }

    /// Forgets the cached lookup of a token revoked by this process (others see it within
    /// [`CACHE_TTL`]).
    pub fn forget(&self, token_id: &str) {
        self.lock().retain(|_, (_, p)| p.token_id != token_id);
    }
}

fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Failed authentications per client address, in one-minute windows.
pub struct FailureLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl FailureLimiter {
    pub fn new(per_minute: u32) -> Self {
        FailureLimiter { per_minute: per_minute.max(1), windows: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `addr` has used its failures of this minute.
    pub fn exhausted(&self, addr: IpAddr) -> bool {
        self.lock().get(&addr).is_some_and(|(start, n)| start.elapsed() < WINDOW && *n >= self.per_minute)
    }

    /// Counts one failure of `addr`.
    pub fn failed(&self, addr: IpAddr) {
        let mut windows = self.lock();
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| start.elapsed() < WINDOW);
        }
        let entry = windows.entry(addr).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// A new token's value: `hlk_` + 32 characters of Crockford base32 (160 random bits).
pub fn new_token_value() -> Result<String, getrandom::Error> {
    const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes)?;
    let mut out = String::with_capacity(36);
    out.push_str(TOKEN_PREFIX);
    let mut acc: u64 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(CROCKFORD[((acc >> bits) & 31) as usize] as char);
        }
    }
    Ok(out)
}

/// The stored digest of a token value.
pub fn token_digest(value: &str) -> [u8; 32] {
    digest(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_configured_token_is_accepted() {
        let tokens = Tokens::new(&[Secret::new("first-token-0123456789"), Secret::new("second-token-0123456789")]);
        for ok in [&b"Bearer first-token-0123456789"[..], b"bearer second-token-0123456789", b"BEARER  second-token-0123456789 "] {
            assert!(tokens.accepts_header(Some(ok)), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [&b"Bearer first-token-012345678"[..], b"Bearer ", b"Basic first-token-0123456789", b"first-token-0123456789", b""] {
            assert!(!tokens.accepts_header(Some(bad)), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(!tokens.accepts_header(None));
        assert!(!Tokens::new(&[]).accepts_header(Some(b"Bearer anything")));
        assert_eq!(tokens.bootstrap_index(&digest(b"second-token-0123456789")), Some(1));
        assert_eq!(tokens.bootstrap_index(&digest(b"first-token-0123456789")), Some(0));
    }

    #[test]
    fn token_values_are_long_random_and_prefixed() {
        let a = new_token_value().expect("rng");
        let b = new_token_value().expect("rng");
        assert!(a.starts_with("hlk_") && a.len() == 36, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn scopes_narrow_and_refuse() {
        let tenant = Scope::new(Principal { token_id: "t".into(), token_name: "t".into(), tenant: Some("acme".into()), read_only: true });
        let admin = Scope::admin("a");
        assert_eq!(tenant.narrow(None), TenantSelection::Only("acme".into()));
        assert_eq!(tenant.narrow(Some("acme")), TenantSelection::Only("acme".into()));
        assert_eq!(tenant.narrow(Some("globex")), TenantSelection::Nothing);
        assert_eq!(admin.narrow(None), TenantSelection::Any);
        assert!(tenant.allows_tenant(Some("acme")) && !tenant.allows_tenant(Some("globex")) && !tenant.allows_tenant(None));
        assert!(admin.allows_tenant(None));
        assert_eq!(tenant.writer().expect_err("read-only").status(), 403);
        assert_eq!(tenant.require_admin("x").expect_err("not admin").status(), 403);
        assert!(admin.writer().is_ok());
    }

    #[test]
    fn failures_are_limited_per_address() {
        let limiter = FailureLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        limiter.failed(a);
        assert!(!limiter.exhausted(a));
        limiter.failed(a);
        assert!(limiter.exhausted(a) && !limiter.exhausted(b));
    }
}
