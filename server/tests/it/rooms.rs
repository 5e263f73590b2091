//! Rooms in the server core, on both backends: the event format of each room version (hashes,
//! signatures, event and room IDs, redaction), authorization failures, and state resolution of
//! a fork.

use std::collections::BTreeMap;

use grove_server::{
    Error, Homeserver, NodeKey, ServerConfig,
    rooms::{EventTemplate, auth::RemoteVerdict, timeline::Viewer},
    storage::Backend,
    testing::TestDb,
    userdata::Profile,
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
    RoomVersionId, UserId,
    api::client::room::create_room::v3::{Request as CreateRoom, RoomPreset},
    canonical_json::redact,
    events::StateEventType,
    serde::{Base64, Raw},
    signatures::{Verified, reference_hash, verify_event},
};
use serde_json::{Value, json};

const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];
const VERSIONS: [RoomVersionId; 3] = [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];

fn subscribe() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GROVE_TEST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

struct Node {
    hs: Homeserver,
    _db: TestDb,
}

impl Node {
    async fn start(backend: Backend) -> Node {
        subscribe();
        let db = TestDb::new(backend).await;
        let key = NodeKey::from_seed([7; 32]).expect("key");
        let config = ServerConfig::new(key.server_name(), db.url.clone());
        let hs = Homeserver::open(config, key).await.expect("open");
        Node { hs, _db: db }
    }

    fn user(&self, name: &str) -> OwnedUserId {
        UserId::parse(format!("@{name}:{}", self.hs.config.server_name)).expect("user id")
    }

    async fn create(
        &self,
        creator: &UserId,
        version: RoomVersionId,
        setup: impl FnOnce(&mut CreateRoom),
    ) -> OwnedRoomId {
        let mut request = CreateRoom::new();
        request.room_version = Some(version);
        setup(&mut request);
        self.hs
            .rooms
            .create_room(creator, &request, &Profile::default())
            .await
            .expect("room created")
    }

    async fn say(&self, room: &RoomId, sender: &UserId, body: &str) -> Result<OwnedEventId, Error> {
        self.hs
            .rooms
            .send(
                room,
                sender,
                None,
                EventTemplate::message(
                    "m.room.message",
                    json!({ "msgtype": "m.text", "body": body }),
                ),
            )
            .await
    }

    async fn pdu_object(&self, event_id: &str) -> CanonicalJsonObject {
        let pdu = self
            .hs
            .rooms
            .pdu(event_id)
            .await
            .expect("read")
            .expect("stored");
        pdu.to_canonical().expect("canonical")
    }

    async fn state_event_id(&self, room: &RoomId, user: &UserId, kind: &str) -> OwnedEventId {
        let state = self.hs.rooms.room_state(room, user).await.expect("state");
        state
            .iter()
            .map(|raw| raw.deserialize_as_unchecked::<Value>().expect("json"))
            .find(|e| e["type"] == kind)
            .and_then(|e| e["event_id"].as_str().map(str::to_owned))
            .and_then(|id| OwnedEventId::try_from(id).ok())
            .expect("state event present")
    }
}

fn key_map(node: &Node) -> BTreeMap<String, BTreeMap<String, Base64>> {
    let mut keys = BTreeMap::new();
    keys.insert(
        node.hs.key.key_id(),
        Base64::new(node.hs.key.public_bytes().to_vec()),
    );
    let mut map = BTreeMap::new();
    map.insert(node.hs.config.server_name.to_string(), keys);
    map
}

