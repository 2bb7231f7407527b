//! Route tests for every endpoint and its error paths (the harness is in `common/`).

mod common;

use common::*;
use realmq_api::{ApiConfig, registration_sign};
use serde_json::{Value, json};

#[tokio::test]
async fn health_ready_and_unknown_paths() {
    let api = api().await;
    let (s, b) = api.call("GET", "/api/v1/health", None, None).await;
    assert_eq!((s, &b["data"]["status"]), (200, &json!("up")));
    let (s, b) = api.call("GET", "/api/v1/ready", None, None).await;
    assert_eq!((s, &b["data"]["leader"]), (200, &json!(1)));
    assert_error(
        api.call("GET", "/api/v1/nope", None, None).await,
        404,
        "no such endpoint",
    );
    assert_error(
        api.call("PATCH", "/api/v1/products", Some(ROOT), None)
            .await,
        404,
        "no such endpoint",
    );
}

#[tokio::test]
async fn authentication_basic_bearer_and_failures() {
    let api = api().await;
    let (s, b) = api
        .call(
            "POST",
            "/api/v1/auth",
            None,
            Some(json!({"username": "root", "password": "123456"})),
        )
        .await;
    assert_eq!((s, &b["data"]["role"]), (200, &json!("administrator")));
    let bearer = format!("Bearer {}", b["data"]["token"].as_str().unwrap());
    let (s, _) = api
        .call("GET", "/api/v1/products", Some(&bearer), None)
        .await;
    assert_eq!(s, 200, "bearer tokens work");

    assert_error(
        api.call(
            "POST",
            "/api/v1/auth",
            None,
            Some(json!({"username": "root", "password": "x"})),
        )
        .await,
        401,
        "wrong user name or password",
    );
    assert_error(
        api.call(
            "POST",
            "/api/v1/auth",
            None,
            Some(json!({"username": "root"})),
        )
        .await,
        400,
        "password",
    );
    assert_error(
        api.call("GET", "/api/v1/products", None, None).await,
        401,
        "missing Authorization",
    );
    assert_error(
        api.call(
            "GET",
            "/api/v1/products",
            Some(&basic("root", "nope")),
            None,
        )
        .await,
        401,
        "wrong",
    );
    assert_error(
        api.call(
            "GET",
            "/api/v1/products",
            Some("Bearer forged.token.here"),
            None,
        )
        .await,
        401,
        "invalid bearer token",
    );
    assert_error(
        api.call("GET", "/api/v1/products", Some("Digest x"), None)
            .await,
        401,
        "Basic or Bearer",
    );
}

/// Past `failed_login_limit` wrong passwords a minute, a user name is refused with 429 (the error
/// envelope and Retry-After) from any address, and so is the address for any user; neither runs
/// argon2 again. A correct password from a fresh address for another user still works.
#[tokio::test]
async fn failed_logins_are_limited_per_user_and_per_address() {
    let api = api_with(ApiConfig {
        failed_login_limit: 3,
        ..ApiConfig::default()
    })
    .await;
    let attempt = |user: &'static str, pw: &'static str, from: [u8; 4]| {
        let req = warp::test::request()
            .method("GET")
            .path("/api/v1/products")
            .header("authorization", basic(user, pw))
            .remote_addr((from, 40000).into());
        let ctx = api.ctx.clone();
        async move {
            let res = req.reply(&realmq_api::routes(ctx)).await;
            let body: Value = serde_json::from_slice(res.body()).unwrap();
            let retry = res.headers().get("retry-after").cloned();
            (res.status().as_u16(), body, retry)
        }
    };
    let (s, b) = api
        .root(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "alice", "password": "alice-pw-1", "role": "viewer"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    let attacker = [10, 0, 0, 1];
    for i in 0..3 {
        let (s, _, _) = attempt("root", "wrong", attacker).await;
        assert_eq!(s, 401, "attempt {i} is checked");
    }
    let (s, b, retry) = attempt("root", "wrong", attacker).await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(b["code"], 429);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("too many failed logins"),
        "{b}"
    );
    let secs: u64 = retry
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    // The user name is blocked from anywhere; a credential verified before the flood is still
    // accepted, since it never reaches argon2.
    assert_eq!(attempt("root", "guess", [10, 0, 0, 2]).await.0, 429);
    assert_eq!(attempt("root", "123456", [10, 0, 0, 2]).await.0, 200);
    // The address is blocked for every user name, known or not.
    assert_eq!(attempt("alice", "alice-pw-1", attacker).await.0, 429);
    assert_eq!(attempt("nobody", "x", attacker).await.0, 429);
    // Another user from another address is unaffected.
    assert_eq!(attempt("alice", "alice-pw-1", [10, 0, 0, 3]).await.0, 200);
    // POST /auth counts the same way.
    let (s, b) = api
        .call(
            "POST",
            "/api/v1/auth",
            None,
            Some(json!({"username": "root", "password": "guess"})),
        )
        .await;
    assert_eq!(s, 429, "{b}");
}

