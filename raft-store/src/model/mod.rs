//! The replicated records. Plain serde structs: timestamps are Unix milliseconds, chosen by the
//! node that proposes a write so that applying a command is deterministic on every replica.

mod device;
mod product;
mod rule;
mod session;
mod user;

pub use device::{ConnState, Device, DevicePatch};
pub use product::{Product, ProductPatch};
pub use rule::{Rule, RuleAction, RulePatch};
pub use session::{RetainedRecord, SessionRecord, SubscriptionRecord};
pub use user::{Role, User, UserPatch};
