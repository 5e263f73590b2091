//! The stripped state sent with an invite is the inviting server's claim: it is shown as
//! that server's, never as something a local user did, and never becomes room state.

use grove_server::storage::Backend;
use serde_json::json;

use super::{Scene, limits::invite};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stripped_state_is_shown_as_the_inviters_claim() {
    let scene = Scene::new(Backend::Sqlite).await;
    let room = scene
        .evil
        .create_room(&scene.mallory, json!({ "preset": "public_chat" }))
        .await;
    let alice = scene.alice.user_id.clone();
    let mallory = scene.mallory.user_id.clone();
    let claims = vec![
        json!({ "type": "m.room.create", "state_key": "", "sender": alice,
                "content": { "creator": alice, "room_version": "12" } }),
        json!({ "type": "m.room.name", "state_key": "", "sender": alice,
                "content": { "name": "Alice's own room" } }),
        json!({ "type": "m.room.member", "state_key": alice, "sender": alice,
                "content": { "membership": "join" } }),
        json!({ "type": "m.room.power_levels", "state_key": "", "sender": mallory,
                "content": { "users": { mallory.clone(): 100 } } }),
        json!({ "type": "m.room.topic", "state_key": "", "sender": mallory,
                "content": { "topic": "first claim" } }),
        json!({ "type": "m.room.topic", "state_key": "", "sender": mallory,
                "content": { "topic": "second claim" } }),
        json!("garbage"),
    ];
    invite(&scene, &room, &alice, 0, claims)
        .await
        .expect("invite taken");

    let sync = scene.victim.sync_now(&scene.alice, None).await;
    let state = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
    let events = state.as_array().expect("invite state");
    // Nothing is shown as sent by alice but the invite's target field; the name is there,
    // as mallory's claim.
    for event in events {
        if event["type"] == "m.room.member" && event["state_key"] == alice.as_str() {
            assert_eq!(event["content"]["membership"], "invite", "{state}");
            continue;
        }
        assert_ne!(event["sender"], alice.as_str(), "{state}");
    }
    let name = events
        .iter()
        .find(|e| e["type"] == "m.room.name")
        .expect("name shown");
    assert_eq!(name["sender"], mallory.as_str());
    assert!(
        events.iter().all(|e| e["type"] != "m.room.power_levels"),
        "{state}"
    );
    let topics = events
        .iter()
        .filter(|e| e["type"] == "m.room.topic")
        .count();
    assert_eq!(topics, 1, "{state}");
    // It is not room state: the node does not know the room.
    let room_id = ruma::RoomId::parse(&room).expect("room ID");
    let known = scene
        .victim
        .node()
        .homeserver()
        .rooms
        .is_known(&room_id)
        .await;
    assert!(matches!(known, Ok(false)));
    scene.stop().await;
}
