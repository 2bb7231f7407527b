//! Devices: `POST/GET /api/v1/devices`, `GET/PUT/DELETE /api/v1/devices/{id}`, and dynamic
//! registration `POST /api/v1/devices/register` (signed with the product secret, no credentials).

use bytes::Bytes;
use hmac::{Hmac, Mac};
use realmq_raft_store::model::{ConnState, Device, DevicePatch, Product};
use realmq_raft_store::read::DeviceQuery;
use realmq_raft_store::{Command, Created, Registered};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use warp::Filter;
use warp::filters::BoxedFilter;

use super::{body, with_ctx};
use crate::auth::{Caller, authenticate, authenticate_read};
use crate::context::ApiContext;
use crate::error::ApiError;
use crate::json::{lenient_bool, parse};
use crate::query::{Query, id, paging, text};
use crate::response::{ApiResult, Reply, data, into_reply, ok, page};
use crate::time::{format_duration_ms, format_ms, format_opt};
use crate::write::submit;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewDevice {
    /// Unique device name.
    name: String,
    product_key: String,
    /// MQTT user name; unique.
    username: String,
    /// MQTT client id; unique.
    mqtt_client_id: String,
    nickname: Option<String>,
    /// Generated (32 hex characters) when absent.
    password: Option<String>,
    device_type: Option<String>,
    description: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceUpdate {
    name: Option<String>,
    product_key: Option<String>,
    username: Option<String>,
    mqtt_client_id: Option<String>,
    nickname: Option<String>,
    password: Option<String>,
    device_type: Option<String>,
    description: Option<String>,
    /// `false` (or 0) disables the device and disconnects it at once.
    #[serde(default, deserialize_with = "lenient_bool")]
    #[schema(value_type = Option<bool>)]
    enable: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Registration {
    product_key: String,
    device_name: String,
    random: String,
    /// Hex HMAC-SHA256 with the product secret over `device_name{dn}product_key{pk}random{r}`.
    sign: String,
}

/// A device as the list shows it; the field set follows the contract's example.
#[derive(Serialize)]
struct DeviceView {
    id: u64,
    name: String,
    product_key: String,
    username: String,
    display_username: String,
    mqtt_client_id: String,
    nickname: String,
    status: u8,
    enable: bool,
    ip: Option<String>,
    connected_at: String,
    disconnected_at: String,
    online_at: String,
    offline_at: String,
    description: Option<String>,
    create_at: String,
    stats: bool,
    log_trace: bool,
}

fn view(d: &Device, product_key: &str, now: i64) -> DeviceView {
    // online_at: how long the current (or last) session was up; offline_at: how long since it ended.
    let (online_at, offline_at) = match (d.conn, d.connected_at, d.disconnected_at) {
        (ConnState::Online, Some(c), _) => (format_duration_ms(now - c), String::new()),
        (ConnState::Offline, Some(c), Some(g)) => {
            (format_duration_ms(g - c), format_duration_ms(now - g))
        }
        (ConnState::Offline, None, Some(g)) => (String::new(), format_duration_ms(now - g)),
        _ => (String::new(), String::new()),
    };
    DeviceView {
        id: d.id,
        name: d.name.clone(),
        product_key: product_key.to_string(),
        username: d.username.clone(),
        display_username: d.username.clone(),
        mqtt_client_id: d.mqtt_client_id.clone(),
        nickname: d.nickname.clone(),
        status: d.status(),
        enable: d.enable,
        ip: d.ip.clone(),
        connected_at: format_opt(d.connected_at),
        disconnected_at: format_opt(d.disconnected_at),
        online_at,
        offline_at,
        description: d.description.clone(),
        create_at: format_ms(d.created_at),
        stats: false,
        log_trace: false,
    }
}

pub(crate) fn routes(ctx: ApiContext) -> BoxedFilter<(Reply,)> {
    // Registration is signed with the product secret instead of user credentials.
    let register = warp::path!("api" / "v1" / "devices" / "register")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(body(ctx.config.max_body))
        .then(|ctx: ApiContext, b: Bytes| async move { into_reply(register(&ctx, &b).await) });
    register
        .or(collection!(post ctx, "devices", create))
        .unify()
        .or(collection!(get ctx, "devices", list))
        .unify()
        .or(member!(get ctx, "devices", get))
        .unify()
        .or(member!(put_body ctx, "devices", update))
        .unify()
        .or(member!(delete ctx, "devices", delete))
        .unify()
        .boxed()
}

async fn product_by_key(ctx: &ApiContext, key: &str) -> Result<Product, ApiError> {
    ctx.lookup(|r| r.product_by_key(key))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("product_key {key:?} not found")))
}

