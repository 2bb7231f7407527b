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
    /// The user name is the common name of a client certificate the TLS listener verified
    /// against `tls_client_ca`: the certificate stands in for the password.
    pub certified: bool,
}

/// Who an authorized connection is, as later checks see it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
    /// The topics a device is confined to under `[mqtt] device_isolation`; `None`: not
    /// confined (isolation off, an anonymous client, or a session acted on by an operator).
    pub scope: Option<Arc<DeviceScope>>,
}

/// A device's own topic space under `[mqtt] device_isolation`: it publishes and subscribes
/// under `{product_key}/{device_name}/#` and may also subscribe to its product's broadcasts,
/// `broadcast/{product_key}/#` (product keys are hex, so no product's space is `broadcast/`).
/// Everything else, `$SYS` included, is refused; `[[acl]]` rules apply on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceScope {
    pub own: String,
    pub broadcast: String,
}

impl DeviceScope {
    pub fn new(product_key: &str, device_name: &str) -> DeviceScope {
        DeviceScope {
            own: format!("{product_key}/{device_name}/#"),
            broadcast: format!("broadcast/{product_key}/#"),
        }
    }

    fn may_publish(&self, topic: &str) -> bool {
        filter_matches(&self.own, topic)
    }

    fn may_subscribe(&self, filter: &str) -> bool {
        filter_covers(&self.own, filter) || filter_covers(&self.broadcast, filter)
    }
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

pub trait Authenticator: Send + Sync + 'static {
    /// Decides a CONNECT.
    /// `Ok` with the topic space the client is confined to, if any.
    fn authenticate<'a>(&'a self, info: &'a ConnectInfo) -> BoxFuture<'a, Authenticated>;
    /// Decides a PUBLISH topic; called on the hot path, so it must not block.
    fn may_publish(&self, client: &ClientInfo, topic: &str) -> bool;
    /// Decides a SUBSCRIBE filter once, when it is made; see `SubAccess`.
    fn subscribe_access(&self, client: &ClientInfo, filter: &str) -> SubAccess;
}

pub type Authenticated = Result<Option<Arc<DeviceScope>>, AuthError>;

/// Devices from the registry, anonymous clients when allowed, and the config file's ACL.
pub struct DeviceAuth {
    pub registry: Registry,
    pub allow_anonymous: bool,
    /// `[mqtt] device_isolation`: each device is confined to its own topic space.
    pub isolation: bool,
    pub acl: Acl,
}

impl DeviceAuth {
    fn decide(&self, info: &ConnectInfo) -> Authenticated {
        let lookup_failed = |e: realmq_raft_store::read::ReadError| {
            tracing::error!(error = %e, "device lookup failed");
            AuthError::Unavailable
        };
        let device = match info.username.as_deref() {
            Some(u) => self.registry.device_by_username(u).map_err(lookup_failed)?,
            None => None,
        };
        let Some(device) = device else {
            // No device claims this user name: the client is anonymous. Anonymous access covers
            // only client ids no device owns; a device's client id needs that device's
            // credentials, or anyone could take over its session and status.
            if !self.allow_anonymous {
                return Err(AuthError::NotAuthorized);
            }
            let owned = self
                .registry
                .device_by_client_id(&info.client_id)
                .map_err(lookup_failed)?;
            return match owned {
                Some(_) => Err(AuthError::NotAuthorized),
                None => Ok(None),
            };
        };
        let password_ok = info.certified
            || info
                .password
                .as_deref()
                .is_some_and(|p| bool::from(p.ct_eq(device.password.as_bytes())));
        if !(device.enable && password_ok && *info.client_id == *device.mqtt_client_id) {
            return Err(AuthError::NotAuthorized);
        }
        if !self.isolation {
            return Ok(None);
        }
        if device.name.contains('/') {
            // Its space would sit inside another device's ("a/b" under "a"): isolation could
            // not keep the two apart.
            tracing::warn!(device = %device.name, "device_isolation refuses a device whose name contains '/'");
            return Err(AuthError::NotAuthorized);
        }
        let product = self
            .registry
            .product(device.product_id)
            .map_err(lookup_failed)?
            .ok_or(AuthError::NotAuthorized)?;
        Ok(Some(Arc::new(DeviceScope::new(
            &product.product_key,
            &device.name,
        ))))
    }
}

