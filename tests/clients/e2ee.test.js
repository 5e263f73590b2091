// Two users start a direct chat with end-to-end encryption and read each other's messages.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  dumpLog,
  register,
  sdk,
  startClient,
  stopAll,
  waitForMember,
  waitForMembership,
  waitForMessage,
  within,
  WAIT_MS,
} from "./harness.js";

const MEGOLM = "m.megolm.v1.aes-sha2";

test("two users chat in an encrypted DM and each decrypts the other", { timeout: 180_000 }, async (t) => {
  let alice;
  let bob;
  t.after(() => stopAll(alice, bob));
  try {
    const aliceUser = await register("alice");
    const bobUser = await register("bob");
    alice = await startClient(aliceUser);
    bob = await startClient(bobUser);

    // As Element does for a new DM: is_direct, the invite, encryption from the first event,
    // and m.direct account data.
    const { room_id: roomId } = await within(
      WAIT_MS,
      "createRoom",
      alice.createRoom({
        is_direct: true,
        invite: [bobUser.userId],
        preset: sdk.Preset.TrustedPrivateChat,
        initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }],
      }),
    );
    await within(WAIT_MS, "alice's m.direct", alice.setAccountData("m.direct", { [bobUser.userId]: [roomId] }));

    const invited = await waitForMembership(bob, roomId, "invite");
    const inviteEvent = invited.getMember(bobUser.userId)?.events.member;
    assert.equal(inviteEvent?.getContent().is_direct, true, "bob's invite carries is_direct");
    await within(WAIT_MS, "bob joining", bob.joinRoom(roomId));
    await within(WAIT_MS, "bob's m.direct", bob.setAccountData("m.direct", { [aliceUser.userId]: [roomId] }));
    await waitForMembership(bob, roomId, "join");
    await waitForMember(alice, roomId, bobUser.userId, "join");

    for (const client of [alice, bob]) {
      assert.ok(
        await client.getCrypto().isEncryptionEnabledInRoom(roomId),
        `${client.getUserId()} sees encryption enabled`,
      );
    }

    // Alice to Bob.
    const hello = "hello bob, this is secret";
    const sent = await within(WAIT_MS, "alice's send", alice.sendTextMessage(roomId, hello));
    const atBob = await waitForMessage(bob, roomId, hello);
    assert.equal(atBob.getId(), sent.event_id);
    assert.equal(atBob.getWireType(), "m.room.encrypted", "the event was encrypted on the wire");
    assert.equal(atBob.getWireContent().algorithm, MEGOLM);
    assert.equal(atBob.getWireContent().body, undefined, "no plaintext on the wire");
    assert.equal(atBob.getSender(), aliceUser.userId);

    // Bob to Alice (the other direction needs Bob's own Megolm session and Olm to Alice).
    const reply = "hi alice, secret received";
    const replied = await within(WAIT_MS, "bob's send", bob.sendTextMessage(roomId, reply));
    const atAlice = await waitForMessage(alice, roomId, reply);
    assert.equal(atAlice.getId(), replied.event_id);
    assert.equal(atAlice.getWireType(), "m.room.encrypted");
    assert.equal(atAlice.getSender(), bobUser.userId);

    // What the server stores and serves is ciphertext only.
    const page = await within(
      WAIT_MS,
      "/messages",
      alice.createMessagesRequest(roomId, null, 50, sdk.Direction.Backward),
    );
    const messages = page.chunk.filter((e) => e.type === "m.room.encrypted");
    assert.ok(messages.length >= 2, `the server holds both encrypted messages: ${JSON.stringify(page.chunk.map((e) => e.type))}`);
    for (const raw of messages) {
      assert.ok(raw.content.ciphertext, "encrypted content has ciphertext");
      assert.ok(!JSON.stringify(raw).includes("secret"), "no plaintext in what the server serves");
    }
    assert.ok(
      !page.chunk.some((e) => e.type === "m.room.message"),
      "no message was sent in the clear",
    );
  } catch (e) {
    dumpLog(t.name);
    throw e;
  }
});
