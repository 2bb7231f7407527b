//! `apply_command`: the one `match` over `Command`, one small function per command. Everything a
//! command changes, records, secondary indexes and counters, goes into the caller's `Tx`.

use super::tx::{IoResult, Tx};
use crate::applied::Applied;
use crate::command::{Command, CommandResult, Rejection};
use crate::keys;
use crate::model::{
    ConnState, Device, Product, RetainedRecord, Role, SessionRecord, SubscriptionRecord, User,
    UserPatch,
};

pub(crate) fn apply_command(tx: &mut Tx<'_>, cmd: Command) -> IoResult<CommandResult> {
    match cmd {
        Command::Bootstrap { secret, root } => bootstrap(tx, secret, root),
        Command::CreateUser { user } => create_user(tx, user),
        Command::UpdateUser { username, patch } => update_user(tx, &username, patch),
        Command::DeleteUser { username } => delete_user(tx, &username),
        Command::CreateProduct { product } => create_product(tx, product),
        Command::UpdateProduct { id, patch } => update_product(tx, id, patch),
        Command::DeleteProduct { id } => delete_product(tx, id),
        Command::CreateDevice { device } => create_device(tx, device),
        Command::UpdateDevice { id, patch } => update_device(tx, id, patch),
        Command::DeleteDevice { id } => delete_device(tx, id),
        Command::RegisterDevice { device } => register_device(tx, device),
        Command::ClientConnected {
            session,
            ip,
            at,
            clean_start,
        } => client_connected(tx, session, ip, at, clean_start),
        Command::ClientDisconnected {
            client_id,
            node_id,
            conn_id,
            at,
        } => client_disconnected(tx, &client_id, node_id, conn_id, at),
        Command::RemoveSession { client_id, owner } => remove_session(tx, client_id, owner),
        Command::Subscribe {
            client_id,
            subscription,
        } => subscribe(tx, &client_id, subscription),
        Command::Unsubscribe { client_id, filter } => unsubscribe(tx, &client_id, &filter),
        Command::SetRetained { record } => set_retained(tx, record),
        Command::CreateRule { rule } => super::rules::create_rule(tx, rule),
        Command::UpdateRule { id, patch } => super::rules::update_rule(tx, id, patch),
        Command::DeleteRule { id } => super::rules::delete_rule(tx, id),
        Command::Batch(cmds) => Ok(CommandResult::Batch(
            cmds.into_iter()
                .map(|c| apply_command(tx, c))
                .collect::<IoResult<_>>()?,
        )),
        Command::Tagged {
            origin,
            epoch,
            seq,
            cmd,
        } => tagged(tx, origin, epoch, seq, *cmd),
    }
}

/// Applies a writer's entry once: a retry of the last entry from `origin` gets its result.
fn tagged(
    tx: &mut Tx<'_>,
    origin: u64,
    epoch: u64,
    seq: u64,
    cmd: Command,
) -> IoResult<CommandResult> {
    let key = keys::writer(origin);
    if let Some((e, s, result)) = tx.get_value::<(u64, u64, CommandResult)>(keys::SM_META, &key)?
        && e == epoch
    {
        if s == seq {
            return Ok(result);
        }
        if s > seq {
            return rejected(Rejection::Invalid {
                message: format!("a retry of entry {seq} arrived after entry {s}"),
            });
        }
    }
    let result = apply_command(tx, cmd)?;
    tx.put_value(keys::SM_META, &key, &(epoch, seq, &result));
    Ok(result)
}

pub(super) fn rejected(r: Rejection) -> IoResult<CommandResult> {
    Ok(CommandResult::Rejected(r))
}

pub(super) fn not_found(what: &str) -> IoResult<CommandResult> {
    rejected(Rejection::NotFound { what: what.into() })
}

fn exists(field: &str) -> IoResult<CommandResult> {
    rejected(Rejection::AlreadyExists {
        field: field.into(),
    })
}

fn bootstrap(tx: &mut Tx<'_>, secret: Vec<u8>, root: User) -> IoResult<CommandResult> {
    if tx.exists(keys::SM_META, keys::TOKEN_SECRET)? {
        // Another node's (or an earlier start's) bootstrap won: nothing changes.
        return exists("token_secret");
    }
    tx.put(keys::SM_META, keys::TOKEN_SECRET, secret);
    create_user(tx, root)
}

