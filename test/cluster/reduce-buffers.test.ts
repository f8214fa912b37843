/**
 * The mesh's hot path reuses its buffers (reduce.ts, inbox.ts): a frame buffer is written again
 * only when every link has flushed it, a received part's buffer only after its sync was added, and
 * the inbox's one timer still fails every wait that outlives the deadline. Against plain
 * references: the bytes partialFrame/decodePartial would give, and sums added in rank order.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Inbox } from "../../src/cluster/inbox.js";
import { MeshReduce, type MemberInfo } from "../../src/cluster/reduce.js";
import { decodePartial, encodeFrame, encodePartial, FrameReader, MSG } from "../../src/cluster/protocol.js";

const members: MemberInfo[] = [
  { rank: 0, label: "a", host: "10.0.0.1", port: 1, attn: true, ffn: true, logits: true },
  { rank: 1, label: "b", host: "10.0.0.2", port: 2, attn: true, ffn: true, logits: true },
];

function values(n: number, seed: number): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = Math.sin(seed * 1000 + i) * 3;
  return v;
}

test("a frame buffer is written again only when the link has flushed it, and every frame sent is the reference frame", async () => {
  const dim = 64;
  const sent: Buffer[] = [];
  const snapshots: Buffer[] = [];
  let idle = false;
  const r = new MeshReduce(0, members, dim, 2);
  r.links.set(1, { send: (f) => (sent.push(f), snapshots.push(Buffer.from(f))), idle: () => idle });
  const peer = new MeshReduce(1, members, dim, 2);
  for (let seq = 0; seq < 6; seq++) {
    idle = seq >= 3; // the first frames are still queued: each needs a buffer of its own
    const own = values(dim, seq), theirs = values(dim, 100 + seq);
    const p = r.reduce(7, seq, own, 1);
    peer.deliver(0, { version: 2, type: MSG.PARTIAL, id: 7, body: sent[sent.length - 1]!.subarray(16) });
    r.deliver(1, { version: 2, type: MSG.PARTIAL, id: 7, body: encodePartial(7, seq, theirs) });
    const sum = await p;
    for (let i = 0; i < dim; i++) assert.equal(sum[i], Math.fround(own[i]! + theirs[i]!));
  }
  // frames sent while the link was busy (syncs 0 and 1: busy still at the next sync) were never
  // overwritten (the copies taken at send time agree); sync 2's was flushed by sync 3 and may be
  for (let k = 0; k < 2; k++) assert.deepEqual(sent[k], snapshots[k], `frame ${k} changed after it was sent`);
  assert.notEqual(sent[0]!.buffer, sent[1]!.buffer);
  // once idle, one buffer serves every sync
  assert.equal(sent[4]!.buffer, sent[5]!.buffer);
  // the bytes are the reference encoding
  for (let k = 0; k < 6; k++) assert.deepEqual(snapshots[k], encodeFrame(MSG.PARTIAL, 7, encodePartial(7, k, values(dim, k))));
  const frames = new FrameReader().push(Buffer.concat(snapshots));
  assert.deepEqual(decodePartial(frames[5]!.body).values, values(dim, 5));
});

test("parts that arrive ahead keep their values until their sync is added", async () => {
  const dim = 32;
  const r = new MeshReduce(0, members, dim, 1);
  r.links.set(1, { send: () => undefined, idle: () => true });
  // the peer runs three syncs ahead: three parts wait in the inbox, each in its own buffer
  for (let seq = 0; seq < 3; seq++) r.deliver(1, { version: 2, type: MSG.PARTIAL, id: 1, body: encodePartial(1, seq, values(dim, 50 + seq)) });
  assert.equal(r.pending, 3);
  for (let seq = 0; seq < 3; seq++) {
    const own = values(dim, seq);
    const sum = await r.reduce(1, seq, own, 1);
    for (let i = 0; i < dim; i++) assert.equal(sum[i], Math.fround(own[i]! + values(dim, 50 + seq)[i]!), `sync ${seq} value ${i}`);
    // a part for a later sync arriving now goes into a free buffer, not the one just added
    r.deliver(1, { version: 2, type: MSG.PARTIAL, id: 1, body: encodePartial(1, seq + 3, values(dim, 53 + seq)) });
  }
  assert.equal(r.pending, 3);
});

test("the inbox's one timer fails each wait once it is older than the deadline, and only then", async () => {
  const box = new Inbox<number, number>(120, (k) => `key ${k}`);
  const alive = setInterval(() => undefined, 10); // the inbox's timer does not keep the process up
  const t0 = performance.now();
  const first = box.take(1) as Promise<number>;
  await new Promise((r) => setTimeout(r, 60));
  const second = box.take(2) as Promise<number>;
  const third = box.take(3) as Promise<number>;
  box.put(3, 33);
  assert.equal(await third, 33);
  await assert.rejects(first, /key 1: nothing within 0.12 s/);
  const firstAt = performance.now() - t0;
  await assert.rejects(second, /key 2: nothing within 0.12 s/);
  const secondAt = performance.now() - t0;
  assert.ok(firstAt >= 115, `first wait failed after ${firstAt.toFixed(0)} ms, before its deadline`);
  assert.ok(secondAt >= 175, `second wait failed after ${secondAt.toFixed(0)} ms, before its deadline (started at ~60)`);
  // values put before anyone waits are taken at once; fail() rejects waits now and later
  box.put(4, 44);
  assert.equal(box.take(4), 44);
  const waiting = box.take(5) as Promise<number>;
  box.fail(new Error("link gone"));
  await assert.rejects(waiting, /link gone/);
  assert.throws(() => box.take(6), /link gone/);
  clearInterval(alive);
});
