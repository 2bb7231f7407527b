//! `apply_command` against a real RocksDB in a temp dir, read back through `Registry`.

use super::*;
use crate::command::Rejection;
use crate::model::{ConnState, DevicePatch, ProductPatch, Role, SubscriptionRecord};
use crate::read::{DeviceQuery, Registry};

fn store() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::open(dir.path()).unwrap();
    (dir, store.registry)
}

/// Applies `cmds` in one `Tx` (like one `apply` call) and commits it.
fn run(reg: &Registry, cmds: Vec<Command>) -> Vec<CommandResult> {
    let db = reg.db();
    let mut tx = Tx::new(db);
    let out = cmds
        .into_iter()
        .map(|c| apply_command(&mut tx, c).unwrap())
        .collect();
    let batch = std::mem::take(&mut tx.batch);
    drop(tx);
    db.write(batch).unwrap();
    out
}

fn one(reg: &Registry, cmd: Command) -> CommandResult {
    run(reg, vec![cmd]).remove(0)
}

fn product(name: &str, key: &str) -> Product {
    Product {
        id: 0,
        name: name.into(),
        product_key: key.into(),
        secret: "0123456789abcdef".into(),
        product_type: 1,
        dynamic_reg: 1,
        auth_type: 1,
        status: 1,
        description: None,
        created_at: 1,
    }
}

fn device(product_id: u64, name: &str) -> Device {
    Device {
        id: 0,
        product_id,
        name: name.into(),
        username: format!("u-{name}"),
        mqtt_client_id: format!("c-{name}"),
        password: "pw".into(),
        nickname: String::new(),
        device_type: None,
        description: None,
        enable: true,
        conn: ConnState::Inactive,
        ip: None,
        connected_at: None,
        disconnected_at: None,
        credentials_issued: false,
        created_at: 1,
    }
}

fn rejected_field(r: &CommandResult) -> String {
    match r.rejected() {
        Some(Rejection::AlreadyExists { field }) => format!("exists:{field}"),
        Some(Rejection::NotFound { what }) => format!("missing:{what}"),
        Some(Rejection::Invalid { .. }) => "invalid".into(),
        None => "ok".into(),
    }
}

#[test]
fn product_rules_table() {
    let (_d, reg) = store();
    assert_eq!(
        one(
            &reg,
            Command::CreateProduct {
                product: product("a", "k1")
            }
        ),
        CommandResult::Created { id: 1 }
    );
    let cases: Vec<(Command, &str)> = vec![
        (
            Command::CreateProduct {
                product: product("a", "k2"),
            },
            "exists:name",
        ),
        (
            Command::CreateProduct {
                product: product("b", "k1"),
            },
            "exists:product_key",
        ),
        (
            Command::CreateProduct {
                product: product("b", "k2"),
            },
            "ok",
        ),
        (
            Command::UpdateProduct {
                id: 2,
                patch: ProductPatch {
                    name: Some("a".into()),
                    ..Default::default()
                },
            },
            "exists:name",
        ),
        (
            Command::UpdateProduct {
                id: 2,
                patch: ProductPatch {
                    name: Some("c".into()),
                    ..Default::default()
                },
            },
            "ok",
        ),
        (
            Command::UpdateProduct {
                id: 9,
                patch: ProductPatch::default(),
            },
            "missing:product",
        ),
        (
            Command::CreateDevice {
                device: device(1, "d1"),
            },
            "ok",
        ),
        (Command::DeleteProduct { id: 1 }, "invalid"),
        (Command::DeleteProduct { id: 2 }, "ok"),
        (Command::DeleteProduct { id: 2 }, "missing:product"),
    ];
    for (cmd, want) in cases {
        let got = one(&reg, cmd.clone());
        assert_eq!(rejected_field(&got), want, "{cmd:?}");
    }
    assert!(
        reg.product_by_name("c").unwrap().is_none(),
        "deleted product left its name index"
    );
    assert_eq!(reg.product_by_name("a").unwrap().unwrap().product_key, "k1");
    assert_eq!(reg.product_by_key("k1").unwrap().unwrap().id, 1);
}

