/**
 * Issue 13's attacks on a worker, each against a worker in its own process (its RSS is its own),
 * each asserting the bound or the refusal, and each ending with a real client served by the same
 * worker with the single-machine text: huge sizes in SETUP, pre-authentication buffering and
 * deadlines, replies never read, idle connections, long member lists and the port-scan oracle,
 * an authenticated peer filling the mesh inbox, and a relay that tampers with the encrypted stream.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel } from "../../src/engine/open.js";
import { matrixNames } from "../../src/engine/types.js";
import { openDistributedModel } from "../../src/cluster/client.js";
import { LlameshError } from "../../src/core/errors.js";
import { MAX_MEMBERS, PEER_FAILURE } from "../../src/cluster/limits.js";
import { encodeFrame, encodeMesh, encodePartial, HEADER_BYTES, MAGIC, MSG, PROTOCOL_VERSION } from "../../src/cluster/protocol.js";
import { newNonce } from "../../src/cluster/auth.js";
import { LIMITS } from "../../src/model/config.js";
import { STORIES, skipUnless } from "../helpers/models.js";
import { childWorker, greedy, killAll, errorOf, hello, joinMesh, json, modelFacts, rawConn, SECRET, setupBody, sleep, wholeMember, type ChildWorker } from "./hardening-kit.js";

const backend = await createBackend({ threads: 1 });
after(() => {
  killAll();
  backend.close();
});
const quiet = (): void => undefined;
const MB = 1024 * 1024;
const skip = skipUnless(STORIES);

let single: number[] | null = null;
/** The worker still serves: a real client gets the single-machine greedy tokens. */
async function stillServes(w: ChildWorker, secret?: string): Promise<void> {
  single ??= await greedy(await openModel(STORIES, { backend, maxSeqLen: 64 }), "Once upon a time", 12);
  const m = await openDistributedModel(STORIES, { workers: [{ host: "127.0.0.1", port: w.port }], secret: secret ? Buffer.from(secret) : null, backend, maxSeqLen: 64, log: quiet });
  try {
    assert.deepEqual(await greedy(m, "Once upon a time", 12), single, "served identically after the attack");
  } finally {
    await m.close();
  }
  assert.ok(w.alive(), "the worker is up");
}

/** Every log line one line of bounded length that never carries `marker`. */
function assertQuietLog(w: ChildWorker, marker: string): void {
  for (const line of w.stderr().split("\n")) {
    assert.ok(line.length <= 400, `log line of ${line.length} chars`);
    assert.ok(!line.includes(marker), "the input is not echoed in the log");
  }
}

