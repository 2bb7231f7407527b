//! The authentication / authorization seam the MQTT edge calls on CONNECT, SUBSCRIBE and PUBLISH.
//!
//! `Authenticator` is the plug the protocol code calls; `DeviceAuth` implements it with the device
//! registry (a device connects with its user name, password and client id), anonymous access
//! behind `--allow-anonymous`, and the `[[acl]]` rules of the config file. `Acl` is pure and
//! table-tested.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use realmq_raft_store::Registry;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::message::Protocol;
use crate::routing::topic::filter_matches;

/// What a CONNECT presents.
#[derive(Debug, Clone)]
pub struct ConnectInfo {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
    pub password: Option<Vec<u8>>,
    pub peer: Option<SocketAddr>,
    pub protocol: Protocol,
}

/// Who an authorized connection is, as later checks see it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("bad user name or password")]
    BadCredentials,
    #[error("not authorized")]
    NotAuthorized,
    #[error("authentication backend unavailable")]
    Unavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Publish,
    Subscribe,
}

pub trait Authenticator: Send + Sync + 'static {
    /// Decides a CONNECT.
    fn authenticate<'a>(&'a self, info: &'a ConnectInfo) -> BoxFuture<'a, Result<(), AuthError>>;
    /// Decides one PUBLISH topic or SUBSCRIBE filter; called on the hot path, so it must not block.
    fn authorize(&self, client: &ClientInfo, action: Action, topic: &str) -> bool;
}

/// Devices from the registry, anonymous clients when allowed, and the config file's ACL.
pub struct DeviceAuth {
    pub registry: Registry,
    pub allow_anonymous: bool,
    pub acl: Acl,
}

impl DeviceAuth {
    fn decide(&self, info: &ConnectInfo) -> Result<(), AuthError> {
        let device = match info.username.as_deref() {
            Some(u) => self.registry.device_by_username(u).map_err(|e| {
                tracing::error!(error = %e, "device lookup failed");
                AuthError::Unavailable
            })?,
            None => None,
        };
        let Some(device) = device else {
            // No device claims this user name: the client is anonymous.
            return if self.allow_anonymous {
                Ok(())
            } else {
                Err(AuthError::NotAuthorized)
            };
        };
        let password_ok = info
            .password
            .as_deref()
            .is_some_and(|p| bool::from(p.ct_eq(device.password.as_bytes())));
        if device.enable && password_ok && *info.client_id == *device.mqtt_client_id {
            Ok(())
        } else {
            Err(AuthError::NotAuthorized)
        }
    }
}

impl Authenticator for DeviceAuth {
    fn authenticate<'a>(&'a self, info: &'a ConnectInfo) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(std::future::ready(self.decide(info)))
    }

    fn authorize(&self, client: &ClientInfo, action: Action, topic: &str) -> bool {
        self.acl.allows(client, action, topic)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    Publish,
    Subscribe,
    All,
}

/// One `[[acl]]` entry. `topic` is a filter; `%c` and `%u` stand for the client id and username.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    pub permission: Permission,
    pub action: AclAction,
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Ordered rules, first match wins; with no matching rule the action is allowed.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Vec<AclRule>,
}

impl Acl {
    pub fn new(rules: Vec<AclRule>) -> Self {
        Acl { rules }
    }

    pub fn allows(&self, client: &ClientInfo, action: Action, topic: &str) -> bool {
        for rule in &self.rules {
            if !rule_applies(rule, client, action) {
                continue;
            }
            let pattern = rule
                .topic
                .replace("%c", &client.client_id)
                .replace("%u", client.username.as_deref().unwrap_or(""));
            let hit = match (action, rule.permission) {
                (Action::Publish, _) => filter_matches(&pattern, topic),
                // A subscription is allowed by a rule only if the rule covers every topic it can
                // receive, and denied by a rule if it could receive any topic the rule names.
                (Action::Subscribe, Permission::Allow) => filter_covers(&pattern, topic),
                (Action::Subscribe, Permission::Deny) => filters_overlap(&pattern, topic),
            };
            if hit {
                return rule.permission == Permission::Allow;
            }
        }
        true
    }
}

