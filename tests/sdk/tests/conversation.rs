//! Two people talking through Element X's engine on one node, each on a new device syncing by
//! simplified sliding sync: end-to-end encrypted messages that decrypt on the other side, and
//! a timeline's edits, reactions and read receipts reaching the other person.

use anyhow::{Context, Result, bail};
use grove_sdk_tests::{body, event_where, eventually, new_user, start_sync, subscribe};
use matrix_sdk::{
    Client, Room, RoomState,
    room::edit::EditedContent,
    ruma::{
        api::client::{receipt::create_receipt::v3::ReceiptType, room::create_room},
        events::{
            InitialStateEvent,
            room::{
                encryption::RoomEncryptionEventContent,
                message::{RoomMessageEventContent, RoomMessageEventContentWithoutRelation},
            },
        },
    },
};
use matrix_sdk_ui::{
    sync_service::SyncService,
    timeline::{RoomExt, Timeline},
};

/// A room `owner` makes with `guest` invited (encrypted from its creation when `encrypted`),
/// joined by `guest` once the invite reached them; both sides' views of it.
async fn room_for_two(owner: &Client, guest: &Client, encrypted: bool) -> Result<(Room, Room)> {
    let guest_id = guest.user_id().context("user id")?.to_owned();
    let mut request = create_room::v3::Request::new();
    request.name = Some("for two".to_owned());
    request.invite = vec![guest_id];
    if encrypted {
        request.initial_state = vec![
            InitialStateEvent::with_empty_state_key(
                RoomEncryptionEventContent::with_recommended_defaults(),
            )
            .to_raw_any(),
        ];
    }
    let room = owner.create_room(request).await?;
    let room_id = room.room_id().to_owned();
    let invited = eventually("the invite reaches the guest", async || {
        Ok(guest
            .get_room(&room_id)
            .filter(|r| r.state() == RoomState::Invited))
    })
    .await?;
    invited.join().await?;
    eventually("the owner sees the guest join", async || {
        Ok((room.joined_members_count() == 2).then_some(()))
    })
    .await?;
    let theirs = eventually("the guest's copy of the room is joined", async || {
        Ok(guest
            .get_room(&room_id)
            .filter(|r| r.state() == RoomState::Joined))
    })
    .await?;
    Ok((room, theirs))
}

/// Opens `room` as Element X does: a room subscription, then its timeline.
async fn open(sync: &SyncService, room: &Room) -> Result<Timeline> {
    sync.room_list_service()
        .subscribe_to_rooms(&[room.room_id()])
        .await;
    Ok(room.timeline().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_messages_decrypt_on_the_other_side() -> Result<()> {
    subscribe();
    let alice = new_user("alice").await?;
    let bob = new_user("bob").await?;
    let alice_sync = start_sync(&alice).await?;
    let bob_sync = start_sync(&bob).await?;
    let (room, bobs) = room_for_two(&alice, &bob, true).await?;
    if !room.latest_encryption_state().await?.is_encrypted() {
        bail!("the room is not encrypted");
    }
    let bob_timeline = open(&bob_sync, &bobs).await?;
    let alice_timeline = open(&alice_sync, &room).await?;

    room.send(RoomMessageEventContent::text_plain("under the floorboards"))
        .await?;
    let got = event_where(&bob_timeline, "bob reads alice's message", |e| {
        body(e) == Some("under the floorboards")
    })
    .await?;
    if got.encryption_info().is_none() {
        bail!("alice's message reached bob unencrypted");
    }

    // And back: bob's answer is encrypted to alice's device.
    bobs.send(RoomMessageEventContent::text_plain("found it"))
        .await?;
    let got = event_where(&alice_timeline, "alice reads bob's answer", |e| {
        body(e) == Some("found it")
    })
    .await?;
    if got.encryption_info().is_none() {
        bail!("bob's answer reached alice unencrypted");
    }
    alice_sync.stop().await;
    bob_sync.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_reactions_and_read_receipts_reach_the_other_side() -> Result<()> {
    subscribe();
    let alice = new_user("alice").await?;
    let bob = new_user("bob").await?;
    let bob_id = bob.user_id().context("user id")?.to_owned();
    let alice_sync = start_sync(&alice).await?;
    let bob_sync = start_sync(&bob).await?;
    let (room, bobs) = room_for_two(&alice, &bob, false).await?;
    let alice_timeline = open(&alice_sync, &room).await?;
    let bob_timeline = open(&bob_sync, &bobs).await?;

    alice_timeline
        .send(RoomMessageEventContent::text_plain("lunch at noon").into())
        .await?;
    let sent = event_where(&alice_timeline, "alice's message is sent", |e| {
        body(e) == Some("lunch at noon") && e.event_id().is_some()
    })
    .await?;
    let event_id = sent.event_id().context("event id")?.to_owned();
    let seen = event_where(&bob_timeline, "bob sees the message", |e| {
        e.event_id() == Some(&event_id)
    })
    .await?;

    // Alice edits it: bob's timeline shows the new text in place of the old.
    alice_timeline
        .edit(
            &sent.identifier(),
            EditedContent::RoomMessage(RoomMessageEventContentWithoutRelation::text_plain(
                "lunch at one",
            )),
        )
        .await?;
    event_where(&bob_timeline, "bob sees the edit", |e| {
        e.event_id() == Some(&event_id)
            && body(e) == Some("lunch at one")
            && e.content().as_message().is_some_and(|m| m.is_edited())
    })
    .await?;

    // Bob reacts: alice sees his reaction on her message.
    bob_timeline
        .toggle_reaction(&seen.identifier(), "👍")
        .await?;
    event_where(&alice_timeline, "alice sees bob's reaction", |e| {
        e.event_id() == Some(&event_id)
            && e.content()
                .reactions()
                .and_then(|by_key| by_key.get("👍"))
                .is_some_and(|senders| senders.contains_key(&bob_id))
    })
    .await?;

    // Alice writes again and bob reads it: his receipt moves to her newest message.
    alice_timeline
        .send(RoomMessageEventContent::text_plain("see you there").into())
        .await?;
    let newest = event_where(&bob_timeline, "bob sees the second message", |e| {
        body(e) == Some("see you there") && e.event_id().is_some()
    })
    .await?;
    let newest_id = newest.event_id().context("event id")?.to_owned();
    bob_timeline
        .send_single_receipt(ReceiptType::Read, newest_id.clone())
        .await?;
    event_where(&alice_timeline, "alice sees bob's read receipt", |e| {
        e.event_id() == Some(&newest_id) && e.read_receipts().contains_key(&bob_id)
    })
    .await?;
    alice_sync.stop().await;
    bob_sync.stop().await;
    Ok(())
}
