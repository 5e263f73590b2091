//! The outgoing federation queues: which events are queued for which server, and that messages
//! in rooms no other server is in cost no write.

use grove_server::{
    Homeserver, NodeKey, ServerConfig, rooms::EventTemplate, storage::Backend, testing::TestDb,
    userdata::Profile,
};
use ruma::{RoomId, ServerName, UserId, api::client::room::create_room::v3::Request as CreateRoom};
use serde_json::json;

async fn persisted_cursor(hs: &Homeserver) -> i64 {
    let (position,): (i64,) = sqlx::query_as("SELECT position FROM federation_cursor WHERE id = 1")
        .fetch_one(hs.storage.pool())
        .await
        .expect("cursor");
    position
}

async fn say(hs: &Homeserver, room: &RoomId, sender: &UserId, body: &str) {
    hs.rooms
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
        .expect("sent");
}

#[tokio::test]
async fn local_messages_are_skipped_without_a_write_and_a_state_event_is_recorded() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let key = NodeKey::from_seed([9; 32]).expect("key");
        let config = ServerConfig::new(key.server_name(), db.url.clone());
        let hs = Homeserver::open(config, key).await.expect("open");
        let ours = hs.config.server_name.clone();
        let other_name = ServerName::parse("other.example").expect("name");
        let other: &ServerName = &other_name;
        let alice = UserId::parse(format!("@alice:{ours}")).expect("user");
        let bob = UserId::parse("@bob:other.example").expect("user");
        let queue = &hs.federation_queue;
        let room = hs
            .rooms
            .create_room(&alice, &CreateRoom::new(), &Profile::default())
            .await
            .expect("room");

        // The first fill reads the persisted cursor under the writer lock and records it.
        let (touched, _) = queue.fill(&ours, 100).await.expect("fill");
        assert!(touched.is_empty(), "{backend:?}: {touched:?}");
        let recorded = persisted_cursor(&hs).await;
        assert_eq!(recorded, hs.notifier.current().0, "{backend:?}");

        // Messages of a room no other server is in: skipped, and nothing is written.
        for i in 0..3 {
            say(&hs, &room, &alice, &format!("alone {i}")).await;
        }
        let (touched, more) = queue.fill(&ours, 100).await.expect("fill");
        assert!(touched.is_empty() && !more, "{backend:?}: {touched:?}");
        assert_eq!(
            persisted_cursor(&hs).await,
            recorded,
            "{backend:?}: no write"
        );
        assert!(
            queue.peek(other, 10).await.expect("peek").is_empty(),
            "{backend:?}"
        );

        // A state event naming another server's user: queued for that server, and the cursor
        // is recorded past it (and past the skipped messages), so a restart never offers the
        // messages to a server that joined after them.
        let invite = hs
            .rooms
            .send(
                &room,
                &alice,
                None,
                EventTemplate::state(
                    "m.room.member",
                    bob.as_str(),
                    json!({ "membership": "invite" }),
                ),
            )
            .await
            .expect("invite");
        say(&hs, &room, &alice, "after the invite").await;
        let (touched, _) = queue.fill(&ours, 100).await.expect("fill");
        assert!(touched.contains(other), "{backend:?}: {touched:?}");
        let queued = queue.peek(other, 10).await.expect("peek");
        let ids: Vec<_> = queued.iter().map(|q| q.event_id.clone()).collect();
        assert_eq!(
            ids,
            vec![invite],
            "{backend:?}: only the invite goes to other.example"
        );
        assert!(persisted_cursor(&hs).await > recorded, "{backend:?}");
        hs.close().await;
    }
}
