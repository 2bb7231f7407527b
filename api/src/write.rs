//! `submit`: the API's only way to change metadata. It goes through `raft_store::client::write`
//! and turns what `apply` answered into `ApiError`s.

use realmq_raft_store::{Command, CommandResult, client};

use crate::context::ApiContext;
use crate::error::ApiError;

pub async fn submit(ctx: &ApiContext, cmd: Command) -> Result<CommandResult, ApiError> {
    match client::write(&ctx.raft, cmd).await? {
        CommandResult::Rejected(r) => Err(r.into()),
        other => Ok(other),
    }
}
