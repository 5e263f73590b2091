//! What a state event replaced (`unsigned.prev_content`, `prev_sender`, `replaces_state`), on
//! both backends: recorded when the event is stored, so every event of a large state carries
//! it wherever it is served, and worked out once, then recorded, for rows stored before.

use std::{collections::HashMap, time::Duration};

use grove_server::{
    Homeserver, NodeKey, ServerConfig,
    storage::Backend,
    sync::{SyncRequest, sync},
    testing::TestDb,
    userdata::Profile,
};
use ruma::{
    OwnedRoomId, OwnedUserId, UserId,
    api::client::{room::create_room::v3::Request as CreateRoom, sync::sync_events::v3::State},
};
use serde_json::{Value, json};

const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];
/// Keys written twice each. Every rewrite comes after its own state, so serving the state
/// means knowing what each of them replaced in as many different states: more than the 64
/// states one read would work out.
const KEYS: usize = 150;
const KIND: &str = "org.example.counter";

fn subscribe() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GROVE_TEST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

async fn open(db: &TestDb) -> Homeserver {
    let key = NodeKey::from_seed([9; 32]).expect("key");
    let config = ServerConfig::new(key.server_name(), db.url.clone());
    Homeserver::open(config, key).await.expect("open")
}

/// A room where `alice` set every key to `n = i`, then to `n = KEYS + i`: the room, alice,
/// the first events' IDs by key and the second events' IDs.
async fn rewritten_room(
    hs: &Homeserver,
) -> (
    OwnedRoomId,
    OwnedUserId,
    HashMap<String, String>,
    Vec<String>,
) {
    let alice = UserId::parse(format!("@alice:{}", hs.config.server_name)).expect("user");
    let room = hs
        .rooms
        .create_room(&alice, &CreateRoom::new(), &Profile::default())
        .await
        .expect("room");
    let mut first = HashMap::new();
    let mut second = Vec::new();
    for round in 0..2 {
        for i in 0..KEYS {
            let key = format!("k{i}");
            let id = hs
                .rooms
                .send_state(&room, &alice, KIND, &key, json!({ "n": round * KEYS + i }))
                .await
                .expect("state event");
            if round == 0 {
                first.insert(key, id.to_string());
            } else {
                second.push(id.to_string());
            }
        }
    }
    (room, alice, first, second)
}

/// The last counter of each key among `events` (a sync's timeline comes after its state) is
/// a rewrite that names the first write of its key.
#[track_caller]
fn check_replaced(what: &str, events: &[Value], alice: &UserId, first: &HashMap<String, String>) {
    let counters: HashMap<&str, &Value> = events
        .iter()
        .filter(|e| e["type"] == KIND)
        .map(|e| (e["state_key"].as_str().unwrap_or_default(), e))
        .collect();
    assert_eq!(counters.len(), KEYS, "{what}: every key");
    for event in counters.into_values() {
        let key = event["state_key"].as_str().unwrap_or_default();
        let n = event["content"]["n"].as_u64().unwrap_or_default();
        let unsigned = &event["unsigned"];
        assert_eq!(
            unsigned["prev_content"],
            json!({ "n": n - KEYS as u64 }),
            "{what}: {event}"
        );
        assert_eq!(unsigned["prev_sender"], alice.as_str(), "{what}: {event}");
        assert_eq!(
            unsigned["replaces_state"].as_str(),
            first.get(key).map(String::as_str),
            "{what}: {event}"
        );
    }
}

async fn room_state(hs: &Homeserver, room: &OwnedRoomId, user: &UserId) -> Vec<Value> {
    hs.rooms
        .room_state(room, user)
        .await
        .expect("state")
        .iter()
        .map(|e| e.deserialize_as::<Value>().expect("json"))
        .collect()
}

/// The state and timeline events of a user's initial sync of `room`.
async fn initial_sync(hs: &Homeserver, room: &OwnedRoomId, user: &UserId) -> Vec<Value> {
    let request = SyncRequest {
        user: user.to_owned(),
        device: "REPLACED".into(),
        since: None,
        full_state: false,
        filter: Default::default(),
        timeout: Duration::ZERO,
    };
    let response = sync(hs, &request).await.expect("sync");
    let joined = response.rooms.join.get(room).expect("the room is joined");
    let State::Before(state) = &joined.state else {
        panic!("state before the timeline expected");
    };
    state
        .events
        .iter()
        .map(|e| e.deserialize_as::<Value>().expect("json"))
        .chain(
            joined
                .timeline
                .events
                .iter()
                .map(|e| e.deserialize_as::<Value>().expect("json")),
        )
        .collect()
}

/// How many of `events` have nothing recorded of what they replaced.
async fn unrecorded(hs: &Homeserver, events: &[String]) -> usize {
    let mut n = 0;
    for id in events {
        let (replaced,): (Option<String>,) =
            sqlx::query_as("SELECT replaces_state FROM events WHERE event_id = $1")
                .bind(id)
                .fetch_one(hs.storage.pool())
                .await
                .expect("event row");
        n += usize::from(replaced.is_none());
    }
    n
}

#[tokio::test]
async fn every_event_of_a_large_state_carries_what_it_replaced() {
    subscribe();
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let hs = open(&db).await;
        let (room, alice, first, second) = rewritten_room(&hs).await;
        assert_eq!(unrecorded(&hs, &second).await, 0, "{backend:?}");
        let what = format!("{backend:?} state");
        check_replaced(&what, &room_state(&hs, &room, &alice).await, &alice, &first);
        let what = format!("{backend:?} initial sync");
        check_replaced(
            &what,
            &initial_sync(&hs, &room, &alice).await,
            &alice,
            &first,
        );

        // From the rows alone, with nothing in memory.
        hs.close().await;
        let fresh = open(&db).await;
        let what = format!("{backend:?} state after reopening");
        check_replaced(
            &what,
            &room_state(&fresh, &room, &alice).await,
            &alice,
            &first,
        );
        fresh.close().await;
    }
}

#[tokio::test]
async fn what_older_rows_replaced_is_worked_out_once_and_recorded() {
    subscribe();
    for backend in BACKENDS {
        let db = TestDb::new(backend).await;
        let hs = open(&db).await;
        let (room, alice, first, second) = rewritten_room(&hs).await;
        hs.close().await;
        let fresh = open(&db).await;
        // As a database from before the record existed left the rows.
        sqlx::query("UPDATE events SET replaces_state = NULL")
            .execute(fresh.storage.pool())
            .await
            .expect("forget what was recorded");
        assert_eq!(unrecorded(&fresh, &second).await, KEYS, "{backend:?}");
        // Each read works out a bounded part and records it; the rest follows.
        let mut reads = 0;
        let mut state = Vec::new();
        while reads < 5 && unrecorded(&fresh, &second).await > 0 {
            state = room_state(&fresh, &room, &alice).await;
            reads += 1;
        }
        assert_eq!(
            unrecorded(&fresh, &second).await,
            0,
            "{backend:?}: {reads} reads"
        );
        assert!(reads > 1, "{backend:?}: bounded work per read");
        let what = format!("{backend:?} state worked out");
        check_replaced(&what, &state, &alice, &first);
        // Once recorded, what the head holds in memory carries it too.
        let what = format!("{backend:?} initial sync worked out");
        check_replaced(
            &what,
            &initial_sync(&fresh, &room, &alice).await,
            &alice,
            &first,
        );
        fresh.close().await;
    }
}