#[tokio::test]
async fn bearer_tokens_expire() {
    let api = api_with(ApiConfig {
        token_ttl: std::time::Duration::from_secs(1),
        ..ApiConfig::default()
    })
    .await;
    let (_, b) = api
        .call(
            "POST",
            "/api/v1/auth",
            None,
            Some(json!({"username": "root", "password": "123456"})),
        )
        .await;
    let bearer = format!("Bearer {}", b["data"]["token"].as_str().unwrap());
    assert_eq!(
        api.call("GET", "/api/v1/users", Some(&bearer), None)
            .await
            .0,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_error(
        api.call("GET", "/api/v1/users", Some(&bearer), None).await,
        401,
        "ExpiredSignature",
    );
}

/// Names that become MQTT identities refuse the wildcards `+`, `#` and NUL (an ACL rule with
/// `%c` / `%u` must never widen), naming the field; a user name with a space or non-ASCII
/// letters is addressed percent-encoded in the path.
#[tokio::test]
async fn names_refuse_wildcards_and_paths_are_decoded() {
    let api = api().await;
    assert_error(
        api.root(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "a#b", "password": "secret1"})),
        )
        .await,
        400,
        "username must not contain",
    );
    let (_, key, _) = api.product("wild").await;
    for (field, value) in [
        ("name", "d#"),
        ("username", "u+"),
        ("mqtt_client_id", "c\u{0}"),
    ] {
        let mut body =
            json!({"name": "ok", "product_key": key, "username": "ok-u", "mqtt_client_id": "ok-c"});
        body[field] = json!(value);
        assert_error(
            api.root("POST", "/api/v1/devices", Some(body)).await,
            400,
            &format!("{field} must not contain"),
        );
    }
    let did = api.device(&key, "fine").await;
    assert_error(
        api.root(
            "PUT",
            &format!("/api/v1/devices/{did}"),
            Some(json!({"mqtt_client_id": "x/#"})),
        )
        .await,
        400,
        "mqtt_client_id must not contain",
    );

    for name in ["ana maria", "zoë"] {
        let (s, b) = api
            .root(
                "POST",
                "/api/v1/users",
                Some(json!({"username": name, "password": "secret1"})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = api
        .root(
            "PUT",
            "/api/v1/users/ana%20maria",
            Some(json!({"role": "administrator"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = api.root("DELETE", "/api/v1/users/zo%C3%AB", None).await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = api.root("GET", "/api/v1/users", None).await;
    let users: Vec<(&str, &str)> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["username"].as_str().unwrap(), u["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        users,
        [("ana maria", "administrator"), ("root", "administrator")]
    );
}

/// Free-text fields and the topics of one request are bounded (`max_text`, `max_topics`): past
/// the bound the request gets 400 naming the field, and nothing is written.
#[tokio::test]
async fn free_text_and_topic_lists_are_bounded() {
    let api = api_with(ApiConfig {
        max_text: 16,
        max_topics: 3,
        ..ApiConfig::default()
    })
    .await;
    let long = "x".repeat(17);
    assert_error(
        api.root(
            "POST",
            "/api/v1/products",
            Some(json!({"name": "p", "description": long})),
        )
        .await,
        400,
        "description must be at most 16 bytes",
    );
    let (_, key, _) = api.product("bounded").await;
    for field in ["nickname", "device_type", "description"] {
        let mut body =
            json!({"name": "d", "product_key": key, "username": "u", "mqtt_client_id": "c"});
        body[field] = json!(long);
        assert_error(
            api.root("POST", "/api/v1/devices", Some(body)).await,
            400,
            &format!("{field} must be at most 16 bytes"),
        );
    }
    let (_, b) = api.root("GET", "/api/v1/devices", None).await;
    assert_eq!(b["meta"]["count"], 0, "nothing was created: {b}");
    let did = api.device(&key, "d").await;
    assert_error(
        api.root(
            "PUT",
            &format!("/api/v1/devices/{did}"),
            Some(json!({"nickname": long})),
        )
        .await,
        400,
        "nickname must be at most 16 bytes",
    );
    assert_error(
        api.root(
            "POST",
            "/api/v1/mqtt/publish",
            Some(json!({"topics": "a,b,c,d", "payload": "x"})),
        )
        .await,
        400,
        "at most 3 per request",
    );
    let (s, b) = api
        .root(
            "POST",
            "/api/v1/mqtt/publish",
            Some(json!({"topics": "a,b,c", "payload": "x"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // Each refusal is counted for $SYS/.../limits/api_refused.
    let counted = api
        .node
        .limits_refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(counted, 6);
}

/// Product secrets and device passwords are for administrators: a viewer sees them masked
/// (with the secret it could sign `POST /devices/register` and claim devices).
#[tokio::test]
async fn viewers_see_secrets_and_passwords_masked() {
    let api = api().await;
    let (s, _) = api
        .root(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "val", "password": "secret1"})),
        )
        .await;
    assert_eq!(s, 200);
    let viewer = basic("val", "secret1");
    let (pid, key, secret) = api.product("masked").await;
    let did = api.device(&key, "d1").await;

    let product = format!("/api/v1/products/{pid}");
    let (_, b) = api.root("GET", &product, None).await;
    assert_eq!(b["data"][0]["product_secret"], json!(secret));
    let (s, b) = api.call("GET", &product, Some(&viewer), None).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"][0]["product_secret"], "******", "{b}");
    assert!(!b.to_string().contains(&secret), "the secret leaks: {b}");

    let device = format!("/api/v1/devices/{did}");
    let (_, b) = api.root("GET", &device, None).await;
    let password = b["data"][0]["password"].as_str().unwrap().to_string();
    assert_ne!(password, "******");
    let (s, b) = api.call("GET", &device, Some(&viewer), None).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"][0]["password"], "******", "{b}");
    assert!(
        !b.to_string().contains(&password),
        "the password leaks: {b}"
    );
}

/// A password change revokes the user's tokens (the token carries a fingerprint of the stored
/// hash, which the change replaces on every node); logging in again gives one that works, and
/// deleting the user revokes that one too.
#[tokio::test]
async fn a_password_change_or_deletion_revokes_tokens() {
    let api = api().await;
    let (s, _) = api
        .root(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "tess", "password": "secret1", "role": "administrator"})),
        )
        .await;
    assert_eq!(s, 200);
    let token = async |password: &str| {
        let (s, b) = api
            .call(
                "POST",
                "/api/v1/auth",
                None,
                Some(json!({"username": "tess", "password": password})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        format!("Bearer {}", b["data"]["token"].as_str().unwrap())
    };
    let old = token("secret1").await;
    let (s, _) = api.call("GET", "/api/v1/users", Some(&old), None).await;
    assert_eq!(s, 200);
    let (s, _) = api
        .call(
            "PUT",
            "/api/v1/users/tess",
            Some(&old),
            Some(json!({"password": "secret2"})),
        )
        .await;
    assert_eq!(s, 200, "a user changes her own password with her token");
    assert_error(
        api.call("GET", "/api/v1/users", Some(&old), None).await,
        401,
        "password changed",
    );
    let new = token("secret2").await;
    let (s, _) = api.call("GET", "/api/v1/users", Some(&new), None).await;
    assert_eq!(s, 200, "a token issued after the change works");
    let (s, _) = api
        .root(
            "PUT",
            "/api/v1/users/tess",
            Some(json!({"role": "administrator"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = api.call("GET", "/api/v1/users", Some(&new), None).await;
    assert_eq!(s, 200, "other changes to the user keep her tokens");
    let (s, _) = api.root("DELETE", "/api/v1/users/tess", None).await;
    assert_eq!(s, 200);
    assert_error(
        api.call("GET", "/api/v1/users", Some(&new), None).await,
        401,
        "no longer exists",
    );
}

#[tokio::test]
async fn users_roles_and_the_last_administrator() {
    let api = api().await;
    let (s, _) = api
        .root(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "vera", "password": "secret1"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_error(
        api.root(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "vera", "password": "secret1"})),
        )
        .await,
        400,
        "username already exists",
    );
    assert_error(
        api.root(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "x", "password": "123"})),
        )
        .await,
        400,
        "password must be",
    );
    assert_error(
        api.root(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "x", "password": "123456", "role": "god"})),
        )
        .await,
        400,
        "role",
    );

    let vera = basic("vera", "secret1");
    let (s, b) = api.call("GET", "/api/v1/users", Some(&vera), None).await;
    assert_eq!(s, 200, "viewers read");
    let names: Vec<&str> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["root", "vera"]);
    assert_error(
        api.call(
            "POST",
            "/api/v1/products",
            Some(&vera),
            Some(json!({"name": "p"})),
        )
        .await,
        403,
        "viewer",
    );

    assert_error(
        api.root("PUT", "/api/v1/users/root", Some(json!({"role": "viewer"})))
            .await,
        400,
        "at least one administrator",
    );
    assert_error(
        api.root("DELETE", "/api/v1/users/root", None).await,
        400,
        "at least one administrator",
    );
    assert_error(
        api.root(
            "PUT",
            "/api/v1/users/ghost",
            Some(json!({"role": "viewer"})),
        )
        .await,
        404,
        "user not found",
    );

    let (s, _) = api
        .root(
            "PUT",
            "/api/v1/users/vera",
            Some(json!({"role": "administrator", "password": "secret2"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_error(
        api.call("GET", "/api/v1/users", Some(&vera), None).await,
        401,
        "wrong",
    );
    let (s, _) = api
        .call(
            "POST",
            "/api/v1/products",
            Some(&basic("vera", "secret2")),
            Some(json!({"name": "p"})),
        )
        .await;
    assert_eq!(s, 200, "promoted user writes with the new password");
    let (s, _) = api.root("DELETE", "/api/v1/users/vera", None).await;
    assert_eq!(s, 200);
    assert_error(
        api.root("DELETE", "/api/v1/users/vera", None).await,
        404,
        "not found",
    );
}

#[tokio::test]
async fn products_crud_paging_and_errors() {
    let api = api().await;
    let (s, b) = api
        .root(
            "POST",
            "/api/v1/products",
            Some(json!({"name": "test", "type": "2", "dynamic_reg": 0, "description": "d"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let key = b["data"]["product_key"].as_str().unwrap();
    assert!(
        key.len() == 10 && key.chars().all(|c| c.is_ascii_hexdigit()),
        "{key}"
    );
    assert_eq!(b["data"]["secret"].as_str().unwrap().len(), 16);
    for i in 0..11 {
        api.product(&format!("bulk-{i:02}")).await;
    }

    let (s, b) = api.root("GET", "/api/v1/products", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        b["meta"],
        json!({"page": "1", "limit": "10", "hasnext": true, "count": 12})
    );
    let first = &b["data"][0];
    assert_eq!(
        (
            first["type"].clone(),
            first["dynamic_reg"].clone(),
            first["device_count"].clone()
        ),
        (json!(2), json!(0), json!(0))
    );
    assert!(first["create_at"].as_str().unwrap().len() == 19);
    let (_, b) = api
        .root("GET", "/api/v1/products?_page=2&_limit=10", None)
        .await;
    assert_eq!(
        (
            b["meta"]["hasnext"].clone(),
            b["data"].as_array().unwrap().len()
        ),
        (json!(false), 2)
    );
    let (_, b) = api
        .root("GET", "/api/v1/products?product_name=bulk-1", None)
        .await;
    assert_eq!(b["meta"]["count"], 1, "fuzzy name matches bulk-10 only");
    let (_, b) = api
        .root("GET", "/api/v1/products?product_name=bulk", None)
        .await;
    assert_eq!(b["meta"]["count"], 11);
    assert_error(
        api.root("GET", "/api/v1/products?_limit=abc", None).await,
        400,
        "_limit must be a positive integer",
    );
    let (s, b) = api
        .root("GET", "/api/v1/products?_page=18446744073709551615", None)
        .await;
    assert_eq!(
        (
            s,
            b["data"].as_array().unwrap().len(),
            b["meta"]["hasnext"].clone()
        ),
        (200, 0, json!(false)),
        "a page past the end is empty"
    );

    let (s, b) = api.root("GET", "/api/v1/products/1", None).await;
    assert_eq!(s, 200);
    let p = &b["data"][0];
    assert_eq!(
        b["data"].as_array().unwrap().len(),
        1,
        "detail is a one-element array"
    );
    assert_eq!(
        (
            p["product_secret"].as_str().unwrap().len(),
            p["online_count"].clone(),
            p["offline_count"].clone()
        ),
        (16, json!(0), json!(0))
    );

    let (s, _) = api
        .root(
            "PUT",
            "/api/v1/products/1",
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(s, 200);
    let (_, b) = api.root("GET", "/api/v1/products/1", None).await;
    assert_eq!(
        (b["data"][0]["name"].clone(), b["data"][0]["type"].clone()),
        (json!("renamed"), json!(2)),
        "partial update"
    );

    assert_error(
        api.root("POST", "/api/v1/products", Some(json!({"name": "renamed"})))
            .await,
        400,
        "name already exists",
    );
    assert_error(
        api.root(
            "PUT",
            "/api/v1/products/2",
            Some(json!({"name": "renamed"})),
        )
        .await,
        400,
        "name already exists",
    );
    assert_error(
        api.root(
            "POST",
            "/api/v1/products",
            Some(json!({"name": "x", "type": 3})),
        )
        .await,
        400,
        "type must be 1",
    );
    assert_error(
        api.root(
            "POST",
            "/api/v1/products",
            Some(json!({"name": "x", "auth_type": "2"})),
        )
        .await,
        400,
        "not supported",
    );
    assert_error(
        api.root("POST", "/api/v1/products", Some(json!({"name": 5})))
            .await,
        400,
        "name: invalid type",
    );
    assert_error(
        api.root("POST", "/api/v1/products", Some(json!({"nam": "x"})))
            .await,
        400,
        "unknown field `nam`",
    );
    assert_error(
        api.raw("POST", "/api/v1/products", b"{\"name\":").await,
        400,
        "EOF while parsing",
    );
    assert_error(
        api.raw("POST", "/api/v1/products", b"[1,2]").await,
        400,
        "invalid type",
    );
    assert_error(
        api.root("GET", "/api/v1/products/999", None).await,
        404,
        "product 999 not found",
    );
    assert_error(
        api.root("GET", "/api/v1/products/abc", None).await,
        400,
        "product id must be a positive integer",
    );
    let big = vec![b' '; 2 * 1024 * 1024];
    let (s, b) = api.raw("POST", "/api/v1/products", &big).await;
    assert_eq!((s, b["code"].clone()), (413, json!(413)));

    let key = api.root("GET", "/api/v1/products/2", None).await.1["data"][0]["product_key"]
        .as_str()
        .unwrap()
        .to_string();
    api.device(&key, "keep").await;
    assert_error(
        api.root("DELETE", "/api/v1/products/2", None).await,
        400,
        "still has 1 devices",
    );
    let (s, _) = api.root("DELETE", "/api/v1/products/3", None).await;
    assert_eq!(s, 200);
    assert_error(
        api.root("DELETE", "/api/v1/products/3", None).await,
        404,
        "not found",
    );
}

#[tokio::test]
async fn devices_crud_filters_and_kicks() {
    let api = api().await;
    let (_, key, _) = api.product("p").await;
    let (_, other, _) = api.product("q").await;
    let (s, b) = api.root("POST", "/api/v1/devices", Some(json!({"name": "test", "product_key": key, "username": "test", "mqtt_client_id": "test"}))).await;
    assert_eq!(s, 200, "{b}");
    let pw = b["data"]["password"].as_str().unwrap();
    assert!(
        pw.len() == 32 && pw.chars().all(|c| c.is_ascii_hexdigit()),
        "generated password {pw}"
    );
    for (body, field) in [
        (
            json!({"name": "test", "product_key": key, "username": "x", "mqtt_client_id": "x"}),
            "name already exists",
        ),
        (
            json!({"name": "x", "product_key": key, "username": "test", "mqtt_client_id": "x"}),
            "username already exists",
        ),
        (
            json!({"name": "x", "product_key": key, "username": "x", "mqtt_client_id": "test"}),
            "mqtt_client_id already exists",
        ),
        (
            json!({"name": "x", "product_key": key, "username": "x"}),
            "missing field `mqtt_client_id`",
        ),
        (
            json!({"name": "", "product_key": key, "username": "x", "mqtt_client_id": "x"}),
            "name must be",
        ),
    ] {
        assert_error(
            api.root("POST", "/api/v1/devices", Some(body)).await,
            400,
            field,
        );
    }
    assert_error(
        api.root(
            "POST",
            "/api/v1/devices",
            Some(
                json!({"name": "x", "product_key": "nope", "username": "x", "mqtt_client_id": "x"}),
            ),
        )
        .await,
        404,
        "product_key",
    );
    api.device(&key, "a1").await;
    api.device(&other, "b1").await;

    let (_, b) = api
        .root("GET", &format!("/api/v1/devices?product_key={key}"), None)
        .await;
    assert_eq!(b["meta"]["count"], 2);
    assert_eq!(b["data"][0]["status"], 1, "inactive until it connects");
    assert_eq!(b["data"][0]["enable"], true);
    let (_, b) = api.root("GET", "/api/v1/devices?device_name=1", None).await;
    assert_eq!(b["meta"]["count"], 2, "fuzzy name");
    let (_, b) = api
        .root("GET", "/api/v1/devices?product_key=unknown", None)
        .await;
    assert_eq!(b["meta"]["count"], 0);
    assert_error(
        api.root("GET", "/api/v1/devices?status=7", None).await,
        400,
        "status must be",
    );
    assert_error(
        api.root("GET", "/api/v1/devices?_page=0", None).await,
        400,
        "_page",
    );

    let (s, b) = api.root("GET", "/api/v1/devices/1", None).await;
    assert_eq!(s, 200);
    let d = &b["data"][0];
    assert_eq!(
        (
            d["password"].clone(),
            d["shadow"].clone(),
            d["tags"].clone(),
            d["product_type"].clone()
        ),
        (json!(pw), json!({"status": 0}), json!([]), json!(1))
    );

    api.revoked();
    let (s, _) = api
        .root("PUT", "/api/v1/devices/1", Some(json!({"nickname": "n"})))
        .await;
    assert_eq!(s, 200);
    assert!(
        api.revoked().is_empty(),
        "a nickname change keeps the device connected"
    );
    let (s, _) = api
        .root("PUT", "/api/v1/devices/1", Some(json!({"enable": false})))
        .await;
    assert_eq!(s, 200);
    assert_eq!(api.revoked(), vec!["test".to_string()], "disabling kicks");
    let (_, b) = api.root("GET", "/api/v1/devices?status=0", None).await;
    assert_eq!(
        (b["meta"]["count"].clone(), b["data"][0]["enable"].clone()),
        (json!(1), json!(false))
    );
    assert_error(
        api.root(
            "PUT",
            "/api/v1/devices/1",
            Some(json!({"username": "u-a1"})),
        )
        .await,
        400,
        "username already exists",
    );
    assert_error(
        api.root("PUT", "/api/v1/devices/1", Some(json!({"enable": "maybe"})))
            .await,
        400,
        "enable",
    );
    assert_error(
        api.root("PUT", "/api/v1/devices/99", Some(json!({"nickname": "n"})))
            .await,
        404,
        "device 99 not found",
    );
    let (s, _) = api.root("DELETE", "/api/v1/devices/2", None).await;
    assert_eq!(s, 200);
    assert_eq!(api.revoked().last().unwrap(), "c-a1", "deleting kicks");
    assert_error(
        api.root("DELETE", "/api/v1/devices/2", None).await,
        404,
        "not found",
    );
}

#[tokio::test]
async fn dynamic_registration() {
    let api = api().await;
    let (_, key, secret) = api.product("dyn").await;
    let body = |sign: &str| json!({"product_key": key, "device_name": "sensor-9", "random": "r4nd", "sign": sign});
    let good = registration_sign(&secret, &key, "sensor-9", "r4nd");
    assert_error(
        api.call("POST", "/api/v1/devices/register", None, Some(body("00")))
            .await,
        401,
        "sign does not match",
    );
    let (s, b) = api
        .call("POST", "/api/v1/devices/register", None, Some(body(&good)))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["username"], "sensor-9");
    assert_eq!(b["data"]["mqtt_client_id"], format!("{key}.sensor-9"));
    assert_eq!(b["data"]["password"].as_str().unwrap().len(), 32);
    assert_error(
        api.call(
            "POST",
            "/api/v1/devices/register",
            None,
            Some(body(&good.to_uppercase())),
        )
        .await,
        400,
        "already registered",
    );

    let (s, _) = api
        .root(
            "PUT",
            "/api/v1/products/1",
            Some(json!({"dynamic_reg": "0"})),
        )
        .await;
    assert_eq!(s, 200);
    let other = registration_sign(&secret, &key, "sensor-10", "r");
    assert_error(
        api.call("POST", "/api/v1/devices/register", None, Some(json!({"product_key": key, "device_name": "sensor-10", "random": "r", "sign": other}))).await,
        400,
        "does not allow dynamic registration",
    );
    assert_error(
        api.call("POST", "/api/v1/devices/register", None, Some(json!({"product_key": "0000000000", "device_name": "x", "random": "r", "sign": "s"}))).await,
        404,
        "product_key",
    );
}

#[tokio::test]
async fn publish_and_proxy_subscribe() {
    let api = api().await;
    let (s, b) = api.root("POST", "/api/v1/mqtt/publish", Some(json!({"topic": "test/topic", "payload": "Hello World", "qos": 1, "retain": false, "clientid": "root"}))).await;
    assert_eq!(
        (s, b["code"].clone(), b["data"]["matched"].clone()),
        (200, json!(0), json!(1))
    );
    let (s, _) = api.root("POST", "/api/v1/mqtt/publish", Some(json!({"topics": "a,b, c", "payload": "aGk=", "encoding": "base64", "properties": {"user_properties": {"k": "v"}, "message_expiry_interval": 30}}))).await;
    assert_eq!(s, 200);
    {
        let published = api.node.published.lock().unwrap();
        let topics: Vec<&str> = published.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(topics, vec!["test/topic", "a", "b", "c"]);
        assert_eq!(
            (published[0].qos, published[0].client_id.as_deref()),
            (1, Some("root"))
        );
        assert_eq!(published[1].payload, b"hi");
        assert_eq!(published[1].properties.user_properties["k"], "v");
        assert_eq!(published[1].properties.message_expiry_interval, Some(30));
    }
    assert_error(
        api.root(
            "POST",
            "/api/v1/mqtt/publish",
            Some(json!({"topic": "t", "payload": "x", "qos": 3})),
        )
        .await,
        400,
        "qos must be 0, 1 or 2",
    );
    assert_error(
        api.root(
            "POST",
            "/api/v1/mqtt/publish",
            Some(json!({"topic": "t", "payload": "%%", "encoding": "base64"})),
        )
        .await,
        400,
        "not valid base64",
    );
    assert_error(
        api.root(
            "POST",
            "/api/v1/mqtt/publish",
            Some(json!({"payload": "x"})),
        )
        .await,
        400,
        "topic or topics is required",
    );
    assert_error(
        api.root(
            "POST",
            "/api/v1/mqtt/publish",
            Some(json!({"topic": "a/#", "payload": "x"})),
        )
        .await,
        400,
        "wildcards",
    );
    assert_error(
        api.root("POST", "/api/v1/mqtt/publish", Some(json!({"topic": "t"})))
            .await,
        400,
        "missing field `payload`",
    );
    let vera = {
        api.root(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "vera", "password": "secret1"})),
        )
        .await;
        basic("vera", "secret1")
    };
    assert_error(
        api.call(
            "POST",
            "/api/v1/mqtt/publish",
            Some(&vera),
            Some(json!({"topic": "t", "payload": "x"})),
        )
        .await,
        403,
        "viewer",
    );

    assert_error(
        api.root(
            "POST",
            "/api/v1/mqtt/subscribe",
            Some(json!({"topic": "t", "clientid": "ghost"})),
        )
        .await,
        404,
        "has no session",
    );
    api.node.sessions.lock().unwrap().insert("root".into());
    let (s, _) = api
        .root(
            "POST",
            "/api/v1/mqtt/subscribe",
            Some(json!({"topics": "topic1,topic2,topic3", "qos": 1, "clientid": "root"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(api.node.subscribed.lock().unwrap().len(), 3);
    let (s, _) = api
        .root(
            "POST",
            "/api/v1/mqtt/unsubscribe",
            Some(json!({"topic": "topic1", "qos": 1, "clientid": "root"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_error(
        api.root(
            "POST",
            "/api/v1/mqtt/unsubscribe",
            Some(json!({"topic": "topic1", "clientid": "root"})),
        )
        .await,
        404,
        "no such subscription",
    );
}

#[tokio::test]
async fn batches_answer_per_item() {
    let api = api().await;
    api.node.sessions.lock().unwrap().insert("root1".into());
    let (s, b) = api
        .root(
            "POST",
            "/api/v1/mqtt/publish_batch",
            Some(json!([
                {"topic": "topic1", "payload": "Hello World1", "qos": 1, "retain": false, "clientid": "root"},
                {"topic": "bad/#", "payload": "x"},
                {"topic": "topic2", "payload": "x", "qos": 9},
                {"topic": "topic3"},
                {"topic": "topic4", "payload": "Hello World2", "qos": 1, "retain": false, "clientid": "root2"}
            ])),
        )
        .await;
    assert_eq!((s, b["code"].clone()), (200, json!(0)));
    let codes: Vec<(String, i64)> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["topic"].as_str().unwrap().into(),
                r["code"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            ("topic1".into(), 0),
            ("bad/#".into(), 400),
            ("topic2".into(), 400),
            ("topic3".into(), 400),
            ("topic4".into(), 0)
        ]
    );
    let msg = b["data"][3]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("[3] ") && msg.contains("missing field `payload`"),
        "{msg}"
    );
    assert_eq!(
        api.node.published.lock().unwrap().len(),
        2,
        "the good items went through"
    );

    let (_, b) = api
        .root(
            "POST",
            "/api/v1/mqtt/subscribe_batch",
            Some(json!([{"topic": "topic1", "qos": 1, "clientid": "root1"}, {"topic": "topic2", "qos": 1, "clientid": "root2"}, {"topic": "topic3", "qos": 1, "clientid": "root1"}])),
        )
        .await;
    let codes: Vec<i64> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![0, 404, 0]);
    let (_, b) = api
        .root("POST", "/api/v1/mqtt/unsubscribe_batch", Some(json!([{"topic": "topic1", "clientid": "root1"}, {"topic": "topic2", "clientid": "root1"}])))
        .await;
    let codes: Vec<i64> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![0, 404]);
    assert_error(
        api.root(
            "POST",
            "/api/v1/mqtt/publish_batch",
            Some(json!({"topic": "x"})),
        )
        .await,
        400,
        "invalid type",
    );
}

/// Every operation the OpenAPI document lists is served by the router, and every route the
/// router serves is documented.
#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let api = api().await;
    let (s, doc) = api.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    for (method, path) in &documented {
        let concrete = path.replace("{id}", "1").replace("{username}", "root");
        let (status, body) = api
            .call(method, &concrete, Some(ROOT), Some(json!({})))
            .await;
        let msg = body["message"].as_str().unwrap_or_default();
        assert!(
            !(status == 404 && msg.starts_with("no such endpoint")),
            "{method} {path} is documented but not routed"
        );
    }
    // The router's surface, written out once: a route added without documentation fails here.
    let mut routed: Vec<(String, String)> = [
        ("GET", "/api/v1/health"),
        ("GET", "/api/v1/ready"),
        ("GET", "/api/v1/openapi.json"),
        ("POST", "/api/v1/auth"),
        ("GET", "/api/v1/users"),
        ("POST", "/api/v1/users"),
        ("PUT", "/api/v1/users/{username}"),
        ("DELETE", "/api/v1/users/{username}"),
        ("GET", "/api/v1/products"),
        ("POST", "/api/v1/products"),
        ("GET", "/api/v1/products/{id}"),
        ("PUT", "/api/v1/products/{id}"),
        ("DELETE", "/api/v1/products/{id}"),
        ("GET", "/api/v1/devices"),
        ("POST", "/api/v1/devices"),
        ("GET", "/api/v1/devices/{id}"),
        ("PUT", "/api/v1/devices/{id}"),
        ("DELETE", "/api/v1/devices/{id}"),
        ("POST", "/api/v1/devices/register"),
        ("POST", "/api/v1/mqtt/publish"),
        ("POST", "/api/v1/mqtt/subscribe"),
        ("POST", "/api/v1/mqtt/unsubscribe"),
        ("POST", "/api/v1/mqtt/publish_batch"),
        ("POST", "/api/v1/mqtt/subscribe_batch"),
        ("POST", "/api/v1/mqtt/unsubscribe_batch"),
        ("GET", "/api/v1/nodes"),
        ("DELETE", "/api/v1/nodes/{id}"),
        ("GET", "/api/v1/clients"),
        ("GET", "/api/v1/clients/{clientid}"),
        ("DELETE", "/api/v1/clients/{clientid}"),
        ("GET", "/api/v1/subscriptions"),
        ("GET", "/api/v1/routes"),
        ("GET", "/api/v1/stats"),
        ("GET", "/api/v1/metrics"),
        ("GET", "/api/v1/rules"),
        ("POST", "/api/v1/rules"),
        ("GET", "/api/v1/rules/{id}"),
        ("PUT", "/api/v1/rules/{id}"),
        ("DELETE", "/api/v1/rules/{id}"),
        ("POST", "/api/v1/rules/test"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    routed.sort();
    assert_eq!(documented, routed);
}