#[test]
fn device_uniqueness_indexes_and_counters() {
    let (_d, reg) = store();
    one(
        &reg,
        Command::CreateProduct {
            product: product("p", "k"),
        },
    );
    let mut dup_user = device(1, "x");
    dup_user.username = "u-d1".into();
    let mut dup_client = device(1, "y");
    dup_client.mqtt_client_id = "c-d1".into();
    let cases: Vec<(Command, &str)> = vec![
        (
            Command::CreateDevice {
                device: device(1, "d1"),
            },
            "ok",
        ),
        (
            Command::CreateDevice {
                device: device(1, "d1"),
            },
            "exists:name",
        ),
        (
            Command::CreateDevice { device: dup_user },
            "exists:username",
        ),
        (
            Command::CreateDevice { device: dup_client },
            "exists:mqtt_client_id",
        ),
        (
            Command::CreateDevice {
                device: device(7, "z"),
            },
            "missing:product",
        ),
        (
            Command::CreateDevice {
                device: device(1, "d2"),
            },
            "ok",
        ),
        (
            Command::UpdateDevice {
                id: 2,
                patch: DevicePatch {
                    username: Some("u-d1".into()),
                    ..Default::default()
                },
            },
            "exists:username",
        ),
        (
            Command::UpdateDevice {
                id: 2,
                patch: DevicePatch {
                    enable: Some(false),
                    ..Default::default()
                },
            },
            "ok",
        ),
        (
            Command::UpdateDevice {
                id: 9,
                patch: DevicePatch::default(),
            },
            "missing:device",
        ),
    ];
    for (cmd, want) in cases {
        assert_eq!(rejected_field(&one(&reg, cmd.clone())), want, "{cmd:?}");
    }
    // d1 inactive (1), d2 disabled (0).
    assert_eq!(reg.device_counts(1).unwrap().by_status, [1, 1, 0, 0]);
    assert_eq!(reg.device_by_username("u-d1").unwrap().unwrap().id, 1);
    assert_eq!(reg.device_by_client_id("c-d2").unwrap().unwrap().id, 2);
    let page = reg
        .devices(&DeviceQuery {
            limit: 10,
            product_id: Some(1),
            status: Some(0),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((page.total, page.items.len(), page.items[0].id), (1, 1, 2));

    one(&reg, Command::DeleteDevice { id: 1 });
    assert!(reg.device_by_name("d1").unwrap().is_none());
    assert_eq!(reg.device_counts(0).unwrap().total(), 1);
}

#[test]
fn later_commands_of_one_apply_see_earlier_ones() {
    let (_d, reg) = store();
    let out = run(
        &reg,
        vec![
            Command::CreateProduct {
                product: product("p", "k"),
            },
            Command::CreateDevice {
                device: device(1, "same"),
            },
            Command::CreateDevice {
                device: device(1, "same"),
            },
        ],
    );
    assert_eq!(out[1], CommandResult::Created { id: 1 });
    assert_eq!(rejected_field(&out[2]), "exists:name");
    let nested = one(
        &reg,
        Command::Batch(vec![
            Command::DeleteDevice { id: 1 },
            Command::DeleteDevice { id: 1 },
        ]),
    );
    let CommandResult::Batch(inner) = nested else {
        panic!("batch result")
    };
    assert_eq!(rejected_field(&inner[1]), "missing:device");
}

fn session(client: &str, conn_id: u64, expiry: u32) -> SessionRecord {
    SessionRecord {
        client_id: client.into(),
        node_id: 1,
        conn_id,
        username: None,
        expiry_interval: expiry,
        subscriptions: Vec::new(),
        connected: true,
        disconnected_at: None,
    }
}

fn sub(filter: &str) -> SubscriptionRecord {
    SubscriptionRecord {
        filter: filter.into(),
        qos: 1,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        subscription_id: None,
    }
}

#[test]
fn sessions_and_device_presence() {
    let (_d, reg) = store();
    one(
        &reg,
        Command::CreateProduct {
            product: product("p", "k"),
        },
    );
    one(
        &reg,
        Command::CreateDevice {
            device: device(1, "d"),
        },
    );
    one(
        &reg,
        Command::ClientConnected {
            session: session("c-d", 1, 60),
            ip: Some("1.2.3.4".into()),
            at: 10,
            clean_start: true,
        },
    );
    let d = reg.device(1).unwrap().unwrap();
    assert_eq!(
        (d.status(), d.ip.as_deref(), d.connected_at),
        (3, Some("1.2.3.4"), Some(10))
    );
    one(
        &reg,
        Command::Subscribe {
            client_id: "c-d".into(),
            subscription: sub("a/#"),
        },
    );
    one(
        &reg,
        Command::Subscribe {
            client_id: "c-d".into(),
            subscription: sub("b"),
        },
    );
    one(
        &reg,
        Command::Unsubscribe {
            client_id: "c-d".into(),
            filter: "b".into(),
        },
    );
    // A takeover: the new connection registers, then the old one's disconnect arrives late.
    one(
        &reg,
        Command::ClientConnected {
            session: session("c-d", 2, 60),
            ip: None,
            at: 20,
            clean_start: false,
        },
    );
    one(
        &reg,
        Command::ClientDisconnected {
            client_id: "c-d".into(),
            node_id: 1,
            conn_id: 1,
            at: 21,
        },
    );
    let s = reg.session("c-d").unwrap().unwrap();
    assert!(s.connected, "stale disconnect ignored");
    assert_eq!(
        s.subscriptions,
        vec![sub("a/#")],
        "resumed session keeps its subscriptions"
    );
    assert_eq!(reg.device(1).unwrap().unwrap().status(), 3);
    one(
        &reg,
        Command::ClientDisconnected {
            client_id: "c-d".into(),
            node_id: 1,
            conn_id: 2,
            at: 30,
        },
    );
    let s = reg.session("c-d").unwrap().unwrap();
    assert_eq!((s.connected, s.disconnected_at), (false, Some(30)));
    let d = reg.device(1).unwrap().unwrap();
    assert_eq!((d.status(), d.disconnected_at), (2, Some(30)));
    assert_eq!(reg.device_counts(1).unwrap().by_status, [0, 0, 1, 0]);

    // Expiry 0 ends the session with the connection.
    one(
        &reg,
        Command::ClientConnected {
            session: session("x", 3, 0),
            ip: None,
            at: 40,
            clean_start: true,
        },
    );
    one(
        &reg,
        Command::ClientDisconnected {
            client_id: "x".into(),
            node_id: 1,
            conn_id: 3,
            at: 41,
        },
    );
    assert!(reg.session("x").unwrap().is_none());
    assert_eq!(
        rejected_field(&one(
            &reg,
            Command::Subscribe {
                client_id: "x".into(),
                subscription: sub("a")
            }
        )),
        "missing:session"
    );
}

#[test]
fn dynamic_registration_issues_credentials_once() {
    let (_d, reg) = store();
    one(
        &reg,
        Command::CreateProduct {
            product: product("p", "k"),
        },
    );
    let CommandResult::Registered { device: d, created } = one(
        &reg,
        Command::RegisterDevice {
            device: device(1, "dyn"),
        },
    ) else {
        panic!("registered")
    };
    assert!(created && d.credentials_issued && d.id == 1);
    assert_eq!(
        rejected_field(&one(
            &reg,
            Command::RegisterDevice {
                device: device(1, "dyn")
            }
        )),
        "invalid"
    );

    one(
        &reg,
        Command::CreateDevice {
            device: device(1, "pre"),
        },
    );
    let CommandResult::Registered { created, .. } = one(
        &reg,
        Command::RegisterDevice {
            device: device(1, "pre"),
        },
    ) else {
        panic!("registered")
    };
    assert!(!created, "an existing device's credentials are handed out");
    assert_eq!(
        rejected_field(&one(
            &reg,
            Command::RegisterDevice {
                device: device(1, "pre")
            }
        )),
        "invalid"
    );
}

#[test]
fn users_retained_and_token_secret() {
    let (_d, reg) = store();
    let user = User {
        username: "root".into(),
        password_hash: "h".into(),
        role: Role::Administrator,
        created_at: 1,
    };
    assert_eq!(
        one(&reg, Command::CreateUser { user: user.clone() }),
        CommandResult::Ok
    );
    assert_eq!(
        rejected_field(&one(&reg, Command::CreateUser { user })),
        "exists:username"
    );
    let demote = |name: &str| Command::UpdateUser {
        username: name.into(),
        patch: UserPatch {
            role: Some(Role::Viewer),
            ..Default::default()
        },
    };
    assert_eq!(
        rejected_field(&one(&reg, demote("root"))),
        "invalid",
        "the only administrator is not demoted"
    );
    let ada = User {
        username: "ada".into(),
        ..reg.user("root").unwrap().unwrap()
    };
    one(&reg, Command::CreateUser { user: ada });
    one(&reg, demote("root"));
    assert_eq!(reg.user("root").unwrap().unwrap().role, Role::Viewer);
    // Two deletions of the last two administrators racing into one batch: the second is
    // refused, whichever request checked first.
    one(
        &reg,
        Command::UpdateUser {
            username: "root".into(),
            patch: UserPatch {
                role: Some(Role::Administrator),
                ..Default::default()
            },
        },
    );
    let results = run(
        &reg,
        vec![
            Command::DeleteUser {
                username: "root".into(),
            },
            Command::DeleteUser {
                username: "ada".into(),
            },
        ],
    );
    assert_eq!(
        results.iter().map(rejected_field).collect::<Vec<_>>(),
        ["ok", "invalid"]
    );
    assert_eq!(reg.user("ada").unwrap().unwrap().role, Role::Administrator);
    assert_eq!(
        rejected_field(&one(
            &reg,
            Command::DeleteUser {
                username: "nobody".into()
            }
        )),
        "missing:user"
    );

    let root = |hash: &str| User {
        username: "root".into(),
        password_hash: hash.into(),
        role: Role::Administrator,
        created_at: 1,
    };
    one(
        &reg,
        Command::Bootstrap {
            secret: vec![1],
            root: root("first"),
        },
    );
    one(
        &reg,
        Command::DeleteUser {
            username: "root".into(),
        },
    );
    one(
        &reg,
        Command::Bootstrap {
            secret: vec![2],
            root: root("second"),
        },
    );
    assert_eq!(reg.token_secret().unwrap(), Some(vec![1]), "set once");
    assert_eq!(
        reg.user("root").unwrap(),
        None,
        "a deleted root is not re-created"
    );

    let rec = |payload: &[u8]| RetainedRecord {
        topic: "t".into(),
        payload: payload.to_vec(),
        qos: 1,
        expires_at: None,
        payload_is_utf8: false,
        content_type: None,
        response_topic: None,
        correlation_data: Some(vec![0, 255]),
        user_properties: vec![],
    };
    one(&reg, Command::SetRetained { record: rec(b"v") });
    assert_eq!(reg.retained().unwrap(), vec![rec(b"v")]);
    one(&reg, Command::SetRetained { record: rec(b"") });
    assert!(reg.retained().unwrap().is_empty(), "empty payload clears");
}

/// Every page (walked from the front or the back of its index) is exactly the matching slice
/// of a plain scan, for each index and for the product + status walk.
#[test]
fn pages_are_the_matching_slice_from_either_end() {
    let (_dir, reg) = store();
    run(
        &reg,
        vec![
            Command::CreateProduct {
                product: product("a", "aaaaaaaaaa"),
            },
            Command::CreateProduct {
                product: product("b", "bbbbbbbbbb"),
            },
        ],
    );
    // Interleaved products; every third device of product 1 disabled.
    let mut cmds = Vec::new();
    for i in 0..40u64 {
        cmds.push(Command::CreateDevice {
            device: device(1 + i % 2, &format!("d{i}")),
        });
    }
    run(&reg, cmds);
    let disabled: Vec<u64> = (1..=40).filter(|id| id % 2 == 1 && id % 3 == 0).collect();
    run(
        &reg,
        disabled
            .iter()
            .map(|&id| Command::UpdateDevice {
                id,
                patch: DevicePatch {
                    enable: Some(false),
                    ..Default::default()
                },
            })
            .collect(),
    );
    let all: Vec<Device> = (1..=40)
        .map(|id| reg.device(id).unwrap().unwrap())
        .collect();
    let filters: [(Option<u64>, Option<u8>); 5] = [
        (Some(1), None),
        (Some(2), None),
        (None, Some(0)),
        (None, None),
        (Some(1), Some(1)),
    ];
    for (product_id, status) in filters {
        let expected: Vec<u64> = all
            .iter()
            .filter(|d| product_id.is_none_or(|p| d.product_id == p))
            .filter(|d| status.is_none_or(|s| d.status() == s))
            .map(|d| d.id)
            .collect();
        for limit in [1, 3, 7, 50] {
            for offset in 0..expected.len() + 2 {
                let q = DeviceQuery {
                    offset,
                    limit,
                    product_id,
                    status,
                    ..Default::default()
                };
                let page = reg.devices(&q).unwrap();
                let got: Vec<u64> = page.items.iter().map(|d| d.id).collect();
                let want: Vec<u64> = expected.iter().skip(offset).take(limit).copied().collect();
                assert_eq!(got, want, "{q:?}");
                assert_eq!(page.total, expected.len() as u64, "{q:?}");
            }
        }
    }
}

#[test]
fn prefix_end_is_the_first_key_past_the_prefix() {
    use crate::keys::prefix_end;
    assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
    assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
    assert_eq!(prefix_end(&[0xff, 0xff]), None);
    assert_eq!(prefix_end(&[]), None);
}

#[test]
fn removing_a_session_owned_elsewhere_changes_nothing() {
    let (_d, reg) = store();
    let connect = |s: SessionRecord| Command::ClientConnected {
        session: s,
        ip: None,
        at: 1,
        clean_start: false,
    };
    one(&reg, connect(session("moved", 1, 60)));
    // The session resumed on node 2 before node 1's expiry was applied.
    one(
        &reg,
        connect(SessionRecord {
            node_id: 2,
            ..session("moved", 7, 60)
        }),
    );
    one(
        &reg,
        Command::RemoveSession {
            client_id: "moved".into(),
            owner: Some(1),
        },
    );
    assert_eq!(reg.session("moved").unwrap().unwrap().node_id, 2, "kept");
    one(
        &reg,
        Command::RemoveSession {
            client_id: "moved".into(),
            owner: Some(2),
        },
    );
    assert_eq!(reg.session("moved").unwrap(), None, "removed by its owner");
}

#[test]
fn a_retried_writer_entry_is_answered_not_applied_again() {
    let (_d, reg) = store();
    let tagged = |seq: u64, cmd: Command| Command::Tagged {
        origin: 2,
        epoch: 7,
        seq,
        cmd: Box::new(cmd),
    };
    let create = || Command::CreateProduct {
        product: product("p", "aaaaaaaaaa"),
    };
    let first = one(&reg, tagged(1, create()));
    assert_eq!(first, CommandResult::Created { id: 1 });
    // The same entry again (the leader changed before the writer heard back): same answer,
    // no second product, no "already exists".
    assert_eq!(one(&reg, tagged(1, create())), first);
    assert_eq!(reg.products(&Default::default()).unwrap().total, 1);
    // The next entry applies; a late copy of an older one is refused, not applied.
    let next = Command::CreateProduct {
        product: product("q", "bbbbbbbbbb"),
    };
    assert_eq!(one(&reg, tagged(2, next)), CommandResult::Created { id: 2 });
    assert!(one(&reg, tagged(1, create())).rejected().is_some());
    // A new start of the node (another epoch) begins its sequence again.
    let restarted = Command::Tagged {
        origin: 2,
        epoch: 8,
        seq: 1,
        cmd: Box::new(Command::CreateProduct {
            product: product("r", "cccccccccc"),
        }),
    };
    assert_eq!(one(&reg, restarted), CommandResult::Created { id: 3 });
}
