// Verbs for driving a Grove node with a stock matrix-js-sdk client (Rust crypto included).
//
// Every wait has a time limit and fails with a sentence saying what it waited for. The SDK and
// its Rust crypto log a great deal; those lines are kept in a ring buffer and printed only when
// a test fails (set GROVE_CLIENT_LOG=1 to see them live).

import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import * as sdk from "matrix-js-sdk";
import { logger as sdkLogger } from "matrix-js-sdk/lib/logger.js";

/** How long any single wait may take before the test fails. */
export const WAIT_MS = 20_000;

/** The password every test user gets; each user is fresh, so a shared one leaks nothing. */
const PASSWORD = "grove client test password";

const LOG_LINES = 600;
const logLines = [];
const liveLog = process.env.GROVE_CLIENT_LOG === "1";
const originalConsole = {
  log: console.log,
  info: console.info,
  debug: console.debug,
  warn: console.warn,
  error: console.error,
};

function keep(level, args) {
  const line = `[${new Date().toISOString()}] ${level} ${args
    .map((a) => (a instanceof Error ? a.stack : typeof a === "string" ? a : safeJson(a)))
    .join(" ")}`;
  if (liveLog) {
    originalConsole.error(line);
    return;
  }
  logLines.push(line);
  if (logLines.length > LOG_LINES) logLines.shift();
}

function safeJson(value) {
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

// The Rust crypto writes its tracing straight to the console, so the console is captured.
for (const level of ["log", "info", "debug", "warn", "error"]) {
  console[level] = (...args) => keep(level, args);
}
sdkLogger.setLevel(liveLog ? "debug" : "info", false);

/** Prints the kept client log lines (call when a test failed). */
export function dumpLog(title) {
  originalConsole.error(`--- last ${logLines.length} client log lines (${title}) ---`);
  for (const line of logLines) originalConsole.error(line);
  originalConsole.error("--- end of client log ---");
}

/** The homeserver under test, from GROVE_URL. */
export function baseUrl() {
  const url = process.env.GROVE_URL;
  if (!url) {
    throw new Error("GROVE_URL is not set: run these tests through `cargo test --test it clients`");
  }
  return url.replace(/\/$/, "");
}

/**
 * A second node federated with the first, from GROVE_URL_B, or null when the suite runs
 * against one node only.
 */
export function secondUrl() {
  const url = process.env.GROVE_URL_B;
  return url ? url.replace(/\/$/, "") : null;
}

/** A localpart nobody has used before on this node. */
export function uniqueName(prefix) {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/** The server name part of a user ID. */
export function serverNameOf(userId) {
  return userId.slice(userId.indexOf(":") + 1);
}

/** Fails with `what` if `promise` has not settled within `ms`. */
export async function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits until `check()` returns a truthy value, re-checking whenever `emitter` emits one of
 * `events`. `describe()` (optional) adds what was seen to the failure message.
 */
export async function waitUntil(emitter, events, check, what, { ms = WAIT_MS, describe } = {}) {
  const first = check();
  if (first) return first;
  let listener;
  let timer;
  try {
    return await new Promise((resolve, reject) => {
      listener = () => {
        try {
          const value = check();
          if (value) resolve(value);
        } catch (e) {
          reject(e);
        }
      };
      for (const event of events) emitter.on(event, listener);
      timer = setTimeout(() => {
        const seen = describe ? `; ${describe()}` : "";
        reject(new Error(`timed out after ${ms} ms waiting for ${what}${seen}`));
      }, ms);
    });
  } finally {
    clearTimeout(timer);
    for (const event of events) emitter.off(event, listener);
  }
}

/**
 * Runs `request`, and again after the server's `retry_after_ms` while it answers
 * M_LIMIT_EXCEEDED, as clients do; gives up after WAIT_MS.
 */
async function respectingRateLimits(what, request) {
  const deadline = performance.now() + WAIT_MS;
  for (;;) {
    try {
      return await request();
    } catch (e) {
      if (e?.errcode !== "M_LIMIT_EXCEEDED" || performance.now() > deadline) throw e;
      const wait = Number(e.data?.retry_after_ms ?? 1000);
      keep("warn", [`${what}: rate limited, retrying in ${wait} ms`]);
      await sleep(Math.min(Math.max(wait, 10), 5000));
    }
  }
}

/**
 * Registers a fresh user (on `url`, the first node unless given) the way a client does: the
 * SDK's user-interactive auth driver sees the server's flows and completes the `m.login.dummy`
 * stage itself.
 */
export async function register(prefix, { url = baseUrl() } = {}) {
  const username = uniqueName(prefix);
  const tmp = sdk.createClient({ baseUrl: url });
  // A fresh driver per attempt: a rate-limited attempt is started over.
  const attempt = () =>
    new sdk.InteractiveAuth({
      matrixClient: tmp,
      doRequest: (authDict) =>
        tmp.registerRequest({
          username,
          password: PASSWORD,
          initial_device_display_name: `grove test ${prefix}`,
          ...(authDict ? { auth: authDict } : {}),
        }),
      stateUpdated: (stage, status) => {
        // Only dummy is expected; anything else would wait for a human forever.
        throw new Error(`registration asked for stage ${stage}: ${safeJson(status)}`);
      },
      requestEmailToken: () => Promise.reject(new Error("no e-mail here")),
      supportedStages: ["m.login.dummy"],
    }).attemptAuth();
  const resp = await within(
    2 * WAIT_MS,
    `registration of ${username}`,
    respectingRateLimits(`registration of ${username}`, attempt),
  );
  if (!resp.user_id || !resp.access_token || !resp.device_id) {
    throw new Error(`registration answered without credentials: ${safeJson(resp)}`);
  }
  return { userId: resp.user_id, accessToken: resp.access_token, deviceId: resp.device_id, username, url };
}

/** Logs an existing user in on a new device with their password. */
export async function login(user) {
  const tmp = sdk.createClient({ baseUrl: user.url ?? baseUrl() });
  const resp = await within(
    WAIT_MS,
    `password login of ${user.userId}`,
    respectingRateLimits(`login of ${user.userId}`, () =>
      tmp.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: user.username },
        password: PASSWORD,
      }),
    ),
  );
  return { ...user, accessToken: resp.access_token, deviceId: resp.device_id };
}