test("huge sizes in SETUP are refused before any allocation, in one line without the input; --model pins the config", { skip }, async (t) => {
  const m = modelFacts(STORIES);
  const w = await childWorker({ limits: { maxMemoryBytes: 2e9 } });
  const rss0 = w.rss();
  const c = await rawConn(w.port);
  await hello(c, m.fingerprint);
  const empty = { kv0: 0, kv1: 0, hb0: 0, hb1: 0, v0: 0, v1: 0 };
  const big = { ...m.config, nLayers: LIMITS.nLayers, dim: LIMITS.dim, hiddenDim: LIMITS.hiddenDim, nHeads: 512, nKvHeads: 512, headDim: 128, vocabSize: LIMITS.vocabSize };
  const bigPlan = Object.fromEntries(matrixNames(big).map((n) => [n, "Q8_0"]));
  const cases: [string, string, RegExp][] = [
    ["nLayers 3e6", setupBody(m, {}, { nLayers: 3e6 }), /config\.nLayers: expected an integer between 1 and 1024, got 3000000/],
    ["nLayers 2**53, empty slice", setupBody(m, { slice: empty }, { nLayers: 2 ** 53 }), /config\.nLayers: expected an integer between 1 and 1024/],
    ["nLayers 1e308", setupBody(m, {}, { nLayers: 1e308 }), /config\.nLayers: expected an integer between 1 and 1024, got 1e\+308/],
    ["seqLen 1e308", setupBody(m, { seqLen: 1e308 }), /seqLen/],
    ["the largest shape within every limit", JSON.stringify({ config: big, slice: { kv0: 0, kv1: 512, hb0: 0, hb1: LIMITS.hiddenDim / 32, v0: 0, v1: LIMITS.vocabSize }, seqLen: 64, batch: 8, types: bigPlan }), /slice needs [\d.]+ GB, over this worker's memory budget of 2\.00 GB/],
    ["a long context on 256 slots", setupBody(m, { seqLen: m.config.seqLen * 64, slots: 256, batch: 4096 }), /over this worker's memory budget/],
    ["a 600 KB family", setupBody(m, {}, { family: "x".repeat(600_000) }), /config\.family: expected one of/],
  ];
  for (const [what, body, re] of cases) {
    const t0 = performance.now();
    c.send(encodeFrame(MSG.SETUP, 9, body));
    const msg = errorOf(await c.next());
    assert.ok(performance.now() - t0 < 2000, `${what}: answered within 2 s`);
    assert.match(msg, re, what);
    assert.ok(msg.length < 300 && !msg.includes("\n") && !msg.includes("xxxxxxxx"), `${what}: one short line without the input`);
  }
  // a 1 MB fingerprint (the handshake on a new connection)
  const d = await rawConn(w.port);
  d.send(encodeFrame(MSG.HELLO, 1, JSON.stringify({ fingerprint: "x".repeat(60_000) })));
  const fmsg = errorOf(await d.next());
  assert.match(fmsg, /model fingerprint is malformed/);
  assert.ok(!fmsg.includes("xxxxxxxx"));
  const grown = w.rss() - rss0;
  t.diagnostic(`worker RSS +${(grown / MB).toFixed(1)} MB`);
  assert.ok(grown < 150 * MB, `worker RSS grew ${(grown / MB).toFixed(0)} MB (bound 150 MB)`);
  assertQuietLog(w, "xxxxxxxx");
  c.close();
  d.close();
  await stillServes(w);
  await w.stop();

  // a worker with --model takes only its own model's shape
  const wm = await childWorker({ model: STORIES });
  const e = await rawConn(wm.port);
  await hello(e, m.fingerprint);
  e.send(encodeFrame(MSG.SETUP, 3, setupBody(m, {}, { nLayers: m.config.nLayers + 1 })));
  assert.match(errorOf(await e.next()), /the config does not match this worker's --model/);
  e.close();
  await stillServes(wm);
  await wm.stop();
});

/** A header announcing `len` body bytes, then `send` of them. */
function announce(len: number, send: number): Buffer {
  const b = Buffer.alloc(HEADER_BYTES + send, 0x41);
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt16LE(PROTOCOL_VERSION, 4);
  b.writeUInt16LE(MSG.HELLO, 6);
  b.writeUInt32LE(1, 8);
  b.writeUInt32LE(len, 12);
  return b;
}

for (const secret of [undefined, SECRET]) {
  test(`before authentication${secret ? " (inside the TLS tunnel)" : ""}: frames of at most 64 KiB, a handshake deadline, a cap on connections`, { skip }, async (t) => {
    const w = await childWorker({ secret, limits: { handshakeDeadlineMs: 800 } });
    const rss0 = w.rss();
    // 24 connections announcing 60 MB frames and sending 1 MB each: refused at the header, closed
    const conns = await Promise.all(Array.from({ length: 24 }, () => rawConn(w.port, secret)));
    for (const c of conns) c.send(announce(60 * MB, MB));
    for (const c of conns) {
      assert.match(errorOf(await c.next()), /frame body of 62914560 bytes exceeds the 65536-byte maximum/);
      await c.closed;
    }
    const grown = w.rss() - rss0;
    t.diagnostic(`worker RSS +${(grown / MB).toFixed(1)} MB`);
    assert.ok(grown < 64 * MB, `worker RSS grew ${(grown / MB).toFixed(0)} MB for 24 MB sent (bound 64 MB)`);
    // silent connections (a TLS tunnel without a HELLO, or not even a first byte) are closed at the deadline
    const silent = await rawConn(w.port, secret);
    const bare = await rawConn(w.port);
    const t0 = performance.now();
    await Promise.all([silent.closed, bare.closed]);
    const took = performance.now() - t0;
    assert.ok(took >= 500 && took < 5000, `closed after ${took.toFixed(0)} ms (deadline 800 ms)`);
    // 100 connections at once: at most 64 wait for a handshake, the rest are closed at once
    const many = await Promise.all(Array.from({ length: 100 }, () => rawConn(w.port)));
    await sleep(200);
    const st = await w.stats();
    assert.ok(st.connections <= 64, `${st.connections} connections kept (at most 64 before the handshake)`);
    many.forEach((c) => c.close());
    await sleep(900);
    await stillServes(w, secret);
    await w.stop();
  });
}

test("after the handshake: JSON frames at most 1 MB, frames in progress bounded across all connections", { skip }, async (t) => {
  const m = modelFacts(STORIES);
  // the bound lowered from 256 MB to 128 MB, so what it saves stands out from the process's own memory
  const w = await childWorker({ limits: { maxBufferedBytes: 128 * MB } });
  const rss0 = w.rss();
  const c = await rawConn(w.port);
  await hello(c, m.fingerprint);
  c.send(encodeFrame(MSG.SETUP, 2, JSON.stringify({ pad: "x".repeat(2 * MB) })));
  assert.match(errorOf(await c.next()), /frame body of \d+ bytes exceeds the 1048576-byte maximum/);
  // 8 sessions (no secret: anyone can open one) each announce a 60 MB STEP and send 40 MB of it
  const conns = await Promise.all(Array.from({ length: 8 }, () => rawConn(w.port)));
  for (const d of conns) await hello(d, m.fingerprint);
  const part = Buffer.alloc(40 * MB, 1);
  for (const d of conns) {
    const h = announce(60 * MB, 0);
    h.writeUInt16LE(MSG.STEP, 6);
    d.send(Buffer.concat([h, part]));
  }
  // (a loaded machine takes a while to move 320 MB over loopback)
  let st = await w.stats();
  for (let i = 0; i < 100 && st.counters["connectionsClosed"]! < 2; i++) {
    await sleep(200);
    st = await w.stats();
  }
  assert.ok(st.counters["connectionsClosed"]! >= 2, `${st.counters["connectionsClosed"]} closed: 320 MB in progress is over the 128 MB bound`);
  const grown = w.rss() - rss0;
  t.diagnostic(`worker RSS +${(grown / MB).toFixed(1)} MB`);
  assert.ok(grown < 224 * MB, `worker RSS grew ${(grown / MB).toFixed(0)} MB for 320 MB of unfinished frames (bound 224 MB)`);
  conns.forEach((d) => d.close());
  c.close();
  await stillServes(w);
  await w.stop();
});

test("replies a peer never reads are not buffered; errors and log lines are bounded", { skip }, async (t) => {
  const w = await childWorker();
  const rss0 = w.rss();
  // 16 MB of PING frames from a peer that never reads its PONGs
  const c = await rawConn(w.port);
  c.socket.pause();
  const ping = encodeFrame(MSG.PING, 1, "");
  const burst = Buffer.concat(Array.from({ length: 65536 }, () => ping)); // 1 MB
  for (let i = 0; i < 16 && !c.socket.destroyed; i++) {
    if (!c.socket.write(burst)) await Promise.race([new Promise((r) => c.socket.once("drain", r)), c.closed, sleep(3000)]);
  }
  await sleep(300);
  let st = await w.stats();
  assert.ok(st.counters["connectionsClosed"]! >= 1, "the peer that does not read was closed");
  const grown = w.rss() - rss0;
  t.diagnostic(`worker RSS +${(grown / MB).toFixed(1)} MB`);
  assert.ok(grown < 96 * MB, `worker RSS grew ${(grown / MB).toFixed(0)} MB for 16 MB of unread replies (bound 96 MB)`);
  c.close();
  // 16 MB of tiny bad frames: the connection is closed after 64 errors, and the log stays short
  const d = await rawConn(w.port);
  const bad = encodeFrame(MSG.STEP, 1, Buffer.alloc(16));
  const flood = Buffer.concat(Array.from({ length: 32768 }, () => bad));
  for (let i = 0; i < 16 && !d.socket.destroyed; i++) d.socket.write(flood);
  await Promise.race([d.closed, sleep(5000)]);
  st = await w.stats();
  assert.ok(st.counters["errorsSent"]! <= 70, `${st.counters["errorsSent"]} errors sent (closed after 64)`);
  const lines = w.stderr().split("\n").length;
  assert.ok(lines < 120, `${lines} log lines`);
  await stillServes(w);
  await w.stop();
});

test("idle sessions are closed; a session that pings stays", { skip }, async (t) => {
  const m = modelFacts(STORIES);
  const w = await childWorker({ limits: { idleTimeoutMs: 800 } });
  const idle = await rawConn(w.port);
  const busy = await rawConn(w.port);
  await hello(idle, m.fingerprint);
  await hello(busy, m.fingerprint);
  const t0 = performance.now();
  let closedAt = -1;
  void idle.closed.then(() => (closedAt = performance.now() - t0));
  for (let i = 0; i < 10; i++) {
    busy.send(encodeFrame(MSG.PING, 10 + i, "{}"));
    assert.equal(json(await busy.next()).type, MSG.PONG);
    await sleep(300);
  }
  assert.ok(closedAt >= 700 && closedAt < 2500, `the idle session closed after ${closedAt.toFixed(0)} ms (timeout 800 ms)`);
  assert.ok(!busy.socket.destroyed, "the pinging session is open after 3 s");
  busy.close();
  await w.stop();
});

/** A listener that counts connections, and does `onConn` with each. */
function listener(onConn: (s: net.Socket) => void = () => undefined): Promise<{ port: number; count: () => number; close: () => void }> {
  return new Promise((resolve) => {
    let n = 0;
    const socks: net.Socket[] = [];
    const srv = net.createServer((s) => {
      n++;
      socks.push(s);
      s.on("error", () => undefined);
      onConn(s);
    });
    srv.listen(0, "127.0.0.1", () => resolve({ port: (srv.address() as net.AddressInfo).port, count: () => n, close: () => (socks.forEach((s) => s.destroy()), srv.close()) }));
  });
}

test("mesh member lists are bounded before any dial; a failed link tells nothing of what listens there", { skip }, async (t) => {
  const m = modelFacts(STORIES);
  const w = await childWorker({ model: STORIES, limits: { peerConnectMs: 1000 } });
  const probe = await listener();
  const c = await rawConn(w.port);
  await joinMesh(c, m, [wholeMember(0, w.port)]);
  // 200 members: refused, nothing dialled
  const members = [wholeMember(0, w.port), ...Array.from({ length: 199 }, (_, i) => ({ ...wholeMember(i + 1, probe.port) }))];
  c.send(encodeFrame(MSG.MESH, 6, encodeMesh({ session: newNonce(), rank: 0, reduce: "mesh", members }, m.norms)));
  assert.match(errorOf(await c.next()), new RegExp(`mesh: 200 members, expected 1\\.\\.${MAX_MEMBERS}`));
  c.send(encodeFrame(MSG.MESH, 7, encodeMesh({ session: newNonce(), rank: 0, reduce: "mesh", members: [wholeMember(0, w.port), { ...wholeMember(1, 1), host: "a\nb" }] }, m.norms)));
  assert.match(errorOf(await c.next()), /member host must be a host name/);
  await sleep(200);
  assert.equal(probe.count(), 0, "no connection to any listed address");
  // the oracle: nothing listening, a service that talks first, a silent one: one text, one delay
  const closedPort = await listener();
  closedPort.close();
  const http = await listener((s) => s.end("HTTP/1.1 400 Bad Request\r\nServer: secret-service\r\n\r\n"));
  const silent = await listener();
  const seen: { text: string; ms: number }[] = [];
  for (const port of [closedPort.port, http.port, silent.port]) {
    c.send(encodeFrame(MSG.MESH, 8, encodeMesh({ session: newNonce(), rank: 1, reduce: "mesh", members: [wholeMember(0, port), wholeMember(1, w.port)] }, m.norms)));
    assert.equal(json(await c.next()).type, MSG.MESH_OK);
    const t0 = performance.now();
    c.send(encodeFrame(MSG.LINK, 9, "{}"));
    const text = errorOf(await c.next(15_000));
    seen.push({ text: text.replace(`:${port}`, ":PORT"), ms: performance.now() - t0 });
  }
  assert.ok(seen.every((s) => s.text === seen[0]!.text), `one text whatever listens:\n${seen.map((s) => s.text).join("\n")}`);
  assert.ok(seen[0]!.text.includes(PEER_FAILURE));
  for (const s of seen) assert.ok(s.ms >= 950 && s.ms < 1800, `answered after ${s.ms.toFixed(0)} ms (the same delay for all: 1000 ms)`);
  assert.doesNotMatch(seen[0]!.text + w.stderr(), /HTTP|secret-service|ECONNREFUSED|ECONNRESET|timed? ?out|refused/i);
  [probe, http, silent].forEach((l) => l.close());
  c.close();
  await stillServes(w);
  await w.stop();
});

test("an authenticated peer sending sums for future steps is refused and closed, not buffered", { skip }, async (t) => {
  const m = modelFacts(STORIES);
  const w = await childWorker({ model: STORIES, secret: SECRET });
  const rss0 = w.rss();
  const c = await rawConn(w.port, SECRET);
  // rank 0 on this worker, rank 1 a peer that links to it (the attacker, who knows the secret)
  const token = await joinMesh(c, m, [wholeMember(0, w.port), { ...wholeMember(1, 9), label: "attacker" }], SECRET);
  const p = await rawConn(w.port, SECRET);
  const ok = await hello(p, m.fingerprint, SECRET, MSG.PEER, { session: token, rank: 1 });
  assert.equal(ok.type, MSG.PEER_OK);
  // a sum larger than a step of this mesh can hold: refused, closed
  const big = await rawConn(w.port, SECRET);
  const token2 = await joinMesh(big, m, [wholeMember(0, w.port), wholeMember(1, 9)], SECRET);
  const p2 = await rawConn(w.port, SECRET);
  await hello(p2, m.fingerprint, SECRET, MSG.PEER, { session: token2, rank: 1 });
  p2.send(encodeFrame(MSG.PARTIAL, 0, encodePartial(0, 0, new Float32Array(4 * MB))));
  assert.match(errorOf(await p2.next()), /partial sum of \d+ bytes, more than a step of this mesh holds/);
  await p2.closed;
  // 1,000 sums for steps that will never come, 2 KB each
  const values = new Float32Array(8 * 64).fill(1);
  for (let i = 0; i < 1000 && !p.socket.destroyed; i++) p.send(encodeFrame(MSG.PARTIAL, 0, encodePartial(1000 + i, 0, values)));
  assert.match(errorOf(await p.next()), /partial sums already wait to be used \(at most 24\)/);
  await p.closed;
  const grown = w.rss() - rss0;
  t.diagnostic(`worker RSS +${(grown / MB).toFixed(1)} MB`);
  assert.ok(grown < 64 * MB, `worker RSS grew ${(grown / MB).toFixed(0)} MB (bound 64 MB)`);
  c.close();
  big.close();
  await stillServes(w, SECRET);
  await w.stop();
});

/**
 * A TCP relay between client and worker that does not know the secret: it lets the TLS handshake
 * through, then flips one byte in every large application-data record from the worker (the DONE
 * frames with the logits) after the first `spare` of them.
 */
function tamperingRelay(port: number, spare: number): Promise<{ port: number; flipped: () => number; close: () => void }> {
  return new Promise((resolve) => {
    let flipped = 0;
    const socks: net.Socket[] = [];
    const srv = net.createServer((inbound) => {
      const out = net.connect({ host: "127.0.0.1", port });
      socks.push(inbound, out);
      let buf = Buffer.alloc(0);
      let large = 0;
      inbound.on("data", (d: Buffer) => out.write(d));
      out.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        // forward whole TLS records (5-byte header: type, version, length)
        while (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
          const n = 5 + buf.readUInt16BE(3);
          const rec = Buffer.from(buf.subarray(0, n));
          buf = buf.subarray(n);
          if (rec[0] === 0x17 && n > 1000 && large++ >= spare) {
            rec[5 + Math.floor((n - 5) / 2)]! ^= 0x01;
            flipped++;
          }
          inbound.write(rec);
        }
      });
      const end = (): void => void (inbound.destroy(), out.destroy());
      inbound.on("error", end).on("close", end);
      out.on("error", end).on("close", end);
    });
    srv.listen(0, "127.0.0.1", () => resolve({ port: (srv.address() as net.AddressInfo).port, flipped: () => flipped, close: () => (socks.forEach((s) => s.destroy()), srv.close()) }));
  });
}

test("a relay that changes bytes of the encrypted stream: the client fails with an integrity error, never prints forged text", { skip }, async (t) => {
  const w = await childWorker({ secret: SECRET });
  const relay = await tamperingRelay(w.port, 3);
  const expected = await greedy(await openModel(STORIES, { backend, maxSeqLen: 64 }), "Once upon a time", 20);
  const m = await openDistributedModel(STORIES, { workers: [{ host: "127.0.0.1", port: relay.port }], secret: Buffer.from(SECRET), backend, maxSeqLen: 64, log: quiet });
  let got: number[] | null = null;
  try {
    got = await greedy(m, "Once upon a time", 20);
  } catch (e) {
    assert.ok(e instanceof LlameshError, String(e));
    assert.match(e.message, /encrypted link failed its integrity check/);
    assert.ok(!e.message.includes("\n"), "one line");
  } finally {
    await m.close().catch(() => undefined);
  }
  assert.ok(relay.flipped() >= 1, "the relay changed a record");
  assert.equal(got, null, `the client must not return text from a tampered link (got ${got === null ? "" : got.join(",")}; single-node ${expected.join(",")})`);
  relay.close();
  await stillServes(w, SECRET);
  await w.stop();
});

/**
 * The same relay on an authenticated link without encryption (--no-encryption on both sides):
 * it parses the plain frames and makes token `forged` the best of every DONE's logits. The
 * client then returns the forged text: the relay really tampers, and only the AEAD of the
 * encrypted link (the test above) stops it.
 */
function forgingRelay(port: number, forged: number): Promise<{ port: number; close: () => void }> {
  return new Promise((resolve) => {
    const socks: net.Socket[] = [];
    const srv = net.createServer((inbound) => {
      const out = net.connect({ host: "127.0.0.1", port });
      socks.push(inbound, out);
      let buf = Buffer.alloc(0);
      inbound.on("data", (d: Buffer) => out.write(d));
      out.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= HEADER_BYTES && buf.length >= HEADER_BYTES + buf.readUInt32LE(12)) {
          const n = HEADER_BYTES + buf.readUInt32LE(12);
          const fr = Buffer.from(buf.subarray(0, n));
          buf = buf.subarray(n);
          if (fr.readUInt16LE(6) === MSG.DONE) {
            const logits = HEADER_BYTES + 16 + 8 * fr.readUInt32LE(HEADER_BYTES);
            if (logits + 4 * (forged + 1) <= n) fr.writeFloatLE(1e9, logits + 4 * forged);
          }
          inbound.write(fr);
        }
      });
      const end = (): void => void (inbound.destroy(), out.destroy());
      inbound.on("error", end).on("close", end);
      out.on("error", end).on("close", end);
    });
    srv.listen(0, "127.0.0.1", () => resolve({ port: (srv.address() as net.AddressInfo).port, close: () => (socks.forEach((s) => s.destroy()), srv.close()) }));
  });
}

test("without encryption the same kind of relay forges the text (why the links are encrypted by default)", { skip }, async () => {
  const w = await childWorker({ secret: SECRET, encrypt: false });
  const relay = await forgingRelay(w.port, 100);
  const m = await openDistributedModel(STORIES, { workers: [{ host: "127.0.0.1", port: relay.port }], secret: Buffer.from(SECRET), encrypt: false, backend, maxSeqLen: 64, log: quiet });
  try {
    assert.deepEqual(await greedy(m, "Once upon a time", 5), [100, 100, 100, 100, 100], "the relay chose every token");
  } finally {
    await m.close();
  }
  relay.close();
  await w.stop();
});
