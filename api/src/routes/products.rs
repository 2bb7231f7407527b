//! Products: `POST/GET /api/v1/products`, `GET/PUT/DELETE /api/v1/products/{id}`.

use realmq_raft_store::model::{Product, ProductPatch};
use realmq_raft_store::read::ProductQuery;
use realmq_raft_store::{Command, Created, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;

use crate::auth::{Caller, authenticate, authenticate_read};
use crate::context::ApiContext;
use crate::error::ApiError;
use crate::json::{lenient_u8, parse};
use crate::query::{Query, id, paging, text};
use crate::response::{ApiResult, Reply, data, ok, page};
use crate::time::format_ms;
use crate::write::{submit, submit_or_refused};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewProduct {
    /// Unique product name.
    name: String,
    /// 1 directly connected devices (default), 2 gateways; `"1"` or `1`.
    #[serde(default, rename = "type", deserialize_with = "lenient_u8")]
    #[schema(value_type = Option<String>)]
    product_type: Option<u8>,
    /// 1 allows dynamic registration (default), 0 does not.
    #[serde(default, deserialize_with = "lenient_u8")]
    #[schema(value_type = Option<String>)]
    dynamic_reg: Option<u8>,
    /// 1 secret-key authentication (default); 2, certificates, is not supported.
    #[serde(default, deserialize_with = "lenient_u8")]
    #[schema(value_type = Option<String>)]
    auth_type: Option<u8>,
    description: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProductUpdate {
    name: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "lenient_u8")]
    #[schema(value_type = Option<String>)]
    product_type: Option<u8>,
    #[serde(default, deserialize_with = "lenient_u8")]
    #[schema(value_type = Option<String>)]
    dynamic_reg: Option<u8>,
    #[serde(default, deserialize_with = "lenient_u8")]
    #[schema(value_type = Option<String>)]
    auth_type: Option<u8>,
    description: Option<String>,
}

/// A product as the list shows it.
#[derive(Serialize)]
struct ProductView {
    id: u64,
    name: String,
    product_key: String,
    #[serde(rename = "type")]
    product_type: u8,
    auth_type: u8,
    status: u8,
    dynamic_reg: u8,
    device_count: u64,
    description: Option<String>,
    create_at: String,
    model_status: u8,
}

fn view(ctx: &ApiContext, p: Product) -> Result<ProductView, ApiError> {
    Ok(ProductView {
        device_count: ctx.registry.device_counts(p.id)?.total(),
        id: p.id,
        name: p.name,
        product_key: p.product_key,
        product_type: p.product_type,
        auth_type: p.auth_type,
        status: p.status,
        dynamic_reg: p.dynamic_reg,
        description: p.description,
        create_at: format_ms(p.created_at),
        model_status: 0,
    })
}

pub(crate) fn routes(ctx: ApiContext) -> BoxedFilter<(Reply,)> {
    collection!(post ctx, "products", create)
        .or(collection!(get ctx, "products", list))
        .unify()
        .or(member!(get ctx, "products", get))
        .unify()
        .or(member!(put_body ctx, "products", update))
        .unify()
        .or(member!(delete ctx, "products", delete))
        .unify()
        .boxed()
}

fn check_fields(
    name: Option<&str>,
    product_type: Option<u8>,
    dynamic_reg: Option<u8>,
    auth_type: Option<u8>,
) -> Result<(), ApiError> {
    if name.is_some_and(|n| n.trim().is_empty() || n.len() > 64) {
        return Err(ApiError::BadRequest(
            "name must be 1 to 64 characters".into(),
        ));
    }
    if product_type.is_some_and(|t| !(1..=2).contains(&t)) {
        return Err(ApiError::BadRequest(
            "type must be 1 (direct device) or 2 (gateway)".into(),
        ));
    }
    if dynamic_reg.is_some_and(|d| d > 1) {
        return Err(ApiError::BadRequest("dynamic_reg must be 0 or 1".into()));
    }
    match auth_type {
        None | Some(1) => Ok(()),
        Some(2) => Err(ApiError::BadRequest(
            "auth_type 2 (certificates) is not supported".into(),
        )),
        Some(_) => Err(ApiError::BadRequest(
            "auth_type must be 1 (secret key)".into(),
        )),
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

#[utoipa::path(post, path = "/api/v1/products", tag = "products", request_body = NewProduct, security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "`data.product_key` and `data.secret`", body = crate::response::Envelope),
              (status = 400, description = "Invalid field or duplicate name", body = crate::error::ErrorBody)))]
