//! `Command`: every replicated write, and `CommandResult`, what applying it answered.
//!
//! Commands carry everything that is random or time-dependent (ids excepted: `apply` assigns
//! them from counters), so every replica applies them to the same state. Validation that needs
//! the current state (uniqueness, existence) happens in `apply` and comes back as
//! `CommandResult::Rejected` rather than a storage error.

use serde::{Deserialize, Serialize};

use crate::model::{
    Device, DevicePatch, Product, ProductPatch, RetainedRecord, Rule, RulePatch, SessionRecord,
    SubscriptionRecord, User, UserPatch,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// First start of a cluster: sets the API token-signing secret and creates the default
    /// administrator, only if no secret exists yet. Every node proposes it when it finds none;
    /// the first to commit wins, and a later one (or a lagging node) changes nothing, so a
    /// deleted `root` stays deleted.
    Bootstrap {
        secret: Vec<u8>,
        root: User,
    },
    CreateUser {
        user: User,
    },
    UpdateUser {
        username: String,
        patch: UserPatch,
    },
    DeleteUser {
        username: String,
    },

    /// `product.id` is ignored; the new id is in `CommandResult::Created`.
    CreateProduct {
        product: Product,
    },
    UpdateProduct {
        id: u64,
        patch: ProductPatch,
    },
    DeleteProduct {
        id: u64,
    },

    /// `device.id` is ignored; the new id is in `CommandResult::Created`.
    CreateDevice {
        device: Device,
    },
    UpdateDevice {
        id: u64,
        patch: DevicePatch,
    },
    DeleteDevice {
        id: u64,
    },
    /// Dynamic registration: creates the device, or hands out an existing one's credentials
    /// if they were never issued before.
    RegisterDevice {
        device: Device,
    },

    /// A client connected to `session.node_id`: registers (or replaces) its session and, when
    /// the client is a device, marks it online.
    ClientConnected {
        session: SessionRecord,
        ip: Option<String>,
        at: i64,
        clean_start: bool,
    },
    /// A client's connection ended; a session with expiry 0 ends with it.
    ClientDisconnected {
        client_id: String,
        node_id: u64,
        conn_id: u64,
        at: i64,
    },
    /// A session ended (expiry). With `owner`, only if the session still belongs to that node:
    /// a session resumed elsewhere meanwhile is not the one that expired.
    RemoveSession {
        client_id: String,
        owner: Option<u64>,
    },
    Subscribe {
        client_id: String,
        subscription: SubscriptionRecord,
    },
    Unsubscribe {
        client_id: String,
        filter: String,
    },

    SetRetained {
        record: RetainedRecord,
    },

    /// `rule.id` is ignored; the new id is in `CommandResult::Created`. The SQL was compiled by
    /// the proposing node; every node compiles it again when the change reaches it.
    CreateRule {
        rule: Rule,
    },
    UpdateRule {
        id: u64,
        patch: RulePatch,
    },
    DeleteRule {
        id: u64,
    },

    /// Several commands applied in order in one log entry (batched MQTT-side writes).
    Batch(Vec<Command>),
    /// An entry proposed by node `origin`'s writer, applied at most once however often it is
    /// retried: `apply` remembers the last (`epoch`, `seq`) of each origin with its result and
    /// answers a repeat with that result. A writer has one entry in flight, so the last is
    /// enough; `epoch` is new at every start of the node, so `seq` may start again at 1.
    Tagged {
        origin: u64,
        epoch: u64,
        seq: u64,
        cmd: Box<Command>,
    },
}

/// Why `apply` refused a command. `field` names what conflicted or was missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    NotFound { what: String },
    AlreadyExists { field: String },
    Invalid { message: String },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::NotFound { what } => write!(f, "{what} not found"),
            Rejection::AlreadyExists { field } => write!(f, "{field} already exists"),
            Rejection::Invalid { message } => f.write_str(message),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Ok,
    Created {
        id: u64,
    },
    /// Dynamic registration's outcome: the device and whether it was created now.
    Registered {
        device: Box<Device>,
        created: bool,
    },
    Rejected(Rejection),
    Batch(Vec<CommandResult>),
}

impl CommandResult {
    pub fn rejected(&self) -> Option<&Rejection> {
        match self {
            CommandResult::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

/// The answer of a `Create*` command: the id `apply` assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created {
    pub id: u64,
}

/// The answer of `RegisterDevice`: the device and whether it was created now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub device: Device,
    pub created: bool,
}

/// A typed view of `CommandResult`: what a caller expects its command to answer. `Writer::submit`
/// converts once, so no caller matches on the untyped result; a command answered with another
/// shape (a bug) is reported there as `WriteError::Internal`.
pub trait Answer: Sized {
    /// `Err(r)` back when `r` is neither this answer nor a rejection.
    fn from_result(r: CommandResult) -> Result<Result<Self, Rejection>, CommandResult>;
}

impl Answer for () {
    fn from_result(r: CommandResult) -> Result<Result<(), Rejection>, CommandResult> {
        match r {
            CommandResult::Ok => Ok(Ok(())),
            CommandResult::Rejected(r) => Ok(Err(r)),
            other => Err(other),
        }
    }
}

impl Answer for Created {
    fn from_result(r: CommandResult) -> Result<Result<Created, Rejection>, CommandResult> {
        match r {
            CommandResult::Created { id } => Ok(Ok(Created { id })),
            CommandResult::Rejected(r) => Ok(Err(r)),
            other => Err(other),
        }
    }
}

impl Answer for Registered {
    fn from_result(r: CommandResult) -> Result<Result<Registered, Rejection>, CommandResult> {
        match r {
            CommandResult::Registered { device, created } => Ok(Ok(Registered {
                device: *device,
                created,
            })),
            CommandResult::Rejected(r) => Ok(Err(r)),
            other => Err(other),
        }
    }
}
