//! Backfill in the server core, on both backends: a node that joined a room late places the
//! history another node gives it under its timeline, in order and once, and takes only events
//! that lead back from what it lacks.

use std::collections::HashMap;

use grove_server::{
    Homeserver, NodeKey, ServerConfig,
    rooms::{
        Direction, EventTemplate, auth::RemoteVerdict, federated::JoinedRoom, timeline::Viewer,
    },
    storage::Backend,
    testing::TestDb,
    userdata::Profile,
};
use ruma::{CanonicalJsonObject, OwnedEventId, UserId, api::client::room::create_room::v3};
use serde_json::{Value, json};

async fn open(backend: Backend, seed: u8) -> (Homeserver, TestDb) {
    let db = TestDb::new(backend).await;
    let key = NodeKey::from_seed([seed; 32]).expect("key");
    let config = ServerConfig::new(key.server_name(), db.url.clone());
    (Homeserver::open(config, key).await.expect("open"), db)
}

fn objects(pdus: &[grove_server::rooms::Pdu]) -> Vec<CanonicalJsonObject> {
    pdus.iter()
        .map(|p| p.to_canonical().expect("canonical"))
        .collect()
}

async fn history_placed_behind_a_late_join(backend: Backend) {
    let (a, _a_db) = open(backend, 1).await;
    let (b, _b_db) = open(backend, 2).await;
    let alice = UserId::parse(format!("@alice:{}", a.config.server_name)).expect("alice");
    let bob = UserId::parse(format!("@bob:{}", b.config.server_name)).expect("bob");
    let mut request = v3::Request::new();
    request.preset = Some(v3::RoomPreset::PublicChat);
    let room = a
        .rooms
        .create_room(&alice, &request, &Profile::default())
        .await
        .expect("room");
    let say = async |body: String| {
        a.rooms
            .send(
                &room,
                &alice,
                None,
                EventTemplate::message(
                    "m.room.message",
                    json!({ "msgtype": "m.text", "body": body }),
                ),
            )
            .await
            .expect("sent")
    };
    for i in 0..30 {
        say(format!("before {i}")).await;
    }

    // Bob of B joins through A, which hands B the state and auth chain but no timeline.
    let (head, _) = a.rooms.extremities_and_gaps(&room).await.expect("head");
    let join = a
        .rooms
        .build_over(
            &room,
            &bob,
            &EventTemplate::state(
                "m.room.member",
                bob.as_str(),
                json!({ "membership": "join" }),
            ),
            &head,
        )
        .await
        .expect("join built");
    assert_eq!(
        a.rooms
            .add_pdu(&room, join.clone())
            .await
            .expect("join added"),
        RemoteVerdict::Accepted
    );
    let join_id = grove_server::rooms::builder::event_id_of(
        &join,
        &grove_server::rooms::builder::rules_for(&a.rooms.room_version(&room).await.expect("v"))
            .expect("rules"),
    )
    .expect("join id");
    let (state, chain) = a
        .rooms
        .state_and_auth_chain(&room, &join_id)
        .await
        .expect("state");
    let version = a.rooms.room_version(&room).await.expect("version");
    b.rooms
        .persist_joined_room(JoinedRoom {
            room: &room,
            version: &version,
            join,
            state: objects(&state),
            auth_chain: objects(&chain),
        })
        .await
        .expect("joined");
    // Said after the join: in the room and signed, but not history B lacks.
    let late = say("after the join".to_owned()).await;

    let frontier = b.rooms.backfill_frontier(&room).await.expect("frontier");
    assert_eq!(frontier, head, "B lacks what the join follows");
    let given = a
        .rooms
        .backfill_from(&room, &frontier, 100, &b.config.server_name)
        .await
        .expect("backfill answer");
    let mut answer = objects(&given);
    answer.push(
        a.rooms
            .pdu(late.as_str())
            .await
            .expect("read")
            .expect("late")
            .to_canonical()
            .expect("canonical"),
    );
    assert!(
        b.rooms
            .backfill_needs_state(&room, &answer)
            .await
            .expect("needs")
            .is_empty(),
        "the answer reaches the room's creation: every event's parents are in it"
    );
    let placed = b
        .rooms
        .add_backfilled(&room, &answer, &HashMap::new())
        .await
        .expect("placed");
    assert_eq!(
        placed,
        given.len(),
        "everything behind the join, nothing else"
    );
    assert!(
        b.rooms.pdu(late.as_str()).await.expect("read").is_none(),
        "the late message"
    );
    assert!(
        b.rooms
            .backfill_frontier(&room)
            .await
            .expect("frontier")
            .is_empty()
    );
    assert_eq!(
        b.rooms
            .add_backfilled(&room, &answer, &HashMap::new())
            .await
            .expect("again"),
        0,
        "placed once"
    );

    // Bob pages back from now: his join, then the history newest first, down to the creation.
    let page = b
        .rooms
        .messages(
            &room,
            Viewer {
                user: &bob,
                device: None,
            },
            None,
            None,
            Direction::Backward,
            100,
            &Default::default(),
        )
        .await
        .expect("messages");
    let events: Vec<Value> = page
        .chunk
        .iter()
        .map(|e| e.deserialize_as_unchecked::<Value>().expect("json"))
        .collect();
    let bodies: Vec<&str> = events
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    let expected: Vec<String> = (0..30).rev().map(|i| format!("before {i}")).collect();
    assert_eq!(bodies, expected);
    assert_eq!(
        events.first().map(|e| &e["event_id"]),
        Some(&json!(join_id))
    );
    assert_eq!(
        events.last().map(|e| &e["type"]),
        Some(&json!("m.room.create"))
    );
    assert_eq!(page.end, None, "nothing more to page through");
    let ids: Vec<OwnedEventId> = given.iter().map(|p| p.event_id.clone()).collect();
    assert!(
        ids.iter()
            .all(|id| events.iter().any(|e| e["event_id"] == json!(id)))
    );
}

#[tokio::test]
async fn history_is_placed_behind_a_late_join() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        history_placed_behind_a_late_join(backend).await;
    }
}
