//! A server the room's `m.room.server_acl` denies is refused on every federation endpoint
//! about the room, its PDUs and EDUs are dropped, and the room's events are no longer sent to
//! it.

use grove_server::{rooms::EventTemplate, storage::Backend};
use http::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Scene, assert_refused};
use crate::support::{enc, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_the_acl_denies_is_refused_everywhere() {
    let scene = Scene::new(Backend::Sqlite).await;
    let room = scene.shared_room(json!({})).await;
    let before = scene.victim.send_text(&scene.alice, &room, "before").await;
    let evil = scene.evil_name();
    let evil_server = ruma::ServerName::parse(&evil).expect("name");
    // Mallory's server holds the room's latest event, so what it forges needs nothing fetched.
    eventually("the hostile node has the last message", async || {
        let held = scene.evil.node().homeserver().rooms.pdu(&before).await;
        matches!(held, Ok(Some(_)))
            .then_some(())
            .ok_or("not yet".to_owned())
    })
    .await;
    let (message, message_id) = scene
        .forge(
            &room,
            &scene.mallory.user_id,
            &EventTemplate::message(
                "m.room.message",
                json!({ "msgtype": "m.text", "body": "denied" }),
            ),
            |_| {},
        )
        .await;
    let carol = format!("@carol:{}", scene.victim.server_name());
    let (invite, invite_id) = scene
        .forge(
            &room,
            &scene.mallory.user_id,
            &EventTemplate::state(
                "m.room.member",
                carol.clone(),
                json!({ "membership": "invite" }),
            ),
            |_| {},
        )
        .await;

    let (status, body) = scene
        .victim
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.server_acl/",
                enc(&room)
            ),
            Some(&scene.alice.token),
            json!({ "allow": ["*"], "deny": [evil], "allow_ip_literals": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A PDU in a transaction gets an error entry and is not stored.
    let answer = scene.send_txn("acl1", vec![message], Vec::new()).await;
    assert!(answer[&message_id]["error"].is_string(), "{answer}");
    assert!(scene.stored(&message_id).await.is_none());

    // Typing and receipts are dropped.
    let mut readers = serde_json::Map::new();
    readers.insert(
        scene.mallory.user_id.clone(),
        json!({ "event_ids": [before], "data": { "ts": 1 } }),
    );
    let mut receipts = serde_json::Map::new();
    receipts.insert(room.clone(), json!({ "m.read": readers }));
    let edus = vec![
        json!({ "edu_type": "m.typing", "content": {
            "room_id": room, "user_id": scene.mallory.user_id, "typing": true, "timeout": 10000 } }),
        json!({ "edu_type": "m.receipt", "content": receipts }),
    ];
    scene.send_txn("acl2", Vec::new(), edus).await;
    assert_eq!(
        scene
            .victim
            .metric("grove_federation_acl_refused_total{kind=\"edu\"}")
            .await,
        2.0
    );
    let sync = scene.victim.sync_now(&scene.alice, None).await;
    let ephemeral = &sync["rooms"]["join"][&room]["ephemeral"]["events"];
    assert!(
        !ephemeral.to_string().contains(&scene.mallory.user_id),
        "no typing or receipt from the denied server: {ephemeral}"
    );

    // Every request about the room is refused.
    let r = Scene::seg(&room);
    let e = enc(&before);
    let m = enc(&scene.mallory.user_id);
    let gme = json!({ "earliest_events": [], "latest_events": [before], "limit": 10 });
    let refused: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::GET,
            format!("/_matrix/federation/v1/event/{e}"),
            None,
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/backfill/{r}?v={e}&limit=10"),
            None,
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/state_ids/{r}?event_id={e}"),
            None,
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/state/{r}?event_id={e}"),
            None,
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/event_auth/{r}/{e}"),
            None,
        ),
        (
            Method::POST,
            format!("/_matrix/federation/v1/get_missing_events/{r}"),
            Some(gme),
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/make_join/{r}/{m}?ver=12"),
            None,
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/make_leave/{r}/{m}"),
            None,
        ),
        (
            Method::PUT,
            format!("/_matrix/federation/v2/send_join/{r}/{e}"),
            Some(json!({})),
        ),
        (
            Method::PUT,
            format!("/_matrix/federation/v2/send_leave/{r}/{e}"),
            Some(json!({})),
        ),
        (
            Method::PUT,
            format!("/_matrix/federation/v2/invite/{r}/{}", enc(&invite_id)),
            Some(json!({ "room_version": "12", "event": invite, "invite_room_state": [] })),
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/hierarchy/{r}"),
            None,
        ),
    ];
    for (method, path, body) in &refused {
        let answer = scene.ask(method.clone(), path, body.as_ref()).await;
        assert_refused(answer, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    assert!(
        scene
            .victim
            .metric("grove_federation_acl_refused_total{kind=\"request\"}")
            .await
            >= refused.len() as f64
    );
    assert!(
        scene
            .victim
            .metric("grove_federation_acl_refused_total{kind=\"pdu\"}")
            .await
            >= 1.0
    );

    // The room's new events are no longer sent to the denied server: its queue empties
    // without them reaching it.
    let withheld = scene
        .victim
        .send_text(&scene.alice, &room, "withheld")
        .await;
    let queue = &scene.victim.node().homeserver().federation_queue;
    eventually("the queue to the denied server drains", async || {
        let left = queue
            .peek(&evil_server, 50)
            .await
            .map_err(|e| e.to_string())?;
        left.is_empty()
            .then_some(())
            .ok_or(format!("{} queued", left.len()))
    })
    .await;
    let held = scene.evil.node().homeserver().rooms.pdu(&withheld).await;
    assert!(
        matches!(held, Ok(None)),
        "withheld event reached the denied server"
    );
    scene.stop().await;
}

#[test]
fn acl_rules_match_names_lists_globs_and_ip_literals() {
    use grove_server::rooms::acl::acl_allows;
    let check = |content: Value, server: &str| {
        acl_allows(
            &content.to_string(),
            &ruma::ServerName::parse(server).expect("name"),
        )
    };
    let deny = json!({ "allow": ["*"], "deny": ["evil.example", "*.bad.example", "ev?l.test"] });
    assert!(!check(deny.clone(), "evil.example"));
    assert!(
        !check(deny.clone(), "evil.example:8448"),
        "ports are ignored"
    );
    assert!(!check(deny.clone(), "a.bad.example"));
    assert!(!check(deny.clone(), "evxl.test"));
    assert!(check(deny.clone(), "good.example"));
    let allow = json!({ "allow": ["good.example", "*.friends.example"] });
    assert!(check(allow.clone(), "good.example"));
    assert!(check(allow.clone(), "a.friends.example"));
    assert!(!check(allow.clone(), "other.example"));
    let no_ip = json!({ "allow": ["*"], "allow_ip_literals": false });
    assert!(!check(no_ip.clone(), "127.0.0.1"));
    assert!(!check(no_ip.clone(), "[::1]:8448"));
    assert!(check(no_ip, "good.example"));
    assert!(
        !check(json!({}), "good.example"),
        "no allow list lets nobody in"
    );
    assert!(
        check(json!({ "allow": 5 }), "good.example"),
        "garbage decides nothing"
    );
}
