//! `submit`: the API's only way to change metadata. It goes through the node's
//! `raft_store::client::Writer`, with the answer typed as the handler expects it, and turns
//! what `apply` refused into `ApiError`s.

use realmq_raft_store::{Answer, Command, Rejection};

use crate::context::ApiContext;
use crate::error::ApiError;

pub async fn submit<T: Answer>(ctx: &ApiContext, cmd: Command) -> Result<T, ApiError> {
    Ok(submit_or_refused(ctx, cmd).await??)
}

/// `submit`, leaving what `apply` refused to the caller (to retry with other values).
pub async fn submit_or_refused<T: Answer>(
    ctx: &ApiContext,
    cmd: Command,
) -> Result<Result<T, Rejection>, ApiError> {
    Ok(ctx.writer.submit(cmd).await?)
}
