//! Each platform helper against a local fake of the platform that records the calls it gets
//! and answers as the platform does (Meta's fakes also verify the callback URL with the GET
//! handshake, against the running ingest, as Meta does). Failures leave no channel behind.

mod common;

use base64::Engine;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

use common::{assert_logs_clean, meta_handshake, secret, FakePlatform, Options, Recorded, Stack};
use hookline_shared::Source;

async fn stack_with(fake: &FakePlatform) -> Stack {
    Stack::start(Options {
        ingest: true,
        extra: &[
            ("HOOKLINE_SETUP_API__TELEGRAM_API_URL", &fake.base),
            ("HOOKLINE_SETUP_API__GRAPH_API_URL", &format!("{}/v21.0", fake.base)),
            ("HOOKLINE_SETUP_API__TWILIO_API_URL", &fake.base),
        ],
    })
    .await
}

async fn channel_count(stack: &Stack) -> usize {
    stack.api.get("/api/v1/channels").await.json()["channels"].as_array().expect("list").len()
}

fn ok(body: Value) -> (u16, String) {
    (200, body.to_string())
}

// ---------------------------------------------------------------------------------------------

const BOT_TOKEN: &str = "123456789:AAHfake-bot-token_for_tests";

#[tokio::test]
async fn telegram_get_me_then_set_webhook_with_the_secret_token() {
    let token = secret(BOT_TOKEN);
    let fake = FakePlatform::start(|r: Recorded| async move {
        match r.path.rsplit('/').next() {
            Some("getMe") => {
                ok(json!({"ok": true, "result": {"id": 123456789, "is_bot": true, "first_name": "Acme", "username": "acme_support_bot"}}))
            }
            Some("setWebhook") => ok(json!({"ok": true, "result": true, "description": "Webhook was set"})),
            _ => (404, json!({"ok": false, "error_code": 404, "description": "Not Found"}).to_string()),
        }
    })
    .await;
    let stack = stack_with(&fake).await;
    let answer = stack
        .api
        .post(
            "/api/v1/integrations/telegram/setup",
            &json!({"tenant_id": "acme", "name": "Support bot", "bot_token": token, "allowed_updates": ["message", "callback_query"]}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let result = answer.json();
    let channel = &result["channel"];
    let id = channel["id"].as_str().expect("id");
    assert_eq!(channel["source"], "telegram");
    assert_eq!(channel["platform_credentials_set"], true);
    assert_eq!(result["platform"]["bot_username"], "acme_support_bot");
    assert_eq!(result["platform"]["bot_id"], "123456789");
    assert!(result.get("paste").is_none());

    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].method, "GET");
    assert_eq!(calls[0].path, format!("/bot{token}/getMe"));
    assert_eq!(calls[1].method, "POST");
    assert_eq!(calls[1].path, format!("/bot{token}/setWebhook"));
    let params: Value = serde_json::from_str(&calls[1].body).expect("JSON body");
    assert_eq!(params["url"], channel["webhook_url"]);
    assert_eq!(params["allowed_updates"], json!(["message", "callback_query"]));
    assert_eq!(params["drop_pending_updates"], false);
    let secret_token = secret(params["secret_token"].as_str().expect("secret_token"));
    assert!(secret_token.len() >= 32);
    // What Telegram will send is accepted by ingest now.
    stack.wait_webhook(id, Source::Telegram, &secret_token, 200, std::time::Duration::from_secs(1)).await;
    assert_eq!(stack.webhook(id, Source::Telegram, "not-the-token").await, 401);
    assert_logs_clean();
}