/// The names that end up in topics and ACL placeholders (`%c`, `%u`): no MQTT wildcards, or a
/// device named `#` would widen every rule written for "its own" topics.
fn check_names(names: [(&str, Option<&str>); 3]) -> Result<(), ApiError> {
    for (field, v) in names {
        if let Some(v) = v {
            crate::json::check_identifier(field, v, 128)?;
        }
    }
    Ok(())
}

fn check_text(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(v) if v.is_empty() || v.len() > 128 || v.contains('\0') => Err(ApiError::BadRequest(
            format!("{field} must be 1 to 128 characters"),
        )),
        _ => Ok(()),
    }
}

/// The device's free-text fields, bounded by `[api] max_text`.
fn free_text(
    ctx: &ApiContext,
    nickname: &Option<String>,
    device_type: &Option<String>,
    description: &Option<String>,
) -> Result<(), ApiError> {
    for (field, v) in [
        ("nickname", nickname),
        ("device_type", device_type),
        ("description", description),
    ] {
        ctx.within_limits(crate::json::check_text_len(
            field,
            v.as_deref(),
            ctx.config.max_text,
        ))?;
    }
    Ok(())
}

fn random_password() -> String {
    let mut buf = [0u8; 16];
    rand::fill(&mut buf);
    hex::encode(buf)
}

#[utoipa::path(post, path = "/api/v1/devices", tag = "devices", request_body = NewDevice, security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Created; `data` holds the id and credentials", body = crate::response::Envelope),
              (status = 400, description = "Invalid field or a unique field already in use", body = crate::error::ErrorBody),
              (status = 404, description = "Unknown product_key", body = crate::error::ErrorBody)))]
pub(crate) async fn create(ctx: &ApiContext, auth: &Caller, body: &[u8]) -> ApiResult {
    authenticate(ctx, auth).await?.require_admin()?;
    let req: NewDevice = parse(body)?;
    check_names([
        ("name", Some(req.name.as_str())),
        ("username", Some(req.username.as_str())),
        ("mqtt_client_id", Some(req.mqtt_client_id.as_str())),
    ])?;
    check_text("password", req.password.as_deref())?;
    free_text(ctx, &req.nickname, &req.device_type, &req.description)?;
    let product = product_by_key(ctx, &req.product_key).await?;
    let device = Device {
        id: 0,
        product_id: product.id,
        name: req.name,
        username: req.username,
        mqtt_client_id: req.mqtt_client_id,
        password: req.password.unwrap_or_else(random_password),
        nickname: req.nickname.unwrap_or_default(),
        device_type: req.device_type,
        description: req.description,
        enable: true,
        conn: ConnState::Inactive,
        ip: None,
        connected_at: None,
        disconnected_at: None,
        credentials_issued: false,
        created_at: chrono::Utc::now().timestamp_millis(),
    };
    let (username, client_id, password) = (
        device.username.clone(),
        device.mqtt_client_id.clone(),
        device.password.clone(),
    );
    let Created { id } = submit(ctx, Command::CreateDevice { device }).await?;
    data(json!({
        "id": id, "username": username, "mqtt_client_id": client_id, "password": password,
    }))
}