impl Authenticator for DeviceAuth {
    fn authenticate<'a>(&'a self, info: &'a ConnectInfo) -> BoxFuture<'a, Authenticated> {
        Box::pin(std::future::ready(self.decide(info)))
    }

    fn may_publish(&self, client: &ClientInfo, topic: &str) -> bool {
        client.scope.as_ref().is_none_or(|s| s.may_publish(topic))
            && self.acl.may_publish(client, topic)
    }

    fn subscribe_access(&self, client: &ClientInfo, filter: &str) -> SubAccess {
        if client
            .scope
            .as_ref()
            .is_some_and(|s| !s.may_subscribe(filter))
        {
            return SubAccess {
                granted: false,
                guard: None,
            };
        }
        self.acl.subscribe(client, filter)
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
///
/// A PUBLISH topic is decided by the first rule whose filter matches it. A SUBSCRIBE filter is
/// decided by the first rule whose filter covers all of it: a deny rule refuses the subscription
/// only then (`secret/#` refuses `secret/a` and `secret/#`, not `#`). A filter that merely
/// overlaps a deny rule is granted, and each message through it is decided as a subscription to
/// that exact topic would be, so `#` does not receive what `secret/#` denies.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Vec<AclRule>,
}

/// What the ACL says about one SUBSCRIBE filter: whether it is granted, and the check each
/// delivery through it needs (`None`, the common case, costs nothing per message).
#[derive(Debug, Clone)]
pub struct SubAccess {
    pub granted: bool,
    pub guard: Option<Arc<TopicGuard>>,
}

impl SubAccess {
    pub const OPEN: SubAccess = SubAccess {
        granted: true,
        guard: None,
    };
}

/// The ACL rules that can decide a message delivered through one subscription, in order, with
/// `%c` and `%u` expanded: those that overlap its filter, up to the first that covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicGuard {
    rules: Vec<(Permission, String)>,
}

impl TopicGuard {
    /// Whether a message on `topic` may be delivered.
    pub fn allows(&self, topic: &str) -> bool {
        self.rules
            .iter()
            .find(|(_, filter)| filter_matches(filter, topic))
            .is_none_or(|(p, _)| *p == Permission::Allow)
    }
}

impl Acl {
    pub fn new(rules: Vec<AclRule>) -> Self {
        Acl { rules }
    }

    fn applicable<'a>(
        &'a self,
        client: &'a ClientInfo,
        action: AclAction,
    ) -> impl Iterator<Item = (Permission, String)> + 'a {
        let username = client.username.as_deref().unwrap_or("");
        self.rules
            .iter()
            .filter(move |r| rule_applies(r, client, action))
            .filter_map(move |r| {
                // A value spanning levels (`a/b`) would let an allow rule reach into another
                // client's topics: such a rule does not apply to it. A deny rule still does,
                // as written. (Wildcards never get here: CONNECT refuses them.)
                let spans = |placeholder: &str, value: &str| {
                    r.topic.contains(placeholder) && value.contains('/')
                };
                if r.permission == Permission::Allow
                    && (spans("%c", &client.client_id) || spans("%u", username))
                {
                    return None;
                }
                let filter = r
                    .topic
                    .replace("%c", &client.client_id)
                    .replace("%u", username);
                Some((r.permission, filter))
            })
    }

    pub fn may_publish(&self, client: &ClientInfo, topic: &str) -> bool {
        self.applicable(client, AclAction::Publish)
            .find(|(_, filter)| filter_matches(filter, topic))
            .is_none_or(|(p, _)| p == Permission::Allow)
    }

    pub fn subscribe(&self, client: &ClientInfo, filter: &str) -> SubAccess {
        let mut rules = Vec::new();
        let mut granted = true;
        for (permission, pattern) in self.applicable(client, AclAction::Subscribe) {
            if filter_covers(&pattern, filter) {
                granted = permission == Permission::Allow;
                rules.push((permission, pattern));
                break;
            }
            if filters_overlap(&pattern, filter) {
                rules.push((permission, pattern));
            }
        }
        // Without a deny rule among them, every message through the filter is allowed.
        let guard = rules
            .iter()
            .any(|(p, _)| *p == Permission::Deny)
            .then(|| Arc::new(TopicGuard { rules }));
        SubAccess { granted, guard }
    }
}