pub(crate) async fn create(ctx: &ApiContext, auth: &Caller, body: &[u8]) -> ApiResult {
    authenticate(ctx, auth).await?.require_admin()?;
    let req: NewProduct = parse(body)?;
    ctx.within_limits(crate::json::check_text_len(
        "description",
        req.description.as_deref(),
        ctx.config.max_text,
    ))?;
    check_fields(
        Some(&req.name),
        req.product_type,
        req.dynamic_reg,
        req.auth_type,
    )?;
    // A fresh random key collides with an existing one about never; retry rather than fail.
    for _ in 0..3 {
        let product = Product {
            id: 0,
            name: req.name.trim().to_string(),
            product_key: random_hex(5),
            secret: random_hex(8),
            product_type: req.product_type.unwrap_or(1),
            dynamic_reg: req.dynamic_reg.unwrap_or(1),
            auth_type: req.auth_type.unwrap_or(1),
            status: 1,
            description: req.description.clone(),
            created_at: chrono::Utc::now().timestamp_millis(),
        };
        let (key, secret) = (product.product_key.clone(), product.secret.clone());
        match submit_or_refused(ctx, Command::CreateProduct { product }).await? {
            Ok(Created { id }) => {
                return data(json!({"id": id, "product_key": key, "secret": secret}));
            }
            Err(Rejection::AlreadyExists { field }) if field == "product_key" => continue,
            Err(r) => return Err(r.into()),
        }
    }
    Err(ApiError::Internal(
        "could not allocate a unique product_key".into(),
    ))
}

#[utoipa::path(get, path = "/api/v1/products", tag = "products", security(("basic" = []), ("bearer" = [])),
    params(("_page" = Option<u32>, Query, description = "Page, from 1"), ("_limit" = Option<u32>, Query, description = "Page size (default 10)"),
           ("product_name" = Option<String>, Query, description = "Substring of the name")),
    responses((status = 200, description = "A page of products with `meta`", body = crate::response::Envelope)))]
pub(crate) async fn list(ctx: &ApiContext, auth: &Caller, q: &Query) -> ApiResult {
    authenticate_read(ctx, auth).await?;
    let paging = paging(q)?;
    let found = ctx.registry.products(&ProductQuery {
        offset: paging.offset(),
        limit: paging.limit,
        name_like: text(q, "product_name").map(String::from),
    })?;
    let items = found
        .items
        .into_iter()
        .map(|p| view(ctx, p))
        .collect::<Result<Vec<_>, _>>()?;
    page(items, paging.page, paging.limit, found.total)
}

async fn load(ctx: &ApiContext, raw: &str) -> Result<Product, ApiError> {
    let id = id(raw, "product")?;
    ctx.lookup(|r| r.product(id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("product {id} not found")))
}

#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "products", params(("id" = u64, Path)), security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "`data` is a one-element array", body = crate::response::Envelope),
              (status = 404, description = "No such product", body = crate::error::ErrorBody)))]
pub(crate) async fn get(ctx: &ApiContext, auth: &Caller, raw: &str) -> ApiResult {
    let who = authenticate_read(ctx, auth).await?;
    let p = load(ctx, raw).await?;
    let counts = ctx.registry.device_counts(p.id)?;
    let secret = who.reveal(&p.secret);
    let mut v =
        serde_json::to_value(view(ctx, p)?).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["product_secret"] = json!(secret);
    v["online_count"] = json!(counts.online());
    v["offline_count"] = json!(counts.offline());
    data(vec![v])
}

#[utoipa::path(put, path = "/api/v1/products/{id}", tag = "products", request_body = ProductUpdate, params(("id" = u64, Path)),
    security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Updated", body = crate::response::Envelope),
              (status = 404, description = "No such product", body = crate::error::ErrorBody)))]
pub(crate) async fn update(ctx: &ApiContext, auth: &Caller, raw: &str, body: &[u8]) -> ApiResult {
    authenticate(ctx, auth).await?.require_admin()?;
    let id = load(ctx, raw).await?.id;
    let req: ProductUpdate = parse(body)?;
    ctx.within_limits(crate::json::check_text_len(
        "description",
        req.description.as_deref(),
        ctx.config.max_text,
    ))?;
    check_fields(
        req.name.as_deref(),
        req.product_type,
        req.dynamic_reg,
        req.auth_type,
    )?;
    let patch = ProductPatch {
        name: req.name.map(|n| n.trim().to_string()),
        product_type: req.product_type,
        dynamic_reg: req.dynamic_reg,
        auth_type: req.auth_type,
        description: req.description.map(Some),
    };
    submit::<()>(ctx, Command::UpdateProduct { id, patch }).await?;
    ok()
}

#[utoipa::path(delete, path = "/api/v1/products/{id}", tag = "products", params(("id" = u64, Path)), security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Deleted", body = crate::response::Envelope),
              (status = 400, description = "The product still has devices", body = crate::error::ErrorBody),
              (status = 404, description = "No such product", body = crate::error::ErrorBody)))]
pub(crate) async fn delete(ctx: &ApiContext, auth: &Caller, raw: &str) -> ApiResult {
    authenticate(ctx, auth).await?.require_admin()?;
    let id = load(ctx, raw).await?.id;
    submit::<()>(ctx, Command::DeleteProduct { id }).await?;
    ok()
}