#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", security(("basic" = []), ("bearer" = [])),
    params(("_page" = Option<u32>, Query), ("_limit" = Option<u32>, Query), ("product_key" = Option<String>, Query),
           ("device_name" = Option<String>, Query, description = "Substring of the name"),
           ("status" = Option<String>, Query, description = "0 disabled, 1 inactive, 2 offline, 3 online")),
    responses((status = 200, description = "A page of devices with `meta`", body = crate::response::Envelope)))]
pub(crate) async fn list(ctx: &ApiContext, auth: &Caller, q: &Query) -> ApiResult {
    authenticate_read(ctx, auth).await?;
    let paging = paging(q)?;
    let status = match text(q, "status") {
        None => None,
        Some(s) => Some(s.parse::<u8>().ok().filter(|s| *s <= 3).ok_or_else(|| {
            ApiError::BadRequest(format!("status must be 0, 1, 2 or 3, got {s:?}"))
        })?),
    };
    let product = match text(q, "product_key") {
        None => None,
        Some(key) => match ctx.registry.product_by_key(key)? {
            Some(p) => Some(p),
            // An unknown product has no devices.
            None => return page(Vec::<DeviceView>::new(), paging.page, paging.limit, 0),
        },
    };
    let found = ctx.registry.devices(&DeviceQuery {
        offset: paging.offset(),
        limit: paging.limit,
        product_id: product.as_ref().map(|p| p.id),
        status,
        name_like: text(q, "device_name").map(String::from),
    })?;
    let now = chrono::Utc::now().timestamp_millis();
    // A page usually spans one product: look each product's key up once.
    let mut keys = std::collections::HashMap::new();
    let mut items = Vec::with_capacity(found.items.len());
    for d in &found.items {
        let key = match keys.entry(d.product_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                ctx.registry
                    .product(d.product_id)?
                    .map(|p| p.product_key)
                    .unwrap_or_default(),
            ),
        };
        items.push(view(d, key, now));
    }
    page(items, paging.page, paging.limit, found.total)
}

async fn load(ctx: &ApiContext, raw: &str) -> Result<Device, ApiError> {
    let id = id(raw, "device")?;
    ctx.lookup(|r| r.device(id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("device {id} not found")))
}

#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = u64, Path)), security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "`data` is a one-element array with password, shadow, tags and product_type", body = crate::response::Envelope),
              (status = 404, description = "No such device", body = crate::error::ErrorBody)))]
pub(crate) async fn get(ctx: &ApiContext, auth: &Caller, raw: &str) -> ApiResult {
    let who = authenticate_read(ctx, auth).await?;
    let d = load(ctx, raw).await?;
    let product = ctx.registry.product(d.product_id)?;
    let key = product
        .as_ref()
        .map(|p| p.product_key.as_str())
        .unwrap_or_default();
    let mut v = serde_json::to_value(view(&d, key, chrono::Utc::now().timestamp_millis()))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    v["password"] = json!(who.reveal(&d.password));
    v["shadow"] = json!({"status": 0});
    v["tags"] = json!([]);
    v["product_type"] = json!(product.map_or(1, |p| p.product_type));
    v["device_type"] = json!(d.device_type);
    data(vec![v])
}

#[utoipa::path(put, path = "/api/v1/devices/{id}", tag = "devices", request_body = DeviceUpdate, params(("id" = u64, Path)),
    security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Updated", body = crate::response::Envelope),
              (status = 400, description = "Invalid field or a unique field already in use", body = crate::error::ErrorBody),
              (status = 404, description = "No such device or product", body = crate::error::ErrorBody)))]