fn create_user(tx: &mut Tx<'_>, user: User) -> IoResult<CommandResult> {
    if tx.exists(keys::USERS, user.username.as_bytes())? {
        return exists("username");
    }
    tx.put_value(keys::USERS, user.username.as_bytes(), &user);
    Ok(CommandResult::Ok)
}

/// At least one administrator always remains. Checked here, in log order, so two concurrent
/// requests that each saw another administrator cannot both go through.
fn last_admin(tx: &Tx<'_>, user: &User) -> IoResult<Option<CommandResult>> {
    if user.role != Role::Administrator {
        return Ok(None);
    }
    let others = tx
        .values::<User>(keys::USERS)?
        .iter()
        .any(|u| u.role == Role::Administrator && u.username != user.username);
    Ok((!others).then(|| {
        CommandResult::Rejected(Rejection::Invalid {
            message: "at least one administrator must remain".into(),
        })
    }))
}

fn update_user(tx: &mut Tx<'_>, username: &str, patch: UserPatch) -> IoResult<CommandResult> {
    let Some(mut user) = tx.get_value::<User>(keys::USERS, username.as_bytes())? else {
        return not_found("user");
    };
    if patch.role == Some(Role::Viewer)
        && let Some(refused) = last_admin(tx, &user)?
    {
        return Ok(refused);
    }
    if let Some(h) = patch.password_hash {
        user.password_hash = h;
    }
    if let Some(r) = patch.role {
        user.role = r;
    }
    tx.put_value(keys::USERS, username.as_bytes(), &user);
    Ok(CommandResult::Ok)
}

fn delete_user(tx: &mut Tx<'_>, username: &str) -> IoResult<CommandResult> {
    let Some(user) = tx.get_value::<User>(keys::USERS, username.as_bytes())? else {
        return not_found("user");
    };
    if let Some(refused) = last_admin(tx, &user)? {
        return Ok(refused);
    }
    tx.delete(keys::USERS, username.as_bytes());
    Ok(CommandResult::Ok)
}

/// Writes `new` in place of `old`, keeping the name and key indexes in step.
fn write_product(tx: &mut Tx<'_>, old: Option<&Product>, new: &Product) {
    if let Some(o) = old {
        tx.delete(keys::PRODUCT_BY_NAME, o.name.as_bytes());
        tx.delete(keys::PRODUCT_BY_KEY, o.product_key.as_bytes());
    }
    let id = keys::id(new.id);
    tx.put_value(keys::PRODUCTS, &id, new);
    tx.put(keys::PRODUCT_BY_NAME, new.name.as_bytes(), id.to_vec());
    tx.put(
        keys::PRODUCT_BY_KEY,
        new.product_key.as_bytes(),
        id.to_vec(),
    );
}

fn create_product(tx: &mut Tx<'_>, mut product: Product) -> IoResult<CommandResult> {
    if tx.exists(keys::PRODUCT_BY_NAME, product.name.as_bytes())? {
        return exists("name");
    }
    if tx.exists(keys::PRODUCT_BY_KEY, product.product_key.as_bytes())? {
        return exists("product_key");
    }
    product.id = tx.next_id(keys::NEXT_PRODUCT_ID)?;
    write_product(tx, None, &product);
    Ok(CommandResult::Created { id: product.id })
}

fn update_product(
    tx: &mut Tx<'_>,
    id: u64,
    patch: crate::model::ProductPatch,
) -> IoResult<CommandResult> {
    let Some(old) = tx.get_value::<Product>(keys::PRODUCTS, &keys::id(id))? else {
        return not_found("product");
    };
    let mut new = old.clone();
    if let Some(name) = patch.name {
        if name != old.name && tx.exists(keys::PRODUCT_BY_NAME, name.as_bytes())? {
            return exists("name");
        }
        new.name = name;
    }
    if let Some(t) = patch.product_type {
        new.product_type = t;
    }
    if let Some(d) = patch.dynamic_reg {
        new.dynamic_reg = d;
    }
    if let Some(a) = patch.auth_type {
        new.auth_type = a;
    }
    if let Some(d) = patch.description {
        new.description = d;
    }
    write_product(tx, Some(&old), &new);
    Ok(CommandResult::Ok)
}