/// Checks the event format of one room version: IDs, hashes, signatures and redaction.
async fn check_event_format(node: &Node, version: RoomVersionId) {
    let rules = version.rules().expect("rules");
    let alice = node.user("alice");
    let room = node.create(&alice, version.clone(), |_| {}).await;
    let create_id = node.state_event_id(&room, &alice, "m.room.create").await;
    let create = node.pdu_object(create_id.as_str()).await;
    match version {
        RoomVersionId::V12 => {
            assert_eq!(
                room.as_str(),
                format!("!{}", create_id.localpart()),
                "v12 room id"
            );
            assert!(
                !create.contains_key("room_id"),
                "v12 create event has no room_id"
            );
        }
        _ => assert!(
            room.server_name().is_some(),
            "{version}: room id names a server"
        ),
    }
    let content = match create.get("content") {
        Some(CanonicalJsonValue::Object(c)) => c.clone(),
        other => panic!("create content: {other:?}"),
    };
    assert_eq!(
        content.contains_key("creator"),
        version == RoomVersionId::V10,
        "{version}: creator field"
    );

    let message = node.say(&room, &alice, "hello").await.expect("sent");
    let object = node.pdu_object(message.as_str()).await;
    let hash = reference_hash(&object, &rules).expect("hash");
    assert_eq!(
        message.as_str(),
        format!("${hash}"),
        "{version}: event id is the reference hash"
    );
    assert_eq!(
        verify_event(&key_map(node), &object, &rules).expect("verifies"),
        Verified::All,
        "{version}: signature and content hash"
    );

    // Redaction keeps the event ID and strips the content as the version's rules say.
    node.hs
        .rooms
        .redact(&room, &alice, message.as_str(), Some("oops"), None)
        .await
        .expect("redacted");
    let redacted = node.pdu_object(message.as_str()).await;
    let expected = redact(object, &rules.redaction, None).expect("ruma redacts");
    assert_eq!(redacted, expected, "{version}: stored redacted form");
    assert_eq!(
        format!("${}", reference_hash(&redacted, &rules).expect("hash")),
        message.as_str(),
        "{version}: redaction keeps the reference hash"
    );
    assert_eq!(
        verify_event(&key_map(node), &redacted, &rules).expect("verifies"),
        Verified::Signatures,
        "{version}: redacted event keeps valid signatures only"
    );
}

#[tokio::test]
async fn event_format_per_room_version() {
    for backend in BACKENDS {
        let node = Node::start(backend).await;
        for version in VERSIONS {
            check_event_format(&node, version).await;
        }
    }
}

/// An action that must be refused with `M_FORBIDDEN` and leave the stream untouched.
async fn check_forbidden(node: &Node, what: &str, result: Result<impl std::fmt::Debug, Error>) {
    match result {
        Err(Error::Forbidden(_)) => {}
        other => panic!("{what}: expected Forbidden, got {other:?}"),
    }
    let _ = node;
}

#[tokio::test]
async fn auth_rejections_store_nothing() {
    for backend in BACKENDS {
        let node = Node::start(backend).await;
        for version in VERSIONS {
            let alice = node.user("alice");
            let bob = node.user("bob");
            let eve = node.user("eve");
            let room = node
                .create(&alice, version.clone(), |r| {
                    r.preset = Some(RoomPreset::PrivateChat)
                })
                .await;
            node.hs
                .rooms
                .change_membership(
                    &room,
                    &alice,
                    &bob,
                    grove_server::rooms::membership::MembershipChange::Invite,
                    None,
                    false,
                )
                .await
                .expect("invite");
            node.hs
                .rooms
                .join(&room, &bob, &Profile::default())
                .await
                .expect("bob joins");
            let before = node.hs.notifier.current();

            check_forbidden(&node, "stranger sends", node.say(&room, &eve, "hi").await).await;
            check_forbidden(
                &node,
                "member without power names the room",
                node.hs
                    .rooms
                    .send_state(&room, &bob, "m.room.name", "", json!({ "name": "mine" }))
                    .await,
            )
            .await;
            check_forbidden(
                &node,
                "stranger joins an invite-only room",
                node.hs.rooms.join(&room, &eve, &Profile::default()).await,
            )
            .await;
            check_forbidden(
                &node,
                "member kicks the creator",
                node.hs
                    .rooms
                    .change_membership(
                        &room,
                        &bob,
                        &alice,
                        grove_server::rooms::membership::MembershipChange::Kick,
                        None,
                        false,
                    )
                    .await,
            )
            .await;
            check_forbidden(
                &node,
                "member redacts another's event",
                async {
                    let id = node.say(&room, &alice, "mine").await?;
                    node.hs
                        .rooms
                        .redact(&room, &bob, id.as_str(), None, None)
                        .await
                }
                .await,
            )
            .await;
            // Only alice's message above was stored.
            assert_eq!(
                node.hs.notifier.current().0,
                before.0 + 1,
                "{version}: nothing else stored"
            );
            let name = node
                .hs
                .rooms
                .state_content(&room, &StateEventType::RoomName, "")
                .await
                .expect("read");
            assert_eq!(name, None, "{version}: name unchanged");
        }
    }
}

