//! Element X's engine against a Grove node: password login, the room list in recency order
//! following new messages and invites, a list of 1,000 rooms loaded and scrolled, and a room's
//! timeline paged back to its creation.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{Stream, StreamExt, pin_mut};
use grove_sdk_tests::{eventually, login, new_user, subscribe, within};
use matrix_sdk::{
    Client, Room, RoomState,
    ruma::{
        OwnedRoomId, RoomId, api::client::room::create_room,
        events::room::message::RoomMessageEventContent,
    },
};
use matrix_sdk_ui::{
    eyeball_im::{Vector, VectorDiff},
    room_list_service::{RoomListItem, filters::new_filter_non_left},
    sync_service::SyncService,
    timeline::RoomExt,
};

async fn create_named(client: &Client, name: &str) -> Result<Room> {
    let mut request = create_room::v3::Request::new();
    request.name = Some(name.to_owned());
    Ok(client.create_room(request).await?)
}

async fn say(room: &Room, text: &str) -> Result<()> {
    room.send(RoomMessageEventContent::text_plain(text)).await?;
    Ok(())
}

/// Applies the list's diffs until `done` holds of the rooms it shows.
async fn watch_until(
    stream: &mut (impl Stream<Item = Vec<VectorDiff<RoomListItem>>> + Unpin),
    rooms: &mut Vector<RoomListItem>,
    what: &str,
    done: impl Fn(&Vector<RoomListItem>) -> bool,
) -> Result<()> {
    within(what, async {
        while !done(rooms) {
            let diffs = stream.next().await.context("room list stream ended")?;
            for diff in diffs {
                diff.apply(rooms);
            }
        }
        Ok(())
    })
    .await
    .with_context(|| format!("list shows {:?}", ids(rooms)))
}

fn ids(rooms: &Vector<RoomListItem>) -> Vec<OwnedRoomId> {
    rooms.iter().map(|r| r.room_id().to_owned()).collect()
}

