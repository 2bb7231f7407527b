//! `submit`: the API's only way to change metadata. It goes through the node's
//! `raft_store::client::Writer` and turns what `apply` answered into `ApiError`s.

use realmq_raft_store::{Command, CommandResult};

use crate::context::ApiContext;
use crate::error::ApiError;

pub async fn submit(ctx: &ApiContext, cmd: Command) -> Result<CommandResult, ApiError> {
    match ctx.writer.write(cmd).await? {
        CommandResult::Rejected(r) => Err(r.into()),
        other => Ok(other),
    }
}