fn rule_applies(rule: &AclRule, client: &ClientInfo, action: AclAction) -> bool {
    let action_ok = rule.action == AclAction::All || rule.action == action;
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

    /// Inputs are a rule's topic, a client id, a user name and a topic, one per line. The
    /// matcher never panics, and for a client id or user name spanning levels an allow rule
    /// written with `%c` / `%u` decides nothing: the result is as if it were not there.
    /// (CONNECT refuses wildcards in them, so those inputs are skipped.)
    #[test]
    fn fuzz_acl() {
        use AclAction::*;
        use Permission::*;
        crate::fuzzing::run("acl", |input| {
            let p = crate::fuzzing::lines(input, 4);
            let (pattern, id, user, topic) = (&p[0], &p[1], &p[2], &p[3]);
            if id.contains(['+', '#', '\0']) || user.contains(['+', '#', '\0']) {
                return;
            }
            let who = client(id, Some(user));
            let acl = Acl::new(vec![rule(Allow, All, pattern), rule(Deny, All, "#")]);
            let without = Acl::new(vec![rule(Deny, All, "#")]);
            let valid = crate::routing::topic::valid_topic_name(topic);
            let published = valid && acl.may_publish(&who, topic);
            if crate::routing::topic::parse_filter(topic).is_ok() {
                let _ = acl.subscribe(&who, topic);
            }
            // A spanning value decides exactly as if the rule were not there.
            let spanning = (pattern.contains("%c") && id.contains('/'))
                || (pattern.contains("%u") && user.contains('/'));
            if spanning {
                let alone = valid && without.may_publish(&who, topic);
                assert_eq!(published, alone, "{p:?}");
            }
        });
    }

    /// Inputs are a product key, a device name and a topic or filter, one per line. Under
    /// `device_isolation` a device publishes only under `{key}/{name}/` and subscribes only to
    /// filters whose first two levels are its own (or its product's broadcast) space, written
    /// out: never a wildcard or a `$` topic reaching past it. (Keys and names with `/`,
    /// wildcards or NUL are refused before a scope is made, so those inputs are skipped.)
    #[test]
    fn fuzz_device_scope() {
        crate::fuzzing::run("scope", |input| {
            let p = crate::fuzzing::lines(input, 3);
            let (key, name, topic) = (&p[0], &p[1], &p[2]);
            let odd = |s: &str| s.is_empty() || s.contains(['/', '+', '#', '\0']);
            if odd(key) || odd(name) {
                return;
            }
            let scope = DeviceScope::new(key, name);
            let levels: Vec<&str> = topic.split('/').collect();
            let under = |a: &str, b: &str| levels.len() >= 2 && levels[0] == a && levels[1] == b;
            let valid_topic = crate::routing::topic::valid_topic_name(topic);
            if valid_topic && scope.may_publish(topic) {
                assert!(under(key, name), "{p:?}: published outside its space");
            }
            if valid_topic && under(key, name) {
                assert!(scope.may_publish(topic), "{p:?}: its own topic refused");
            }
            if crate::routing::topic::parse_filter(topic).is_ok() && scope.may_subscribe(topic) {
                assert!(
                    under(key, name) || under("broadcast", key),
                    "{p:?}: subscribed outside its space"
                );
            }
        });
    }

    fn client(id: &str, user: Option<&str>) -> ClientInfo {
        ClientInfo {
            scope: None,
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
        // (who, filter, granted)
        let subscribes = [
            (&alice, "secret/x", false),
            (&alice, "secret/#", false),
            (&alice, "#", true),
            (&alice, "+/x", true),
            (&alice, "public/#", true),
            (&bob, "users/bob/#", true),
            (&bob, "users/+/x", false),
            (&bob, "users/alice/x", false),
            (&alice, "users/alice/x", false),
        ];
        for (who, filter, want) in subscribes {
            assert_eq!(
                acl.subscribe(who, filter).granted,
                want,
                "{} subscribe {filter}",
                who.client_id
            );
        }
        let publishes = [
            (&alice, "secret/x", true),
            (&alice, "$SYS/x", false),
            (&bob, "users/bob/x", true),
            (&alice, "users/alice/x", false),
            (&alice, "devices/dev1/up", true),
            (&alice, "devices/dev2/up", false),
            (&alice, "anything", true),
        ];
        for (who, topic, want) in publishes {
            assert_eq!(
                acl.may_publish(who, topic),
                want,
                "{} publish {topic}",
                who.client_id
            );
        }
    }

    /// `%c` / `%u` never widen an allow rule: a client id or user name spanning levels does not
    /// get the rule (and falls through to the next), while deny rules still apply to it.
    #[test]
    fn placeholders_never_add_levels_to_an_allow_rule() {
        use AclAction::*;
        use Permission::*;
        let acl = Acl::new(vec![
            rule(Allow, All, "devices/%c/#"),
            rule(Deny, Publish, "private/%u/#"),
            rule(Deny, All, "devices/#"),
        ]);
        let plain = client("dev1", Some("u/x"));
        let sneaky = client("dev1/up", Some("u/x"));
        assert!(acl.may_publish(&plain, "devices/dev1/up"));
        assert!(!acl.may_publish(&plain, "devices/dev2/up"));
        assert!(
            !acl.may_publish(&sneaky, "devices/dev1/up/x"),
            "a client id with a '/' reaches into dev1's topics"
        );
        assert!(!acl.subscribe(&sneaky, "devices/dev1/#").granted);
        assert!(
            !acl.may_publish(&plain, "private/u/x/data"),
            "a deny rule still applies with the value as written"
        );
    }

    /// A granted filter that overlaps a deny rule carries a guard that decides each message as a
    /// subscription to its exact topic would be decided; one that overlaps none carries nothing.
    #[test]
    fn overlapping_filters_get_a_per_message_guard() {
        use AclAction::*;
        use Permission::*;
        let mut bobs = rule(Allow, Subscribe, "users/%u/#");
        bobs.username = Some("bob".into());
        let acl = Acl::new(vec![
            rule(Allow, Subscribe, "secret/public"),
            rule(Deny, Subscribe, "secret/#"),
            bobs,
            rule(Deny, Subscribe, "users/+/private"),
            rule(Deny, Publish, "#"),
        ]);
        let alice = client("a", Some("alice"));
        let bob = client("b", Some("bob"));
        // (who, filter, topic, delivered)
        let cases = [
            (&alice, "#", "secret/public", true),
            (&alice, "#", "secret/x", false),
            (&alice, "#", "secret", false),
            (&alice, "#", "other/x", true),
            (&alice, "+/+", "secret/x", false),
            (&alice, "+/+", "other/x", true),
            (&alice, "+/private", "users/private", true),
            (&alice, "users/#", "users/alice/private", false),
            (&bob, "users/#", "users/bob/private", true),
            (&bob, "users/#", "users/carol/private", false),
        ];
        for (who, filter, topic, want) in cases {
            let access = acl.subscribe(who, filter);
            assert!(access.granted, "{filter}");
            let got = access.guard.as_ref().is_none_or(|g| g.allows(topic));
            assert_eq!(got, want, "{} {filter} -> {topic}", who.client_id);
        }
        for filter in ["public/#", "secret/public", "users/bob/#"] {
            assert!(
                acl.subscribe(&bob, filter).guard.is_none(),
                "{filter} overlaps no deny rule"
            );
        }
        // The guard of a refused filter refuses everything it matches.
        let refused = acl.subscribe(&alice, "secret/+");
        assert!(!refused.granted);
        assert!(!refused.guard.expect("guard").allows("secret/x"));
    }
}