/// Devices of a product, from the counters (no scan).
pub(crate) fn device_count(tx: &Tx<'_>, product_id: u64) -> IoResult<u64> {
    (0..=3)
        .map(|s| tx.counter(&keys::counter(product_id, s)))
        .sum()
}

fn delete_product(tx: &mut Tx<'_>, id: u64) -> IoResult<CommandResult> {
    let Some(old) = tx.get_value::<Product>(keys::PRODUCTS, &keys::id(id))? else {
        return not_found("product");
    };
    let n = device_count(tx, id)?;
    if n > 0 {
        return rejected(Rejection::Invalid {
            message: format!("product {id} still has {n} devices; delete them first"),
        });
    }
    tx.delete(keys::PRODUCTS, &keys::id(id));
    tx.delete(keys::PRODUCT_BY_NAME, old.name.as_bytes());
    tx.delete(keys::PRODUCT_BY_KEY, old.product_key.as_bytes());
    for s in 0..=3 {
        tx.delete(keys::SM_META, &keys::counter(id, s));
    }
    Ok(CommandResult::Ok)
}

/// Writes `new` in place of `old` (either may be absent), keeping every index and counter in
/// step. The one place device indexes change.
fn write_device(tx: &mut Tx<'_>, old: Option<&Device>, new: Option<&Device>) -> IoResult<()> {
    if let Some(o) = old {
        tx.delete(keys::DEVICE_BY_NAME, o.name.as_bytes());
        tx.delete(keys::DEVICE_BY_USERNAME, o.username.as_bytes());
        tx.delete(keys::DEVICE_BY_CLIENT_ID, o.mqtt_client_id.as_bytes());
        tx.delete(keys::DEVICE_BY_PRODUCT, &keys::pair(o.product_id, o.id));
        tx.delete(keys::DEVICE_BY_STATUS, &keys::status_key(o.status(), o.id));
        tx.add_counter(&keys::counter(o.product_id, o.status()), -1)?;
        tx.add_counter(&keys::counter(0, o.status()), -1)?;
        if new.is_none() {
            tx.delete(keys::DEVICES, &keys::id(o.id));
        }
    }
    if let Some(n) = new {
        let id = keys::id(n.id);
        tx.put_value(keys::DEVICES, &id, n);
        tx.put(keys::DEVICE_BY_NAME, n.name.as_bytes(), id.to_vec());
        tx.put(keys::DEVICE_BY_USERNAME, n.username.as_bytes(), id.to_vec());
        tx.put(
            keys::DEVICE_BY_CLIENT_ID,
            n.mqtt_client_id.as_bytes(),
            id.to_vec(),
        );
        tx.put(
            keys::DEVICE_BY_PRODUCT,
            &keys::pair(n.product_id, n.id),
            Vec::new(),
        );
        tx.put(
            keys::DEVICE_BY_STATUS,
            &keys::status_key(n.status(), n.id),
            Vec::new(),
        );
        tx.add_counter(&keys::counter(n.product_id, n.status()), 1)?;
        tx.add_counter(&keys::counter(0, n.status()), 1)?;
    }
    Ok(())
}