pub(crate) async fn update(ctx: &ApiContext, auth: &Caller, raw: &str, body: &[u8]) -> ApiResult {
    authenticate(ctx, auth).await?.require_admin()?;
    let old = load(ctx, raw).await?;
    let req: DeviceUpdate = parse(body)?;
    check_names([
        ("name", req.name.as_deref()),
        ("username", req.username.as_deref()),
        ("mqtt_client_id", req.mqtt_client_id.as_deref()),
    ])?;
    check_text("password", req.password.as_deref())?;
    free_text(ctx, &req.nickname, &req.device_type, &req.description)?;
    let product_id = match &req.product_key {
        Some(key) => Some(product_by_key(ctx, key).await?.id),
        None => None,
    };
    let patch = DevicePatch {
        name: req.name,
        product_id,
        username: req.username,
        mqtt_client_id: req.mqtt_client_id,
        password: req.password,
        nickname: req.nickname,
        device_type: req.device_type.map(Some),
        description: req.description.map(Some),
        enable: req.enable,
    };
    // Revoked or changed credentials end the device's connection on whichever node holds it:
    // the state machine announces it to every node (`Applied::CredentialsRevoked`).
    submit::<()>(ctx, Command::UpdateDevice { id: old.id, patch }).await?;
    ok()
}

#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = u64, Path)), security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Deleted; a connected device is disconnected", body = crate::response::Envelope),
              (status = 404, description = "No such device", body = crate::error::ErrorBody)))]
pub(crate) async fn delete(ctx: &ApiContext, auth: &Caller, raw: &str) -> ApiResult {
    authenticate(ctx, auth).await?.require_admin()?;
    let old = load(ctx, raw).await?;
    submit::<()>(ctx, Command::DeleteDevice { id: old.id }).await?;
    ok()
}

/// `device_name{dn}product_key{pk}random{r}` signed with the product secret, as hex.
pub fn registration_sign(
    secret: &str,
    product_key: &str,
    device_name: &str,
    random: &str,
) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(
        format!("device_name{device_name}product_key{product_key}random{random}").as_bytes(),
    );
    hex::encode(mac.finalize().into_bytes())
}

#[utoipa::path(post, path = "/api/v1/devices/register", tag = "devices", request_body = Registration,
    responses((status = 200, description = "`data.username`, `data.mqtt_client_id`, `data.password`", body = crate::response::Envelope),
              (status = 400, description = "Registration not allowed, or already registered", body = crate::error::ErrorBody),
              (status = 401, description = "The sign does not match", body = crate::error::ErrorBody),
              (status = 404, description = "Unknown product_key", body = crate::error::ErrorBody)))]
pub(crate) async fn register(ctx: &ApiContext, body: &[u8]) -> ApiResult {
    let req: Registration = parse(body)?;
    crate::json::check_identifier("device_name", &req.device_name, 128)?;
    check_text("random", Some(&req.random))?;
    let product = product_by_key(ctx, &req.product_key).await?;
    if product.dynamic_reg != 1 {
        return Err(ApiError::BadRequest(format!(
            "product {:?} does not allow dynamic registration",
            product.product_key
        )));
    }
    let want = registration_sign(
        &product.secret,
        &product.product_key,
        &req.device_name,
        &req.random,
    );
    if !bool::from(
        want.as_bytes()
            .ct_eq(req.sign.to_ascii_lowercase().as_bytes()),
    ) {
        return Err(ApiError::Unauthorized("sign does not match".into()));
    }
    let device = Device {
        id: 0,
        product_id: product.id,
        name: req.device_name.clone(),
        username: req.device_name.clone(),
        mqtt_client_id: format!("{}.{}", product.product_key, req.device_name),
        password: random_password(),
        nickname: String::new(),
        device_type: None,
        description: None,
        enable: true,
        conn: ConnState::Inactive,
        ip: None,
        connected_at: None,
        disconnected_at: None,
        credentials_issued: true,
        created_at: chrono::Utc::now().timestamp_millis(),
    };
    let Registered { device, .. } = submit(ctx, Command::RegisterDevice { device }).await?;
    data(json!({
        "username": device.username,
        "mqtt_client_id": device.mqtt_client_id,
        "password": device.password,
    }))
}
