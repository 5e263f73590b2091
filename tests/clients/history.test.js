// A fresh client pages back through a long history and gets every message, in order.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  dumpLog,
  login,
  register,
  sdk,
  startClient,
  stopAll,
  timelineBodies,
  waitForMembership,
  within,
  WAIT_MS,
} from "./harness.js";

const COUNT = 60;
const expected = Array.from({ length: COUNT }, (_, i) => `message ${i}`);

test("history paginates back and forth to every message, in order", { timeout: 120_000 }, async (t) => {
  let writer;
  let reader;
  t.after(() => stopAll(writer, reader));
  try {
    const aliceUser = await register("alice");
    writer = await startClient(aliceUser, { crypto: false });
    const { room_id: roomId } = await within(
      WAIT_MS,
      "createRoom",
      writer.createRoom({ preset: sdk.Preset.PrivateChat, name: "long history" }),
    );
    for (const body of expected) {
      await within(WAIT_MS, `sending "${body}"`, writer.sendTextMessage(roomId, body));
    }

    // A new device of the same user: it knows nothing but what sync and /messages tell it.
    const again = await login(aliceUser);
    assert.notEqual(again.deviceId, aliceUser.deviceId, "a second login gets a new device");
    reader = await startClient(again, { crypto: false, initialSyncLimit: 10 });
    const room = await waitForMembership(reader, roomId, "join");
    assert.ok(
      timelineBodies(room).length <= 10,
      `the initial sync honours its timeline limit: ${timelineBodies(room).length} messages`,
    );

    // The SDK's own path: scrollback until the room's start.
    let pages = 0;
    while (room.oldState.paginationToken !== null && pages < 30) {
      const before = room.getLiveTimeline().getEvents().length;
      await within(WAIT_MS, `scrollback page ${pages + 1}`, reader.scrollback(room, 25));
      pages += 1;
      if (room.getLiveTimeline().getEvents().some((e) => e.getType() === "m.room.create")) break;
      assert.ok(
        room.getLiveTimeline().getEvents().length > before || room.oldState.paginationToken === null,
        `scrollback page ${pages} made progress`,
      );
    }
    assert.ok(pages >= 2, `history took several pages (${pages})`);
    assert.deepEqual(timelineBodies(room), expected, "scrollback yields all messages in order");

    // The raw /messages endpoint: backwards from the end, then forwards from the start.
    const backward = [];
    let from = null;
    for (let i = 0; i < 20; i++) {
      const page = await within(
        WAIT_MS,
        "/messages backwards",
        reader.createMessagesRequest(roomId, from, 25, sdk.Direction.Backward),
      );
      backward.push(...page.chunk);
      if (!page.end || page.chunk.length === 0) break;
      from = page.end;
    }
    const backBodies = backward
      .filter((e) => e.type === "m.room.message")
      .map((e) => e.content.body)
      .reverse();
    assert.deepEqual(backBodies, expected, "/messages backwards yields all messages newest first");
    assert.equal(backward.at(-1)?.type, "m.room.create", "paging back ends at the room's creation");

    const forward = [];
    from = null;
    for (let i = 0; i < 20; i++) {
      const page = await within(
        WAIT_MS,
        "/messages forwards",
        reader.createMessagesRequest(roomId, from, 25, sdk.Direction.Forward),
      );
      forward.push(...page.chunk);
      if (!page.end || page.chunk.length === 0) break;
      from = page.end;
    }
    const forwardBodies = forward.filter((e) => e.type === "m.room.message").map((e) => e.content.body);
    assert.deepEqual(forwardBodies, expected, "/messages forwards yields all messages oldest first");
    assert.equal(forward[0]?.type, "m.room.create", "paging forwards starts at the room's creation");
  } catch (e) {
    dumpLog(t.name);
    throw e;
  }
});
