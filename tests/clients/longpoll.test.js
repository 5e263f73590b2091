// A client waiting in a /sync long-poll is woken at once when a message arrives, and does not
// busy-poll while nothing happens.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  dumpLog,
  register,
  sdk,
  sleep,
  startClient,
  stopAll,
  waitForMember,
  waitForMembership,
  waitUntil,
  within,
  WAIT_MS,
} from "./harness.js";

/** The bound on wake-up: "within the same second". A correctness bound, not a benchmark. */
const WAKE_BOUND_MS = 1000;
const ROUNDS = 5;

test("a waiting sync wakes within a second of a send, and idles without polling", { timeout: 120_000 }, async (t) => {
  let sender;
  let waiter;
  t.after(() => stopAll(sender, waiter));
  try {
    const aliceUser = await register("alice");
    const bobUser = await register("bob");
    sender = await startClient(aliceUser, { crypto: false });
    waiter = await startClient(bobUser, { crypto: false });
    const { room_id: roomId } = await within(
      WAIT_MS,
      "createRoom",
      sender.createRoom({ preset: sdk.Preset.PrivateChat, invite: [bobUser.userId] }),
    );
    await waitForMembership(waiter, roomId, "invite");
    await within(WAIT_MS, "bob joining", waiter.joinRoom(roomId));
    await waitForMembership(waiter, roomId, "join");
    await waitForMember(sender, roomId, bobUser.userId, "join");

    // Idle: the SDK asks for 30 s long-polls; a server that answered them at once would show
    // as a stream of /sync requests here.
    await sleep(500);
    const idleFrom = performance.now();
    await sleep(2000);
    const idleSyncs = waiter.requests.syncsStartedSince(idleFrom);
    assert.ok(
      idleSyncs.length <= 1,
      `an idle client keeps one long-poll open instead of polling: ${idleSyncs.length} /sync requests in 2 s`,
    );

    const received = new Map();
    waiter.on(sdk.RoomEvent.Timeline, (event) => {
      if (event.getRoomId() === roomId && event.getType() === "m.room.message") {
        received.set(event.getContent().body, performance.now());
      }
    });

    const delays = [];
    for (let i = 0; i < ROUNDS; i++) {
      // Let the waiter's next long-poll reach the server and park.
      await sleep(300);
      const body = `wake up ${i}`;
      const parkedSince = performance.now();
      await within(WAIT_MS, `send "${body}"`, sender.sendTextMessage(roomId, body));
      const sentAt = performance.now();
      await waitUntil(waiter, [sdk.RoomEvent.Timeline], () => received.has(body), `bob to receive "${body}"`);
      const delay = received.get(body) - sentAt;
      delays.push(Math.round(delay));
      assert.ok(
        delay < WAKE_BOUND_MS,
        `bob received "${body}" ${Math.round(delay)} ms after alice's send returned (bound ${WAKE_BOUND_MS} ms)`,
      );
      // The answer that carried it was a /sync the client had opened before the send.
      const carrier = waiter.requests.entries
        .filter((e) => e.url.includes("/sync") && e.end !== null && e.end <= received.get(body))
        .at(-1);
      assert.ok(carrier, "a /sync answer carried the event");
      assert.ok(
        carrier.start < parkedSince,
        `the event came through a long-poll parked before the send, not a new request (opened at ${Math.round(carrier.start - parkedSince)} ms relative to the send)`,
      );
    }
    t.diagnostic(`send → waiting sync delays (ms): ${delays.join(", ")}`);
  } catch (e) {
    dumpLog(t.name);
    throw e;
  }
});