#[tokio::test]
async fn telegram_refusals_and_outages_leave_no_channel() {
    let token = secret("987654321:AAHanother-fake-token");
    let mode = Arc::new(Mutex::new("unauthorized"));
    let fake = {
        let mode = mode.clone();
        FakePlatform::start(move |r: Recorded| {
            let mode = *mode.lock().unwrap_or_else(|p| p.into_inner());
            async move {
                match (mode, r.path.rsplit('/').next()) {
                    ("unauthorized", _) => (401, json!({"ok": false, "error_code": 401, "description": "Unauthorized"}).to_string()),
                    ("down", _) => (502, "Bad Gateway".to_string()),
                    (_, Some("getMe")) => ok(json!({"ok": true, "result": {"id": 987654321, "username": "b_bot"}})),
                    _ => (400, json!({"ok": false, "error_code": 400, "description": "Bad Request: bad webhook: HTTPS url must be provided for webhook"}).to_string()),
                }
            }
        })
        .await
    };
    let stack = stack_with(&fake).await;
    let body = json!({"tenant_id": "acme", "bot_token": token});

    let answer = stack.api.post("/api/v1/integrations/telegram/setup", &body).await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    assert_eq!(answer.error(), ("platform_rejected".into(), Some("bot_token".into())));
    assert!(answer.text.contains("Unauthorized"), "{}", answer.text);

    *mode.lock().unwrap_or_else(|p| p.into_inner()) = "down";
    let before = fake.calls().len();
    let answer = stack.api.post("/api/v1/integrations/telegram/setup", &body).await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert_eq!(answer.error().0, "platform_unavailable");
    assert_eq!(fake.calls().len() - before, 3, "a 5xx is retried twice");

    *mode.lock().unwrap_or_else(|p| p.into_inner()) = "bad-webhook";
    let answer = stack.api.post("/api/v1/integrations/telegram/setup", &body).await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    assert!(answer.text.contains("HTTPS url"), "{}", answer.text);
    assert_eq!(channel_count(&stack).await, 0, "the channel was deleted again");

    // Input is checked before any call.
    let calls = fake.calls().len();
    for (body, field) in [
        (json!({"tenant_id": "acme", "bot_token": "not-a-token"}), "bot_token"),
        (json!({"tenant_id": "acme"}), "bot_token"),
        (json!({"tenant_id": "a b", "bot_token": token}), "tenant_id"),
        (json!({"tenant_id": "acme", "bot_token": token, "secret_token": "has space"}), "secret_token"),
        (json!({"tenant_id": "acme", "bot_token": token, "allowed_updates": ["Message!"]}), "allowed_updates"),
    ] {
        let answer = stack.api.post("/api/v1/integrations/telegram/setup", &body).await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.text);
        assert_eq!(answer.error().1.as_deref(), Some(field));
    }
    assert_eq!(fake.calls().len(), calls);
    assert_logs_clean();
}

// ---------------------------------------------------------------------------------------------

/// A Graph API fake: object reads, and subscriptions that verify the callback URL first.
async fn fake_graph(handshakes: Arc<Mutex<Vec<bool>>>) -> FakePlatform {
    FakePlatform::start(move |r: Recorded| {
        let handshakes = handshakes.clone();
        async move {
            let path = r.path.trim_start_matches("/v21.0/").to_string();
            let parts: Vec<&str> = path.split('/').collect();
            match (r.method.as_str(), parts.as_slice()) {
                ("GET", ["1111"]) => ok(json!({"id": "1111", "display_phone_number": "+1 555-0100", "verified_name": "Acme Inc"})),
                ("GET", ["2222"]) => ok(json!({"id": "2222", "name": "Acme Page", "instagram_business_account": {"id": "17841400000000000"}})),
                ("GET", ["3333"]) => ok(json!({"id": "3333", "name": "Page without Instagram"})),
                ("GET", [_]) => (400, json!({"error": {"message": "Unsupported get request. Object does not exist", "type": "GraphMethodException", "code": 100}}).to_string()),
                ("POST", [_, "subscribed_apps"]) | ("POST", [_, "subscriptions"]) => {
                    // Meta verifies a callback URL before it accepts it.
                    let callback = r
                        .form_value("override_callback_uri")
                        .or_else(|| r.form_value("callback_url"));
                    if let (Some(url), Some(token)) = (callback, r.form_value("verify_token")) {
                        let verified = meta_handshake(&url, &token).await;
                        handshakes.lock().unwrap_or_else(|p| p.into_inner()).push(verified);
                        if !verified {
                            return (400, json!({"error": {"message": "The URL couldn't be validated. Callback verification failed", "code": 2200}}).to_string());
                        }
                    }
                    ok(json!({"success": true}))
                }
                _ => (404, "{}".to_string()),
            }
        }
    })
    .await
}