/// The first unique field of `d` another device already uses.
fn taken_field(tx: &Tx<'_>, d: &Device, old: Option<&Device>) -> IoResult<Option<&'static str>> {
    let checks: [(&'static str, &'static str, &str, Option<&str>); 3] = [
        (
            "name",
            keys::DEVICE_BY_NAME,
            &d.name,
            old.map(|o| o.name.as_str()),
        ),
        (
            "username",
            keys::DEVICE_BY_USERNAME,
            &d.username,
            old.map(|o| o.username.as_str()),
        ),
        (
            "mqtt_client_id",
            keys::DEVICE_BY_CLIENT_ID,
            &d.mqtt_client_id,
            old.map(|o| o.mqtt_client_id.as_str()),
        ),
    ];
    for (field, cf, value, before) in checks {
        if before != Some(value) && tx.exists(cf, value.as_bytes())? {
            return Ok(Some(field));
        }
    }
    Ok(None)
}

fn create_device(tx: &mut Tx<'_>, mut device: Device) -> IoResult<CommandResult> {
    if !tx.exists(keys::PRODUCTS, &keys::id(device.product_id))? {
        return not_found("product");
    }
    if let Some(field) = taken_field(tx, &device, None)? {
        return exists(field);
    }
    device.id = tx.next_id(keys::NEXT_DEVICE_ID)?;
    write_device(tx, None, Some(&device))?;
    Ok(CommandResult::Created { id: device.id })
}

fn update_device(
    tx: &mut Tx<'_>,
    id: u64,
    patch: crate::model::DevicePatch,
) -> IoResult<CommandResult> {
    let Some(old) = tx.get_value::<Device>(keys::DEVICES, &keys::id(id))? else {
        return not_found("device");
    };
    let mut new = old.clone();
    if let Some(p) = patch.product_id {
        if !tx.exists(keys::PRODUCTS, &keys::id(p))? {
            return not_found("product");
        }
        new.product_id = p;
    }
    macro_rules! set {
        ($($f:ident),*) => { $(if let Some(v) = patch.$f { new.$f = v; })* };
    }
    set!(
        name,
        username,
        mqtt_client_id,
        password,
        nickname,
        device_type,
        description,
        enable
    );
    if let Some(field) = taken_field(tx, &new, Some(&old))? {
        return exists(field);
    }
    write_device(tx, Some(&old), Some(&new))?;
    let revoked = (old.enable && !new.enable)
        || old.username != new.username
        || old.password != new.password
        || old.mqtt_client_id != new.mqtt_client_id;
    if revoked {
        tx.effect(Applied::CredentialsRevoked {
            client_id: old.mqtt_client_id,
        });
    }
    Ok(CommandResult::Ok)
}

fn delete_device(tx: &mut Tx<'_>, id: u64) -> IoResult<CommandResult> {
    let Some(old) = tx.get_value::<Device>(keys::DEVICES, &keys::id(id))? else {
        return not_found("device");
    };
    write_device(tx, Some(&old), None)?;
    tx.effect(Applied::CredentialsRevoked {
        client_id: old.mqtt_client_id,
    });
    Ok(CommandResult::Ok)
}

fn register_device(tx: &mut Tx<'_>, device: Device) -> IoResult<CommandResult> {
    let existing = match tx.get(keys::DEVICE_BY_NAME, device.name.as_bytes())? {
        Some(id) => tx.get_value::<Device>(keys::DEVICES, &id)?,
        None => None,
    };
    let Some(old) = existing else {
        let mut device = device;
        device.credentials_issued = true;
        return match create_device(tx, device.clone())? {
            CommandResult::Created { id } => Ok(CommandResult::Registered {
                device: Box::new(Device { id, ..device }),
                created: true,
            }),
            other => Ok(other),
        };
    };
    if old.product_id != device.product_id {
        return exists("device_name");
    }
    if old.credentials_issued {
        return rejected(Rejection::Invalid {
            message: "device_name is already registered and its credentials were issued".into(),
        });
    }
    let new = Device {
        credentials_issued: true,
        ..old.clone()
    };
    write_device(tx, Some(&old), Some(&new))?;
    Ok(CommandResult::Registered {
        device: Box::new(new),
        created: false,
    })
}

fn device_by_client(tx: &Tx<'_>, client_id: &str) -> IoResult<Option<Device>> {
    match tx.get(keys::DEVICE_BY_CLIENT_ID, client_id.as_bytes())? {
        Some(id) => tx.get_value(keys::DEVICES, &id),
        None => Ok(None),
    }
}

fn client_connected(
    tx: &mut Tx<'_>,
    mut session: SessionRecord,
    ip: Option<String>,
    at: i64,
    clean_start: bool,
) -> IoResult<CommandResult> {
    let key = session.client_id.clone();
    if !clean_start
        && let Some(old) = tx.get_value::<SessionRecord>(keys::SESSIONS, key.as_bytes())?
        && session.subscriptions.is_empty()
    {
        session.subscriptions = old.subscriptions;
    }
    session.connected = true;
    session.disconnected_at = None;
    tx.put_value(keys::SESSIONS, key.as_bytes(), &session);
    tx.effect(Applied::SessionOwner {
        client_id: key.clone(),
        node_id: session.node_id,
        conn_id: session.conn_id,
        resumed: !clean_start,
    });
    if let Some(old) = device_by_client(tx, &key)? {
        let new = Device {
            conn: ConnState::Online,
            ip,
            connected_at: Some(at),
            ..old.clone()
        };
        write_device(tx, Some(&old), Some(&new))?;
    }
    Ok(CommandResult::Ok)
}

/// Applies only if the session still belongs to that connection: after a takeover the old
/// connection's late disconnect must not mark the new one offline.
fn client_disconnected(
    tx: &mut Tx<'_>,
    client_id: &str,
    node_id: u64,
    conn_id: u64,
    at: i64,
) -> IoResult<CommandResult> {
    let Some(mut session) = tx.get_value::<SessionRecord>(keys::SESSIONS, client_id.as_bytes())?
    else {
        return Ok(CommandResult::Ok);
    };
    if session.node_id != node_id || session.conn_id != conn_id {
        return Ok(CommandResult::Ok);
    }
    if session.expiry_interval == 0 {
        tx.delete(keys::SESSIONS, client_id.as_bytes());
        tx.effect(Applied::SessionRemoved {
            client_id: client_id.into(),
        });
    } else {
        session.connected = false;
        session.disconnected_at = Some(at);
        tx.put_value(keys::SESSIONS, client_id.as_bytes(), &session);
    }
    if let Some(old) = device_by_client(tx, client_id)?
        && old.conn == ConnState::Online
    {
        let new = Device {
            conn: ConnState::Offline,
            disconnected_at: Some(at),
            ..old.clone()
        };
        write_device(tx, Some(&old), Some(&new))?;
    }
    Ok(CommandResult::Ok)
}

fn remove_session(
    tx: &mut Tx<'_>,
    client_id: String,
    owner: Option<u64>,
) -> IoResult<CommandResult> {
    let Some(session) = tx.get_value::<SessionRecord>(keys::SESSIONS, client_id.as_bytes())? else {
        return Ok(CommandResult::Ok);
    };
    if owner.is_some_and(|n| n != session.node_id) {
        return Ok(CommandResult::Ok);
    }
    tx.delete(keys::SESSIONS, client_id.as_bytes());
    tx.effect(Applied::SessionRemoved { client_id });
    Ok(CommandResult::Ok)
}

fn subscribe(tx: &mut Tx<'_>, client_id: &str, sub: SubscriptionRecord) -> IoResult<CommandResult> {
    let Some(mut session) = tx.get_value::<SessionRecord>(keys::SESSIONS, client_id.as_bytes())?
    else {
        return not_found("session");
    };
    session.subscriptions.retain(|s| s.filter != sub.filter);
    session.subscriptions.push(sub);
    tx.put_value(keys::SESSIONS, client_id.as_bytes(), &session);
    Ok(CommandResult::Ok)
}

fn unsubscribe(tx: &mut Tx<'_>, client_id: &str, filter: &str) -> IoResult<CommandResult> {
    let Some(mut session) = tx.get_value::<SessionRecord>(keys::SESSIONS, client_id.as_bytes())?
    else {
        return not_found("session");
    };
    session.subscriptions.retain(|s| s.filter != filter);
    tx.put_value(keys::SESSIONS, client_id.as_bytes(), &session);
    Ok(CommandResult::Ok)
}

fn set_retained(tx: &mut Tx<'_>, record: RetainedRecord) -> IoResult<CommandResult> {
    if record.payload.is_empty() {
        tx.delete(keys::RETAINED, record.topic.as_bytes());
    } else {
        tx.put_value(keys::RETAINED, record.topic.as_bytes(), &record);
    }
    tx.effect(Applied::Retained(std::sync::Arc::new(record)));
    Ok(CommandResult::Ok)
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