/// Bob changes the topic while, on another branch, alice takes bob's power away: resolution
/// applies the power change first, so bob's topic fails auth and the old topic stays.
async fn check_power_beats_topic(node: &Node, version: RoomVersionId) {
    let alice = node.user("alice");
    let bob = node.user("bob");
    let privileged = version == RoomVersionId::V12;
    let room = node
        .create(&alice, version.clone(), |r| {
            r.preset = Some(RoomPreset::PublicChat);
            r.topic = Some("original".into());
            let users = if privileged {
                json!({ bob.as_str(): 50 })
            } else {
                json!({ alice.as_str(): 100, bob.as_str(): 50 })
            };
            r.power_level_content_override = Some(Raw::from_json(
                serde_json::value::to_raw_value(&json!({ "users": users })).expect("raw"),
            ));
        })
        .await;
    node.hs
        .rooms
        .join(&room, &bob, &Profile::default())
        .await
        .expect("bob joins");
    let (head, gaps) = node
        .hs
        .rooms
        .extremities_and_gaps(&room)
        .await
        .expect("head");
    assert_eq!(head.len(), 1);
    assert!(gaps.is_empty());
    let fork_point = head.clone();

    let topic = node
        .hs
        .rooms
        .build_over(
            &room,
            &bob,
            &EventTemplate::state("m.room.topic", "", json!({ "topic": "bob's" })),
            &head,
        )
        .await
        .expect("topic built");
    let demote_users = if privileged {
        json!({})
    } else {
        json!({ alice.as_str(): 100 })
    };
    let demote = node
        .hs
        .rooms
        .build_over(
            &room,
            &alice,
            &EventTemplate::state(
                "m.room.power_levels",
                "",
                json!({ "users": demote_users, "state_default": 50 }),
            ),
            &head,
        )
        .await
        .expect("power change built");
    assert_eq!(
        node.hs
            .rooms
            .add_pdu(&room, topic)
            .await
            .expect("topic added"),
        RemoteVerdict::Accepted
    );
    let topic_now = node
        .hs
        .rooms
        .state_content(&room, &StateEventType::RoomTopic, "")
        .await
        .expect("read");
    assert_eq!(
        topic_now,
        Some(json!({ "topic": "bob's" })),
        "{version}: topic before the fork merges"
    );
    assert_eq!(
        node.hs
            .rooms
            .add_pdu(&room, demote)
            .await
            .expect("demote added"),
        RemoteVerdict::Accepted
    );

    let (head, _) = node
        .hs
        .rooms
        .extremities_and_gaps(&room)
        .await
        .expect("head");
    assert_eq!(head.len(), 2, "{version}: two forward extremities");
    let topic_now = node
        .hs
        .rooms
        .state_content(&room, &StateEventType::RoomTopic, "")
        .await
        .expect("read");
    assert_eq!(
        topic_now,
        Some(json!({ "topic": "original" })),
        "{version}: resolved topic"
    );

    // The next local event merges the fork, and bob can no longer set state.
    node.say(&room, &alice, "merged").await.expect("sent");
    let (head, _) = node
        .hs
        .rooms
        .extremities_and_gaps(&room)
        .await
        .expect("head");
    assert_eq!(head.len(), 1, "{version}: fork merged");
    let refused = node
        .hs
        .rooms
        .send_state(&room, &bob, "m.room.topic", "", json!({ "topic": "again" }))
        .await;
    // A late event on the old branch: allowed by its own past, not by the present.
    let late = node
        .hs
        .rooms
        .build_over(
            &room,
            &bob,
            &EventTemplate::state("m.room.topic", "", json!({ "topic": "late" })),
            &fork_point,
        )
        .await
        .expect("late topic built");
    let verdict = node
        .hs
        .rooms
        .add_pdu(&room, late)
        .await
        .expect("late added");
    assert!(
        matches!(verdict, RemoteVerdict::SoftFailed(_)),
        "{version}: {verdict:?}"
    );
    // An outsider's message is rejected outright.
    let eve = node.user("eve");
    let (head, _) = node
        .hs
        .rooms
        .extremities_and_gaps(&room)
        .await
        .expect("head");
    let intrusion = node
        .hs
        .rooms
        .build_over(
            &room,
            &eve,
            &EventTemplate::message("m.room.message", json!({ "body": "hi" })),
            &head,
        )
        .await
        .expect("built");
    let verdict = node
        .hs
        .rooms
        .add_pdu(&room, intrusion)
        .await
        .expect("added");
    assert!(
        matches!(verdict, RemoteVerdict::Rejected(_)),
        "{version}: {verdict:?}"
    );
    let topic_now = node
        .hs
        .rooms
        .state_content(&room, &StateEventType::RoomTopic, "")
        .await
        .expect("read");
    assert_eq!(
        topic_now,
        Some(json!({ "topic": "original" })),
        "{version}: neither changed state"
    );
    let viewer = Viewer {
        user: &alice,
        device: None,
    };
    let page = node
        .hs
        .rooms
        .messages(
            &room,
            viewer,
            None,
            None,
            grove_server::rooms::Direction::Backward,
            3,
            &Default::default(),
        )
        .await
        .expect("messages");
    let last: Value = page.chunk[0].deserialize_as_unchecked().expect("json");
    assert_eq!(
        last["content"]["body"], "merged",
        "{version}: failed events stay out of the timeline"
    );
    assert!(
        matches!(refused, Err(Error::Forbidden(_))),
        "{version}: bob demoted: {refused:?}"
    );
}