/**
 * Every request a client makes, with when it started and ended, so tests can see how the SDK
 * talked to the server (for instance how many /sync requests it made while idle).
 */
export class RequestLog {
  constructor() {
    this.entries = [];
  }

  /** A `fetch` that records into this log. */
  fetchFn() {
    return async (input, init) => {
      const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
      const entry = { url, method: init?.method ?? "GET", start: performance.now(), end: null };
      this.entries.push(entry);
      try {
        const resp = await fetch(input, init);
        entry.status = resp.status;
        return resp;
      } finally {
        entry.end = performance.now();
      }
    };
  }

  /** The /sync requests started at or after `since` (a `performance.now()` reading). */
  syncsStartedSince(since) {
    return this.entries.filter((e) => e.url.includes("/sync") && e.start >= since);
  }
}

/**
 * Starts a syncing client for `user`, with the SDK's Rust crypto unless `crypto` is false,
 * and waits for its first sync. Stop it with `client.stopClient()`.
 */
export async function startClient(user, { crypto = true, initialSyncLimit = 20 } = {}) {
  const requests = new RequestLog();
  const client = sdk.createClient({
    baseUrl: user.url ?? baseUrl(),
    userId: user.userId,
    deviceId: user.deviceId,
    accessToken: user.accessToken,
    fetchFn: requests.fetchFn(),
  });
  client.requests = requests;
  if (crypto) {
    await within(WAIT_MS, `Rust crypto to start for ${user.userId}`, client.initRustCrypto({ useIndexedDB: false }));
  }
  const syncErrors = [];
  client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
    if (state === "ERROR") syncErrors.push(data?.error?.message ?? "unknown sync error");
  });
  await client.startClient({ initialSyncLimit, lazyLoadMembers: true });
  await waitUntil(
    client,
    [sdk.ClientEvent.Sync],
    () => ["PREPARED", "SYNCING"].includes(client.getSyncState()),
    `the first sync of ${user.userId}`,
    { describe: () => `sync state ${client.getSyncState()}, errors: ${syncErrors.join(" | ") || "none"}` },
  );
  return client;
}

/** Stops every client given, ignoring ones that are not running. */
export function stopAll(...clients) {
  for (const client of clients) {
    try {
      client?.stopClient();
    } catch (e) {
      keep("warn", ["stopping a client failed", e]);
    }
  }
}

/** Waits until `client` sees itself with `membership` in `roomId` and returns the room. */
export async function waitForMembership(client, roomId, membership) {
  return waitUntil(
    client,
    [sdk.RoomEvent.MyMembership, sdk.ClientEvent.Room, sdk.RoomEvent.Timeline],
    () => {
      const room = client.getRoom(roomId);
      return room?.getMyMembership() === membership ? room : null;
    },
    `${client.getUserId()} to be ${membership} in ${roomId}`,
    { describe: () => `membership is ${client.getRoom(roomId)?.getMyMembership() ?? "unknown (room not seen)"}` },
  );
}

/** Waits until `client` sees `userId` with `membership` in `roomId`. */
export async function waitForMember(client, roomId, userId, membership) {
  return waitUntil(
    client,
    [sdk.RoomStateEvent.Members, sdk.RoomEvent.Timeline, sdk.ClientEvent.Room],
    () => client.getRoom(roomId)?.getMember(userId)?.membership === membership,
    `${client.getUserId()} to see ${userId} ${membership} in ${roomId}`,
    {
      describe: () =>
        `membership seen: ${client.getRoom(roomId)?.getMember(userId)?.membership ?? "none"}`,
    },
  );
}

/** The decrypted or plain `m.room.message` bodies in a room's live timeline, oldest first. */
export function timelineBodies(room) {
  return room
    .getLiveTimeline()
    .getEvents()
    .filter((e) => e.getType() === "m.room.message")
    .map((e) => e.getContent().body);
}

/**
 * Waits until `client` has a message with `body` in `roomId` that it could read, and returns
 * the event. A decryption failure is reported in the timeout message.
 */
export async function waitForMessage(client, roomId, body) {
  let lastProblem = "no event seen yet";
  const find = () => {
    const room = client.getRoom(roomId);
    if (!room) return null;
    for (const event of room.getLiveTimeline().getEvents()) {
      if (event.isDecryptionFailure()) {
        lastProblem = `event ${event.getId()} failed to decrypt: ${event.decryptionFailureReason}`;
        continue;
      }
      if (event.getType() === "m.room.message" && event.getContent().body === body) return event;
    }
    return null;
  };
  return waitUntil(
    client,
    [sdk.RoomEvent.Timeline, sdk.MatrixEventEvent.Decrypted],
    find,
    `${client.getUserId()} to read "${body}" in ${roomId}`,
    { describe: () => lastProblem },
  );
}

/** Sleeps for `ms` milliseconds. */
export { sleep };

export { sdk };
