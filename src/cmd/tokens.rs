//! `hookline tokens create|list|revoke`: API tokens, through the setup API over HTTP (so each
//! change is checked, scoped and written to the audit log like any other, under the admin token
//! that made it).
//!
//! The setup API's URL: `--api-url` (or `HOOKLINE_SETUP_API_URL`), else the running `up` of
//! this folder (`runtime::lookup`, as `dlq`, `replay` and `secrets` find their servers), else
//! `setup_api.listen` on this machine. The admin token: `HOOKLINE_SETUP_API_TOKEN`, else the
//! first of `setup_api.tokens`, else the one `up` generated in `data_dir/setup-api.token`. A
//! token is never taken on the command line (it would be in the shell's history and `ps`).

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use std::time::Duration;

use hookline_shared::config::Config;
use hookline_shared::runtime::{self, Lookup};

pub enum TokensAction {
    Create { name: String, tenant: Option<String>, read_only: bool, json: bool },
    List { json: bool },
    Revoke { id: String },
}

/// Where the setup API is, and how this command found it.
fn api_url(config: &Config, given: Option<String>) -> String {
    if let Some(url) = given {
        return url.trim_end_matches('/').to_string();
    }
    if let Lookup::Found(up) = runtime::lookup(&config.data_dir) {
        return up.setup_api_url.trim_end_matches('/').to_string();
    }
    let listen = config.setup_api.listen;
    let host = if listen.ip().is_unspecified() { "127.0.0.1".to_string() } else { listen.ip().to_string() };
    format!("http://{host}:{}", listen.port())
}

fn admin_token(config: &Config) -> anyhow::Result<String> {
    if let Ok(t) = std::env::var("HOOKLINE_SETUP_API_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    if let Some(t) = config.setup_api.tokens.first() {
        return Ok(t.expose().to_string());
    }
    let generated = config.data_dir.join("setup-api.token");
    match std::fs::read_to_string(&generated) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => bail!(
            "no admin token: set HOOKLINE_SETUP_API_TOKEN (or setup_api.tokens), or run this where `hookline up` keeps {}",
            generated.display()
        ),
    }
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        request = request.header("content-type", "application/json").body(b.to_string());
    }
    let response = request.send().await.with_context(|| format!("the setup API at {url} does not answer"))?;
    let status = response.status().as_u16();
    let text = response.text().await.context("reading the setup API's answer")?;
    let value = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    if !(200..300).contains(&status) {
        let message = value["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
        let field = value["error"]["field"].as_str().map(|f| format!(" (field {f})")).unwrap_or_default();
        return Err(anyhow!("the setup API answered {status}: {message}{field}"));
    }
    Ok((status, value))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn run(config: Config, api: Option<String>, action: TokensAction) -> anyhow::Result<()> {
    let base = api_url(&config, api);
    let token = admin_token(&config)?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().context("HTTP client")?;
    let tokens = format!("{base}/api/v1/tokens");
    match action {
        TokensAction::Create { name, tenant, read_only, json } => {
            let body = json!({"name": name, "tenant_id": tenant, "read_only": read_only});
            let (_, created) = send(&http, reqwest::Method::POST, &tokens, &token, Some(body)).await?;
            if json {
                println!("{created}");
            } else {
                println!("id        {}", text(&created["id"]));
                let scope = if created["tenant_id"].is_null() { "admin (every tenant)".to_string() } else { text(&created["tenant_id"]) };
                println!("scope     {scope}");
                println!("read-only {}", created["read_only"].as_bool().unwrap_or(false));
                println!("token     {}", text(&created["token"]));
                eprintln!("The token is shown this once; only its SHA-256 is kept.");
            }
        }
        TokensAction::List { json } => {
            let (_, list) = send(&http, reqwest::Method::GET, &tokens, &token, None).await?;
            if json {
                println!("{list}");
            } else {
                println!("{:<26} {:<24} {:<16} {:<9} {:<25} LAST USED", "ID", "NAME", "TENANT", "READ-ONLY", "CREATED");
                for t in list["tokens"].as_array().into_iter().flatten() {
                    println!(
                        "{:<26} {:<24} {:<16} {:<9} {:<25} {}",
                        text(&t["id"]),
                        text(&t["name"]),
                        if t["tenant_id"].is_null() { "(admin)".to_string() } else { text(&t["tenant_id"]) },
                        t["read_only"].as_bool().unwrap_or(false),
                        text(&t["created_at"]),
                        text(&t["last_used_at"]),
                    );
                }
            }
        }
        TokensAction::Revoke { id } => {
            if !hookline_shared::names::is_valid_id(&id) {
                bail!("{id:?} is not a token id (tok_...)");
            }
            send(&http, reqwest::Method::DELETE, &format!("{tokens}/{id}"), &token, None).await?;
            println!("revoked {id}: every setup-api process refuses it within a second");
        }
    }
    Ok(())
}