/// Whether `expected` appear in this order (other rooms may sit between them).
fn in_order(rooms: &Vector<RoomListItem>, expected: &[&RoomId]) -> bool {
    let shown = ids(rooms);
    let positions: Option<Vec<usize>> = expected
        .iter()
        .map(|id| shown.iter().position(|s| s == id))
        .collect();
    positions.is_some_and(|p| p.windows(2).all(|w| w[0] < w[1]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_list_follows_recency_and_invites() -> Result<()> {
    subscribe();
    let setup = new_user("alice").await?;
    let alice = setup.user_id().context("user id")?.to_owned();
    let one = create_named(&setup, "one").await?;
    say(&one, "in one").await?;
    let two = create_named(&setup, "two").await?;
    say(&two, "in two").await?;
    let three = create_named(&setup, "three").await?;
    say(&three, "in three").await?;

    // The phone: a second device, logged in with the password, starting from nothing.
    let phone = login(&alice).await?;
    let sync = SyncService::builder(phone.clone()).build().await?;
    sync.start().await;
    let list = sync.room_list_service().all_rooms().await?;
    let (stream, controller) = list.entries_with_dynamic_adapters(50);
    controller.set_filter(Box::new(new_filter_non_left()));
    pin_mut!(stream);
    let mut rooms = Vector::new();
    watch_until(&mut stream, &mut rooms, "three rooms, newest first", |r| {
        in_order(r, &[three.room_id(), two.room_id(), one.room_id()])
    })
    .await?;

    // A message in the oldest room brings it to the top, within a second.
    let sent = Instant::now();
    say(&one, "bump").await?;
    watch_until(&mut stream, &mut rooms, "room one on top", |r| {
        in_order(r, &[one.room_id(), three.room_id(), two.room_id()])
    })
    .await?;
    let took = sent.elapsed();
    if took > Duration::from_secs(1) {
        bail!("the list followed a new message after {took:?}");
    }

    // Bob invites alice: the invite shows in the list as an invite.
    let bob = new_user("bob").await?;
    let porch = create_named(&bob, "porch").await?;
    porch.invite_user_by_id(&alice).await?;
    watch_until(&mut stream, &mut rooms, "the invite", |r| {
        r.iter()
            .any(|room| room.room_id() == porch.room_id() && room.state() == RoomState::Invited)
    })
    .await?;
    sync.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_pages_back_to_the_rooms_creation() -> Result<()> {
    subscribe();
    let setup = new_user("carol").await?;
    let carol = setup.user_id().context("user id")?.to_owned();
    let room = create_named(&setup, "history").await?;
    let sent: Vec<String> = (0..45).map(|i| format!("message {i}")).collect();
    for text in &sent {
        say(&room, text).await?;
    }

    let phone = login(&carol).await?;
    let sync = SyncService::builder(phone.clone()).build().await?;
    sync.start().await;
    let room_id = room.room_id().to_owned();
    let mirrored = within("the room reaches the new device", async {
        loop {
            if let Some(room) = phone.get_room(&room_id) {
                return Ok(room);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;
    let timeline = mirrored.timeline().await?;
    within("paging back to the start", async {
        for _ in 0..20 {
            if timeline.paginate_backwards(20).await? {
                return Ok(());
            }
        }
        bail!("still not at the start after 20 pages")
    })
    .await?;
    // The timeline takes in what the event cache paged after the pagination call returns, so
    // its items are looked at until they settle (or the wait runs out).
    let mut shown = Vec::new();
    let settled = eventually("the whole history in the timeline", async || {
        let items = timeline.items().await;
        shown = items
            .iter()
            .filter_map(|i| i.as_event())
            .filter_map(|e| e.content().as_message().map(|m| m.body().to_owned()))
            .collect();
        Ok((items.iter().any(|i| i.is_timeline_start()) && shown == sent).then_some(()))
    })
    .await;
    if settled.is_err() {
        bail!("timeline shows {shown:?}");
    }
    sync.stop().await;
    Ok(())
}

/// Rooms of the account whose room list is loaded whole.
const MANY_ROOMS: usize = 1_000;
/// Rooms made at once while setting up that account.
const MAKING_AT_ONCE: usize = 8;
/// How long loading and scrolling the whole list may take (a debug build on a busy machine).
const MANY_ROOMS_WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rooms_load_and_scroll_in_recency_order() -> Result<()> {
    subscribe();
    let setup = new_user("dora").await?;
    let dora = setup.user_id().context("user id")?.to_owned();
    let made = Instant::now();
    let rooms: Vec<Room> = futures_util::stream::iter(0..MANY_ROOMS)
        .map(|i| {
            let setup = setup.clone();
            async move { create_named(&setup, &format!("room {i}")).await }
        })
        .buffer_unordered(MAKING_AT_ONCE)
        .collect::<Vec<Result<Room>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    // Three old rooms spoken in last, so the top of the list is known.
    let top: Vec<&Room> = rooms.iter().take(3).collect();
    for room in top.iter().rev() {
        say(room, "to the top").await?;
    }
    println!(
        "{MANY_ROOMS} rooms made in {:.1} s",
        made.elapsed().as_secs_f64()
    );

    let phone = login(&dora).await?;
    let started = Instant::now();
    let sync = SyncService::builder(phone.clone()).build().await?;
    sync.start().await;
    let list = sync.room_list_service().all_rooms().await?;
    let (stream, controller) = list.entries_with_dynamic_adapters(50);
    controller.set_filter(Box::new(new_filter_non_left()));
    pin_mut!(stream);
    let mut shown = Vector::new();
    let top_ids: Vec<&RoomId> = top.iter().map(|r| r.room_id()).collect();
    watch_until(&mut stream, &mut shown, "the top of the list", |r| {
        ids(r)
            .iter()
            .take(3)
            .map(|id| &**id)
            .eq(top_ids.iter().copied())
    })
    .await?;
    println!("first page after {:.2} s", started.elapsed().as_secs_f64());

    // Scrolling down a page at a time reaches every room, each once.
    let scrolled = tokio::time::timeout(MANY_ROOMS_WAIT, async {
        while shown.len() < MANY_ROOMS {
            controller.add_one_page();
            let diffs = stream.next().await.context("room list stream ended")?;
            for diff in diffs {
                diff.apply(&mut shown);
            }
        }
        anyhow::Ok(())
    })
    .await;
    match scrolled {
        Ok(done) => done?,
        Err(_) => bail!(
            "after {MANY_ROOMS_WAIT:?} the list shows {} of {MANY_ROOMS} rooms",
            shown.len()
        ),
    }
    println!(
        "all {MANY_ROOMS} after {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let listed: std::collections::HashSet<OwnedRoomId> = ids(&shown).into_iter().collect();
    if listed.len() != MANY_ROOMS || rooms.iter().any(|r| !listed.contains(r.room_id())) {
        bail!(
            "the list shows {} distinct rooms, not the {MANY_ROOMS} made",
            listed.len()
        );
    }
    if ids(&shown)
        .iter()
        .take(3)
        .map(|id| &**id)
        .ne(top_ids.iter().copied())
    {
        bail!("the rooms spoken in last are not on top");
    }
    sync.stop().await;
    Ok(())
}
