//! Who is calling: HTTP Basic (user name and password, checked against the replicated users'
//! argon2 hashes) or a Bearer token from `POST /auth` (HS256, signed with the replicated secret so
//! every node accepts it, expiring after `token_ttl`). Argon2 is deliberately slow, so a verified
//! Basic credential is remembered for a minute (`passwords::CredentialCache`); `passwords.rs`
//! bounds what the checks may cost.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use realmq_raft_store::model::Role;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::context::ApiContext;
use crate::error::ApiError;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub username: String,
    pub role: Role,
}

impl Principal {
    /// Viewers may only read.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Administrator => Ok(()),
            Role::Viewer => Err(ApiError::Forbidden(format!(
                "user {:?} has the viewer role, which may only read",
                self.username
            ))),
        }
    }
}

/// What a viewer sees in place of a secret.
pub const MASKED: &str = "******";

impl Principal {
    /// A product secret or device password as this caller may see it: administrators get it,
    /// viewers a mask (with the secret a viewer could sign registrations and claim devices).
    pub fn reveal(&self, secret: &str) -> String {
        match self.role {
            Role::Administrator => secret.to_string(),
            Role::Viewer => MASKED.to_string(),
        }
    }
}

/// What a request says about its caller: the raw `Authorization` header (checked by the
/// handler, so errors use the envelope) and the peer's address (for failed-login limits).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub authorization: Option<String>,
    pub addr: Option<IpAddr>,
}

/// Hashes a new password (bounded like every argon2 job, see `passwords.rs`).
pub async fn hash_password(ctx: &ApiContext, password: &str) -> Result<String, ApiError> {
    ctx.passwords.hash(password).await
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    iat: u64,
    exp: u64,
    /// Which password the user had when the token was issued (`password_epoch`): a password
    /// change anywhere in the cluster replicates a new hash, and the token stops working on
    /// every node. Tokens from before this claim existed have none and are refused.
    #[serde(default)]
    pwd: String,
}

/// A short fingerprint of a stored password hash (itself salted), never of the password.
fn password_epoch(password_hash: &str) -> String {
    hex::encode(&Sha256::digest(password_hash.as_bytes())[..12])
}

async fn token_secret(ctx: &ApiContext) -> Result<Vec<u8>, ApiError> {
    ctx.lookup(|r| r.token_secret())
        .await?
        .ok_or_else(|| ApiError::Unavailable("the token secret is not initialised yet".into()))
}

/// Checks a user name and password sent from `addr`; the caller gets the user's role.
pub async fn login(
    ctx: &ApiContext,
    username: &str,
    password: &str,
    addr: Option<IpAddr>,
) -> Result<Role, ApiError> {
    let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
    let user = ctx.lookup(|r| r.user(username)).await?;
    if let Some(user) = &user
        && ctx.creds.verified(username, &digest, &user.password_hash)
    {
        return Ok(user.role);
    }
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    // Unknown users are verified too (against a dummy hash): same timing, same limits.
    let ok = ctx.passwords.verify(username, addr, password, hash).await?;
    match user {
        Some(user) if ok => {
            ctx.creds.put(username, digest, user.password_hash);
            Ok(user.role)
        }
        _ => Err(ApiError::Unauthorized("wrong user name or password".into())),
    }
}

pub async fn issue_token(ctx: &ApiContext, username: &str, role: Role) -> Result<String, ApiError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let user = ctx
        .lookup(|r| r.user(username))
        .await?
        .ok_or_else(|| ApiError::Unauthorized("wrong user name or password".into()))?;
    let claims = Claims {
        sub: username.to_string(),
        role,
        iat: now,
        exp: now + ctx.config.token_ttl.as_secs(),
        pwd: password_epoch(&user.password_hash),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&token_secret(ctx).await?),
    )
    .map_err(|e| ApiError::Internal(format!("token signing failed: {e}")))
}

async fn verify_token(ctx: &ApiContext, token: &str) -> Result<Principal, ApiError> {
    let key = DecodingKey::from_secret(&token_secret(ctx).await?);
    let mut validation = Validation::new(Algorithm::HS256);
    // Expiry is exact: every node signs and checks with the same clock source (UTC seconds).
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| ApiError::Unauthorized(format!("invalid bearer token: {e}")))?;
    // The token names a user; a deleted user's tokens stop working and role changes apply.
    let user = ctx
        .lookup(|r| r.user(&data.claims.sub))
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the token's user no longer exists".into()))?;
    if data.claims.pwd != password_epoch(&user.password_hash) {
        return Err(ApiError::Unauthorized(
            "the token was issued before its user's password changed; log in again".into(),
        ));
    }
    Ok(Principal {
        username: user.username,
        role: user.role,
    })
}

/// Authenticates a request that reads: then the read barrier, so this node holds every write
/// acknowledged anywhere before the request and what the handler reads is current (reads are
/// linearizable on any node). Concurrent requests share one barrier.
pub async fn authenticate_read(ctx: &ApiContext, caller: &Caller) -> Result<Principal, ApiError> {
    let who = authenticate(ctx, caller).await?;
    ctx.writer.barrier().await?;
    Ok(who)
}

/// Who an `Authorization` header claims to be, unchecked, for the access log: the Basic user
/// name, or `bearer` (never the password or the token).
pub(crate) fn claimed_user(header: &str) -> String {
    if header.starts_with("Bearer ") {
        return "bearer".into();
    }
    header
        .strip_prefix("Basic ")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, _)| u.to_string()))
        .unwrap_or_default()
}

/// Authenticates a request from its `Authorization` header. Credentials are read locally, with
/// the read barrier only on a miss (`ApiContext::lookup`): a write needs no barrier, since what
/// it changes is checked again when it is applied.
pub async fn authenticate(ctx: &ApiContext, caller: &Caller) -> Result<Principal, ApiError> {
    let header = caller.authorization.as_deref().ok_or_else(|| {
        ApiError::Unauthorized(
            "missing Authorization header: use Basic credentials or a Bearer token".into(),
        )
    })?;
    if let Some(token) = header.strip_prefix("Bearer ") {
        return verify_token(ctx, token.trim()).await;
    }
    let Some(encoded) = header.strip_prefix("Basic ") else {
        return Err(ApiError::Unauthorized(
            "Authorization must be Basic or Bearer".into(),
        ));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::Unauthorized("malformed Basic credentials".into()))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| ApiError::Unauthorized("malformed Basic credentials".into()))?;
    let role = login(ctx, username, password, caller.addr).await?;
    Ok(Principal {
        username: username.to_string(),
        role,
    })
}