#[tokio::test]
async fn state_resolution_of_a_fork() {
    for backend in BACKENDS {
        let node = Node::start(backend).await;
        for version in VERSIONS {
            check_power_beats_topic(&node, version).await;
        }
    }
}

#[tokio::test]
async fn send_is_idempotent_per_transaction_and_survives_reopen() {
    for backend in BACKENDS {
        subscribe();
        let db = TestDb::new(backend).await;
        let seed = [9; 32];
        let open = || async {
            let key = NodeKey::from_seed(seed).expect("key");
            Homeserver::open(ServerConfig::new(key.server_name(), db.url.clone()), key)
                .await
                .expect("open")
        };
        let hs = open().await;
        let alice = UserId::parse(format!("@alice:{}", hs.config.server_name)).expect("user");
        let room = hs
            .rooms
            .create_room(&alice, &CreateRoom::new(), &Profile::default())
            .await
            .expect("created");
        let template = EventTemplate::message(
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "once" }),
        );
        let first = hs
            .rooms
            .send(&room, &alice, Some(("DEV", "t1")), template.clone())
            .await
            .expect("sent");
        let again = hs
            .rooms
            .send(&room, &alice, Some(("DEV", "t1")), template.clone())
            .await
            .expect("sent");
        assert_eq!(first, again, "same transaction, same event");
        let other = hs
            .rooms
            .send(&room, &alice, Some(("DEV2", "t1")), template.clone())
            .await
            .expect("sent");
        assert_ne!(
            first, other,
            "another device's transaction is another event"
        );
        // Two sends of one new transaction at once: one event, both told its ID.
        let twice = json!({ "msgtype": "m.text", "body": "twice" });
        let (x, y) = tokio::join!(
            hs.rooms.send(
                &room,
                &alice,
                Some(("DEV", "t2")),
                EventTemplate::message("m.room.message", twice.clone()),
            ),
            hs.rooms.send(
                &room,
                &alice,
                Some(("DEV", "t2")),
                EventTemplate::message("m.room.message", twice),
            )
        );
        assert_eq!(
            x.expect("sent"),
            y.expect("sent"),
            "one transaction, one event"
        );
        hs.close().await;

        let hs = open().await;
        let again = hs
            .rooms
            .send(&room, &alice, Some(("DEV", "t1")), template)
            .await
            .expect("sent");
        assert_eq!(first, again, "transaction remembered across restarts");
        let (head, gaps) = hs.rooms.extremities_and_gaps(&room).await.expect("head");
        assert_eq!(
            (head.len(), gaps.len()),
            (1, 0),
            "reloaded DAG: one extremity, no gaps"
        );
        let viewer = Viewer {
            user: &alice,
            device: None,
        };
        let page = hs
            .rooms
            .messages(
                &room,
                viewer,
                None,
                None,
                grove_server::rooms::Direction::Backward,
                10,
                &Default::default(),
            )
            .await
            .expect("messages");
        assert_eq!(page.chunk.len(), 10.min(page.chunk.len()));
        let bodies: Vec<Value> = page
            .chunk
            .iter()
            .map(|e| e.deserialize_as_unchecked::<Value>().expect("json"))
            .filter(|e| e["type"] == "m.room.message")
            .map(|e| e["content"]["body"].clone())
            .collect();
        assert_eq!(
            bodies,
            vec![json!("twice"), json!("once"), json!("once")],
            "three messages after reopen"
        );
        hs.close().await;
    }
}

