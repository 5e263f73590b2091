// A third user finds a public room by its alias, joins it and reads what was said before.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  dumpLog,
  register,
  sdk,
  serverNameOf,
  startClient,
  stopAll,
  timelineBodies,
  uniqueName,
  waitForMember,
  waitForMembership,
  waitUntil,
  within,
  WAIT_MS,
} from "./harness.js";

test("a third user joins a public room by alias and sees prior messages", { timeout: 120_000 }, async (t) => {
  let alice;
  let bob;
  let carol;
  t.after(() => stopAll(alice, bob, carol));
  try {
    const aliceUser = await register("alice");
    const bobUser = await register("bob");
    const carolUser = await register("carol");
    // Crypto is exercised in e2ee.test.js; this test needs only rooms and sync.
    alice = await startClient(aliceUser, { crypto: false });
    bob = await startClient(bobUser, { crypto: false });

    const aliasName = uniqueName("lobby");
    const alias = `#${aliasName}:${serverNameOf(aliceUser.userId)}`;
    const { room_id: roomId } = await within(
      WAIT_MS,
      "createRoom",
      alice.createRoom({
        preset: sdk.Preset.PublicChat,
        visibility: sdk.Visibility.Public,
        room_alias_name: aliasName,
        name: "Grove lobby",
        topic: "where everyone meets",
      }),
    );
    await within(WAIT_MS, "bob joining by ID", bob.joinRoom(roomId));
    await waitForMember(alice, roomId, bobUser.userId, "join");

    const before = ["first from alice", "then bob", "and alice again"];
    await within(WAIT_MS, "send 1", alice.sendTextMessage(roomId, before[0]));
    await within(WAIT_MS, "send 2", bob.sendTextMessage(roomId, before[1]));
    await within(WAIT_MS, "send 3", alice.sendTextMessage(roomId, before[2]));

    // Carol knows only the alias.
    const resolved = await within(WAIT_MS, "alias lookup", alice.getRoomIdForAlias(alias));
    assert.equal(resolved.room_id, roomId, "the alias resolves to the room");
    const directory = await within(WAIT_MS, "publicRooms", alice.publicRooms({ limit: 100 }));
    const listed = directory.chunk.find((r) => r.room_id === roomId);
    assert.ok(listed, `the public room directory lists the room: ${JSON.stringify(directory.chunk)}`);
    assert.equal(listed.name, "Grove lobby");
    assert.equal(listed.canonical_alias, alias);

    carol = await startClient(carolUser, { crypto: false, initialSyncLimit: 2 });
    const joined = await within(WAIT_MS, "carol joining by alias", carol.joinRoom(alias));
    assert.equal(joined.roomId, roomId);
    const room = await waitForMembership(carol, roomId, "join");
    assert.equal(room.name, "Grove lobby", "carol sees the room name");

    // The join sync may carry only the newest events; scroll back to the start like a client.
    for (let i = 0; i < 20 && room.oldState.paginationToken !== null; i++) {
      const seen = room.getLiveTimeline().getEvents().some((e) => e.getType() === "m.room.create");
      if (seen) break;
      await within(WAIT_MS, "carol's scrollback", carol.scrollback(room, 10));
    }
    assert.deepEqual(timelineBodies(room), before, "carol reads the earlier messages in order");
    const senders = room
      .getLiveTimeline()
      .getEvents()
      .filter((e) => e.getType() === "m.room.message")
      .map((e) => e.getSender());
    assert.deepEqual(senders, [aliceUser.userId, bobUser.userId, aliceUser.userId]);

    // And the others see Carol arrive.
    await waitForMember(alice, roomId, carolUser.userId, "join");
    const greeting = "welcome, carol";
    await within(WAIT_MS, "bob greets carol", bob.sendTextMessage(roomId, greeting));
    await waitUntil(
      carol,
      [sdk.RoomEvent.Timeline],
      () => timelineBodies(room).includes(greeting),
      "carol to see a new message after joining",
    );
  } catch (e) {
    dumpLog(t.name);
    throw e;
  }
});