fn rule_applies(rule: &AclRule, client: &ClientInfo, action: Action) -> bool {
    let action_ok = matches!(
        (rule.action, action),
        (AclAction::All, _)
            | (AclAction::Publish, Action::Publish)
            | (AclAction::Subscribe, Action::Subscribe)
    );
    let user_ok = rule
        .username
        .as_deref()
        .is_none_or(|u| client.username.as_deref() == Some(u));
    let client_ok = rule
        .client_id
        .as_deref()
        .is_none_or(|c| &*client.client_id == c);
    action_ok && user_ok && client_ok
}

/// Whether every topic matched by `inner` is also matched by `outer`.
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    // A root wildcard never matches `$` topics, so it cannot cover a filter that names them.
    if inner.starts_with('$') && (outer.starts_with('+') || outer.starts_with('#')) {
        return false;
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic is matched by both filters.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let wild = |f: &str| f.starts_with('+') || f.starts_with('#');
    if (a.starts_with('$') && wild(b)) || (b.starts_with('$') && wild(a)) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, user: Option<&str>) -> ClientInfo {
        ClientInfo {
            client_id: id.into(),
            username: user.map(Into::into),
        }
    }

    fn rule(p: Permission, a: AclAction, topic: &str) -> AclRule {
        AclRule {
            permission: p,
            action: a,
            topic: topic.into(),
            username: None,
            client_id: None,
        }
    }

    #[test]
    fn covers_and_overlaps_table() {
        for (outer, inner, covers, overlaps) in [
            ("a/#", "a/b", true, true),
            ("a/#", "a/+", true, true),
            ("a/+", "a/#", false, true),
            ("a/+", "a/b", true, true),
            ("a/b", "a/+", false, true),
            ("#", "$SYS/x", false, false),
            ("$SYS/#", "$SYS/x", true, true),
            ("a/b", "c/d", false, false),
            ("secret/#", "#", false, true),
            ("+/+", "a", false, false),
            ("a", "a", true, true),
        ] {
            assert_eq!(
                filter_covers(outer, inner),
                covers,
                "covers {outer} {inner}"
            );
            assert_eq!(
                filters_overlap(outer, inner),
                overlaps,
                "overlap {outer} {inner}"
            );
        }
    }

    #[test]
    fn acl_first_match_wins_table() {
        use AclAction::*;
        use Permission::*;
        let mut only_bob = rule(Allow, All, "users/%u/#");
        only_bob.username = Some("bob".into());
        let acl = Acl::new(vec![
            rule(Deny, Subscribe, "secret/#"),
            rule(Deny, Publish, "$SYS/#"),
            only_bob,
            rule(Deny, All, "users/#"),
            rule(Allow, Publish, "devices/%c/up"),
            rule(Deny, Publish, "devices/#"),
        ]);
        let alice = client("dev1", Some("alice"));
        let bob = client("dev2", Some("bob"));
        let cases = [
            (&alice, Action::Subscribe, "secret/x", false),
            (&alice, Action::Subscribe, "#", false),
            (&alice, Action::Subscribe, "public/#", true),
            (&alice, Action::Publish, "secret/x", true),
            (&alice, Action::Publish, "$SYS/x", false),
            (&bob, Action::Publish, "users/bob/x", true),
            (&bob, Action::Subscribe, "users/bob/#", true),
            (&bob, Action::Subscribe, "users/+/x", false),
            (&alice, Action::Publish, "users/alice/x", false),
            (&alice, Action::Publish, "devices/dev1/up", true),
            (&alice, Action::Publish, "devices/dev2/up", false),
            (&alice, Action::Publish, "anything", true),
        ];
        for (who, action, topic, want) in cases {
            assert_eq!(
                acl.allows(who, action, topic),
                want,
                "{} {action:?} {topic}",
                who.client_id
            );
        }
    }
}