/// A member with ordinary power can write any number of state events; the rows that store the
/// state must grow with the number of changes, not with changes times the state's size, and
/// the memory of loaded state must stay within its budget.
#[tokio::test]
async fn state_rows_grow_linearly_and_loaded_state_stays_within_its_budget() {
    const CHANGES: usize = 2_400;
    const KEYS: usize = 2_000;
    for backend in BACKENDS {
        let node = Node::start(backend).await;
        let alice = node.user("alice");
        let room = node.create(&alice, RoomVersionId::V11, |_| {}).await;
        let count = async |table: &str| -> i64 {
            let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(node.hs.storage.pool())
                .await
                .expect("count");
            n
        };
        let before = count("state_group_entries").await;
        for i in 0..CHANGES {
            // Most keys are new; the last ones replace earlier values.
            node.hs
                .rooms
                .send_state(
                    &room,
                    &alice,
                    "org.example.counter",
                    &format!("k{}", i % KEYS),
                    json!({ "n": i }),
                )
                .await
                .expect("state event");
        }
        let entries = count("state_group_entries").await - before;
        let groups = count("state_groups").await;
        assert!(
            entries <= 3 * CHANGES as i64,
            "{backend:?}: {entries} entries for {CHANGES} changes"
        );
        assert!(
            groups <= CHANGES as i64 + 64,
            "{backend:?}: {groups} groups"
        );
        let (bytes, _) = node.hs.rooms.state_cache_usage();
        assert!(
            bytes <= grove_server::rooms::GROUP_CACHE_BYTES,
            "{backend:?}: {bytes} bytes of cached state"
        );

        // A second server over the same database loads the state from the rows alone.
        let key = NodeKey::from_seed([7; 32]).expect("key");
        let config = ServerConfig::new(key.server_name(), node._db.url.clone());
        let fresh = Homeserver::open(config, key).await.expect("reopen");
        let state = fresh.rooms.room_state(&room, &alice).await.expect("state");
        let counters = state
            .iter()
            .filter(|e| {
                e.get_field::<String>("type").ok().flatten().as_deref()
                    == Some("org.example.counter")
            })
            .count();
        assert_eq!(counters, KEYS, "{backend:?}");
        let replaced = fresh
            .rooms
            .room_state_event(
                &room,
                &alice,
                &StateEventType::from("org.example.counter"),
                "k7",
            )
            .await
            .expect("k7");
        let content: Value = replaced
            .get_field("content")
            .expect("content")
            .expect("content present");
        assert_eq!(content, json!({ "n": KEYS + 7 }), "{backend:?}");
        let kept = fresh
            .rooms
            .room_state_event(
                &room,
                &alice,
                &StateEventType::from("org.example.counter"),
                &format!("k{}", KEYS - 1),
            )
            .await
            .expect("last key");
        let content: Value = kept
            .get_field("content")
            .expect("content")
            .expect("present");
        assert_eq!(content, json!({ "n": KEYS - 1 }), "{backend:?}");
    }
}