#[tokio::test]
async fn whatsapp_reads_the_number_then_subscribes_the_waba_with_the_channels_url() {
    let handshakes: Arc<Mutex<Vec<bool>>> = Arc::default();
    let fake = fake_graph(handshakes.clone()).await;
    let stack = stack_with(&fake).await;
    let app_secret = secret("whatsapp-helper-app-secret");
    let access_token = secret("EAAGwhatsapp-helper-access-token");
    let answer = stack
        .api
        .post(
            "/api/v1/integrations/whatsapp/setup",
            &json!({"tenant_id": "acme", "app_secret": app_secret, "access_token": access_token, "waba_id": "9999", "phone_number_id": "1111"}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let result = answer.json();
    let channel = &result["channel"];
    let id = channel["id"].as_str().expect("id");
    assert_eq!(channel["source"], "whatsapp");
    assert_eq!(channel["verify_token_set"], true);
    assert_eq!(channel["settings"]["display_phone_number"], "+1 555-0100");
    assert_eq!(result["platform"]["verified_name"], "Acme Inc");

    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!((calls[0].method.as_str(), calls[0].path.as_str()), ("GET", "/v21.0/1111"));
    assert_eq!(calls[0].query, "fields=id%2Cdisplay_phone_number%2Cverified_name");
    assert_eq!(calls[0].header("authorization"), Some(format!("Bearer {access_token}")));
    assert_eq!((calls[1].method.as_str(), calls[1].path.as_str()), ("POST", "/v21.0/9999/subscribed_apps"));
    assert_eq!(calls[1].header("authorization"), Some(format!("Bearer {access_token}")));
    assert_eq!(calls[1].form_value("override_callback_uri").as_deref(), channel["webhook_url"].as_str());
    secret(calls[1].form_value("verify_token").expect("verify_token"));
    assert_eq!(*handshakes.lock().expect("lock"), [true], "Meta's handshake succeeded");
    stack.wait_webhook(id, Source::Whatsapp, &app_secret, 200, std::time::Duration::from_secs(1)).await;

    // An unknown number: refused, nothing created, no subscription attempted.
    let answer = stack
        .api
        .post(
            "/api/v1/integrations/whatsapp/setup",
            &json!({"tenant_id": "acme", "app_secret": app_secret, "access_token": access_token, "waba_id": "9999", "phone_number_id": "4444"}),
        )
        .await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    assert_eq!(answer.error(), ("platform_rejected".into(), Some("phone_number_id".into())));
    assert_eq!(fake.calls().len(), 3);
    assert_eq!(channel_count(&stack).await, 1);
    let answer = stack
        .api
        .post(
            "/api/v1/integrations/whatsapp/setup",
            &json!({"tenant_id": "acme", "app_secret": app_secret, "access_token": access_token, "waba_id": "abc", "phone_number_id": "1111"}),
        )
        .await;
    assert_eq!(answer.error().1.as_deref(), Some("waba_id"));
    assert_logs_clean();
}

#[tokio::test]
async fn messenger_reads_the_page_then_subscribes_the_app_and_the_page() {
    let handshakes: Arc<Mutex<Vec<bool>>> = Arc::default();
    let fake = fake_graph(handshakes.clone()).await;
    let stack = stack_with(&fake).await;
    let app_secret = secret("messenger-helper-app-secret");
    let page_token = secret("EAAGmessenger-page-token");
    let verify = secret("messenger-chosen-verify-token");
    let answer = stack
        .api
        .post(
            "/api/v1/integrations/messenger/setup",
            &json!({"tenant_id": "acme", "app_id": "5555", "app_secret": app_secret, "page_id": "2222", "page_access_token": page_token, "verify_token": verify}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let result = answer.json();
    let channel = &result["channel"];
    let id = channel["id"].as_str().expect("id");
    assert_eq!(channel["source"], "messenger");
    assert_eq!(result["platform"]["page_name"], "Acme Page");

    let calls = fake.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!((calls[0].method.as_str(), calls[0].path.as_str()), ("GET", "/v21.0/2222"));
    assert_eq!(calls[0].header("authorization"), Some(format!("Bearer {page_token}")));
    assert_eq!((calls[1].method.as_str(), calls[1].path.as_str()), ("POST", "/v21.0/5555/subscriptions"));
    assert_eq!(calls[1].header("authorization"), Some(format!("Bearer 5555|{app_secret}")), "the app token");
    assert_eq!(calls[1].form_value("object").as_deref(), Some("page"));
    assert_eq!(calls[1].form_value("callback_url").as_deref(), channel["webhook_url"].as_str());
    assert_eq!(calls[1].form_value("verify_token").as_deref(), Some(verify.as_str()));
    assert_eq!(calls[1].form_value("fields").as_deref(), Some("messages,messaging_postbacks,message_deliveries,message_reads"));
    assert_eq!((calls[2].method.as_str(), calls[2].path.as_str()), ("POST", "/v21.0/2222/subscribed_apps"));
    assert_eq!(calls[2].header("authorization"), Some(format!("Bearer {page_token}")));
    assert!(calls[2].form_value("subscribed_fields").is_some());
    assert_eq!(*handshakes.lock().expect("lock"), [true]);
    stack.wait_webhook(id, Source::Messenger, &app_secret, 200, std::time::Duration::from_secs(1)).await;
    assert_logs_clean();
}

#[tokio::test]
async fn instagram_needs_a_linked_account_and_subscribes_the_instagram_object() {
    let handshakes: Arc<Mutex<Vec<bool>>> = Arc::default();
    let fake = fake_graph(handshakes.clone()).await;
    let stack = stack_with(&fake).await;
    let app_secret = secret("instagram-helper-app-secret");
    let page_token = secret("EAAGinstagram-page-token");
    let body = |page: &str| json!({"tenant_id": "acme", "app_id": "5555", "app_secret": app_secret, "page_id": page, "page_access_token": page_token, "fields": ["messages", "messaging_seen"]});
    let answer = stack.api.post("/api/v1/integrations/instagram/setup", &body("3333")).await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    assert_eq!(answer.error().1.as_deref(), Some("page_id"));
    assert_eq!(fake.calls().len(), 1, "only the page was read");
    assert_eq!(channel_count(&stack).await, 0);

    let answer = stack.api.post("/api/v1/integrations/instagram/setup", &body("2222")).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let result = answer.json();
    let id = result["channel"]["id"].as_str().expect("id");
    assert_eq!(result["channel"]["source"], "instagram");
    assert_eq!(result["platform"]["instagram_account_id"], "17841400000000000");
    let calls = fake.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls[1].query.contains("instagram_business_account"), "{}", calls[1].query);
    assert_eq!(calls[2].path, "/v21.0/5555/subscriptions");
    assert_eq!(calls[2].form_value("object").as_deref(), Some("instagram"));
    assert_eq!(calls[2].form_value("fields").as_deref(), Some("messages,messaging_seen"));
    assert_eq!(calls[3].path, "/v21.0/2222/subscribed_apps");
    secret(calls[2].form_value("verify_token").expect("verify_token"));
    assert_eq!(*handshakes.lock().expect("lock"), [true]);
    stack.wait_webhook(id, Source::Instagram, &app_secret, 200, std::time::Duration::from_secs(1)).await;
    assert_logs_clean();
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn twilio_reads_the_number_then_sets_its_webhook_and_status_callback() {
    let account = format!("AC{}", "0123456789abcdef".repeat(2));
    let number = format!("PN{}", "fedcba9876543210".repeat(2));
    let fake = FakePlatform::start(|r: Recorded| async move {
        if r.path.ends_with(".json") && r.path.contains("/IncomingPhoneNumbers/") {
            ok(json!({"sid": "PN...", "phone_number": "+15550100", "sms_url": "", "status_callback": ""}))
        } else {
            (404, json!({"code": 20404, "message": "The requested resource was not found", "status": 404}).to_string())
        }
    })
    .await;
    let stack = stack_with(&fake).await;
    let auth_token = secret("twilio-helper-auth-token-0001");
    let answer = stack
        .api
        .post(
            "/api/v1/integrations/twilio/setup",
            &json!({"tenant_id": "acme", "platform": "sms", "account_sid": account, "auth_token": auth_token, "phone_number_sid": number}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let result = answer.json();
    let channel = &result["channel"];
    let id = channel["id"].as_str().expect("id");
    assert_eq!(channel["source"], "twilio");
    assert_eq!(channel["platform"], "sms");
    assert_eq!(result["platform"]["phone_number"], "+15550100");

    let resource = format!("/2010-04-01/Accounts/{account}/IncomingPhoneNumbers/{number}.json");
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{account}:{auth_token}")));
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!((calls[0].method.as_str(), calls[0].path.as_str()), ("GET", resource.as_str()));
    assert_eq!(calls[0].header("authorization").as_deref(), Some(basic.as_str()));
    assert_eq!((calls[1].method.as_str(), calls[1].path.as_str()), ("POST", resource.as_str()));
    assert_eq!(calls[1].header("authorization").as_deref(), Some(basic.as_str()));
    let url = channel["webhook_url"].as_str().expect("url");
    assert_eq!(calls[1].form_value("SmsUrl").as_deref(), Some(url));
    assert_eq!(calls[1].form_value("SmsMethod").as_deref(), Some("POST"));
    assert_eq!(calls[1].form_value("StatusCallback").as_deref(), Some(url));
    assert_eq!(calls[1].form_value("StatusCallbackMethod").as_deref(), Some("POST"));
    // Twilio signs with the auth token and the URL it was given: ingest accepts it.
    stack.wait_webhook(id, Source::Twilio, &auth_token, 200, std::time::Duration::from_secs(1)).await;

    let answer = stack
        .api
        .post(
            "/api/v1/integrations/twilio/setup",
            &json!({"tenant_id": "acme", "account_sid": "AC1", "auth_token": auth_token, "phone_number_sid": number}),
        )
        .await;
    assert_eq!(answer.error().1.as_deref(), Some("account_sid"));
    assert_logs_clean();
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tawkto_and_mercadopago_answer_what_to_paste_once() {
    let fake = FakePlatform::start(|_r: Recorded| async { (500, "{}".to_string()) }).await;
    let stack = stack_with(&fake).await;

    // Generated: the one answer that holds a secret, on purpose.
    let answer = stack
        .api
        .send_unchecked(
            axum::http::Method::POST,
            "/api/v1/integrations/tawkto/setup",
            Some(&json!({"tenant_id": "acme", "name": "Website chat"}).to_string()),
            Some(common::TOKEN),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let result = answer.json();
    let id = result["channel"]["id"].as_str().expect("id").to_string();
    let paste = &result["paste"];
    assert_eq!(paste["webhook_url"], result["channel"]["webhook_url"]);
    let generated = secret(paste["secret"].as_str().expect("the secret, once"));
    assert!(generated.len() >= 32);
    assert!(paste["instructions"].as_str().expect("text").contains("Tawk.to"));
    stack.wait_webhook(&id, Source::Tawkto, &generated, 200, std::time::Duration::from_secs(1)).await;
    // Never again: reads are checked for it from now on.
    assert_eq!(stack.api.get(&format!("/api/v1/channels/{id}")).await.status, 200);
    stack.api.get("/api/v1/channels").await;

    // Given by the console: stored, not echoed.
    let given = secret("mercadopago-console-secret");
    let answer = stack.api.post("/api/v1/integrations/mercadopago/setup", &json!({"tenant_id": "acme", "secret": given})).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let result = answer.json();
    assert!(result["paste"].get("secret").is_none());
    assert!(result["paste"]["instructions"].as_str().expect("text").contains("Mercado Pago"));
    let id = result["channel"]["id"].as_str().expect("id");
    stack.wait_webhook(id, Source::Mercadopago, &given, 200, std::time::Duration::from_secs(1)).await;
    assert!(fake.calls().is_empty(), "no platform API is called");
    assert_logs_clean();
}
