//! User management: `GET/POST /api/v1/users`, `PUT/DELETE /api/v1/users/{username}`. Roles are
//! `administrator` and `viewer`; only administrators change anything, and the last
//! administrator can be neither deleted nor demoted (checked when the change is applied, so
//! concurrent requests cannot both pass).

use realmq_raft_store::Command;
use realmq_raft_store::model::{Role, User, UserPatch};
use serde::{Deserialize, Serialize};
use warp::Filter;
use warp::filters::BoxedFilter;

use crate::auth::{Caller, Principal, authenticate_read, hash_password};
use crate::context::ApiContext;
use crate::error::ApiError;
use crate::json::parse;
use crate::response::{ApiResult, Reply, data, ok};
use crate::time::format_ms;
use crate::write::submit;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    username: String,
    password: String,
    /// `administrator` or `viewer` (default).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    role: Option<Role>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserUpdate {
    password: Option<String>,
    #[schema(value_type = Option<String>)]
    role: Option<Role>,
}

#[derive(Serialize)]
struct UserView {
    username: String,
    role: &'static str,
    create_at: String,
}

fn view(u: &User) -> UserView {
    UserView {
        username: u.username.clone(),
        role: u.role.as_str(),
        create_at: format_ms(u.created_at),
    }
}

pub(crate) fn routes(ctx: ApiContext) -> BoxedFilter<(Reply,)> {
    collection!(get ctx, "users", list)
        .or(collection!(post ctx, "users", create))
        .unify()
        .or(member!(put_body ctx, "users", update))
        .unify()
        .or(member!(delete ctx, "users", delete))
        .unify()
        .boxed()
}

/// User changes are rare and check the other users (the last administrator is kept): they read
/// after the barrier.
async fn admin(ctx: &ApiContext, auth: &Caller) -> Result<Principal, ApiError> {
    let who = authenticate_read(ctx, auth).await?;
    who.require_admin()?;
    Ok(who)
}

fn validate_username(name: &str) -> Result<(), ApiError> {
    if name.contains(':') {
        // Basic credentials split at the first ':'.
        return Err(ApiError::BadRequest("username must not contain ':'".into()));
    }
    crate::json::check_identifier("username", name, 64)
}

fn validate_password(pw: &str) -> Result<(), ApiError> {
    if pw.len() < 6 || pw.len() > 128 {
        return Err(ApiError::BadRequest(
            "password must be 6 to 128 characters".into(),
        ));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Every user", body = crate::response::Envelope)))]
pub(crate) async fn list(
    ctx: &ApiContext,
    auth: &Caller,
    _query: &crate::query::Query,
) -> ApiResult {
    authenticate_read(ctx, auth).await?;
    data(ctx.registry.users()?.iter().map(view).collect::<Vec<_>>())
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser, security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Created", body = crate::response::Envelope),
              (status = 400, description = "Invalid or duplicate user name", body = crate::error::ErrorBody)))]
pub(crate) async fn create(ctx: &ApiContext, auth: &Caller, body: &[u8]) -> ApiResult {
    admin(ctx, auth).await?;
    let req: NewUser = parse(body)?;
    validate_username(&req.username)?;
    validate_password(&req.password)?;
    let user = User {
        username: req.username,
        password_hash: hash_password(ctx, &req.password).await?,
        role: req.role.unwrap_or(Role::Viewer),
        created_at: chrono::Utc::now().timestamp_millis(),
    };
    submit::<()>(ctx, Command::CreateUser { user }).await?;
    ok()
}

#[utoipa::path(put, path = "/api/v1/users/{username}", tag = "users", request_body = UserUpdate,
    params(("username" = String, Path)), security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Updated", body = crate::response::Envelope),
              (status = 404, description = "No such user", body = crate::error::ErrorBody)))]
pub(crate) async fn update(
    ctx: &ApiContext,
    auth: &Caller,
    username: &str,
    body: &[u8],
) -> ApiResult {
    admin(ctx, auth).await?;
    let req: UserUpdate = parse(body)?;
    if let Some(pw) = &req.password {
        validate_password(pw)?;
    }
    let password_hash = match &req.password {
        Some(pw) => Some(hash_password(ctx, pw).await?),
        None => None,
    };
    let patch = UserPatch {
        password_hash,
        role: req.role,
    };
    submit::<()>(
        ctx,
        Command::UpdateUser {
            username: username.to_string(),
            patch,
        },
    )
    .await?;
    ok()
}

#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path)), security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Deleted", body = crate::response::Envelope),
              (status = 404, description = "No such user", body = crate::error::ErrorBody)))]
pub(crate) async fn delete(ctx: &ApiContext, auth: &Caller, username: &str) -> ApiResult {
    admin(ctx, auth).await?;
    // The last administrator is kept by the state machine (`apply.rs`), in log order.
    submit::<()>(
        ctx,
        Command::DeleteUser {
            username: username.to_string(),
        },
    )
    .await?;
    ok()
}
