// Two users on two federated nodes start a direct chat with end-to-end encryption and read each
// other's messages: device keys are queried and one-time keys claimed across the nodes, and the
// room keys travel as to-device messages between them.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  dumpLog,
  register,
  sdk,
  secondUrl,
  startClient,
  stopAll,
  waitForMember,
  waitForMembership,
  waitForMessage,
  within,
  WAIT_MS,
} from "./harness.js";

const MEGOLM = "m.megolm.v1.aes-sha2";

/**
 * Runs `request` until it succeeds: the first request to the other node may come before the
 * overlay session to it is up.
 */
async function eventually(what, request) {
  const deadline = performance.now() + 3 * WAIT_MS;
  for (;;) {
    try {
      return await within(WAIT_MS, what, request());
    } catch (e) {
      if (performance.now() > deadline) throw e;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}

test(
  "users on two nodes chat in an encrypted DM and each decrypts the other",
  { timeout: 300_000, skip: secondUrl() ? false : "GROVE_URL_B is not set (one node only)" },
  async (t) => {
    let alice;
    let bob;
    t.after(() => stopAll(alice, bob));
    try {
      const aliceUser = await register("alice");
      const bobUser = await register("bob", { url: secondUrl() });
      alice = await startClient(aliceUser);
      bob = await startClient(bobUser);

      // Element starts a DM with createRoom's own `invite` list; the invite of a user on
      // another node goes through that node (federation `invite`). Wait until B answers for
      // its users first, so the invite is not sent before the overlay found a path.
      await eventually(`reaching ${bobUser.userId}'s node`, () => alice.getProfileInfo(bobUser.userId));
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

      await waitForMembership(bob, roomId, "invite");
      await eventually(`bob joining ${roomId}`, () => bob.joinRoom(roomId));
      await waitForMembership(bob, roomId, "join");
      await waitForMember(alice, roomId, bobUser.userId, "join");

      for (const client of [alice, bob]) {
        await eventually(`${client.getUserId()} to see encryption enabled`, async () => {
          if (!(await client.getCrypto().isEncryptionEnabledInRoom(roomId))) {
            throw new Error("encryption not enabled yet");
          }
        });
      }

      // Alice on A to Bob on B.
      const hello = "hello bob on the other node, this is secret";
      const sent = await within(2 * WAIT_MS, "alice's send", alice.sendTextMessage(roomId, hello));
      const atBob = await waitForMessage(bob, roomId, hello);
      assert.equal(atBob.getId(), sent.event_id);
      assert.equal(atBob.getWireType(), "m.room.encrypted", "the event was encrypted on the wire");
      assert.equal(atBob.getWireContent().algorithm, MEGOLM);
      assert.equal(atBob.getSender(), aliceUser.userId);

      // Bob on B to Alice on A.
      const reply = "hi alice across the overlay, secret received";
      const replied = await within(2 * WAIT_MS, "bob's send", bob.sendTextMessage(roomId, reply));
      const atAlice = await waitForMessage(alice, roomId, reply);
      assert.equal(atAlice.getId(), replied.event_id);
      assert.equal(atAlice.getWireType(), "m.room.encrypted");
      assert.equal(atAlice.getSender(), bobUser.userId);
    } catch (e) {
      dumpLog(t.name);
      throw e;
    }
  },
);
