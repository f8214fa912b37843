/**
 * The scatter reduce (reduce-scatter + all-gather, reduce.ts ScatterReduce), the default above 4
 * nodes: in process, every member's sum equals the rank-order f32 sum of the parts (computed here
 * with Math.fround, element by element) and the mesh's, bit for bit, also with a member that holds
 * no part of a sync and with chunks that do not divide evenly; a wrong-sized chunk is named. On
 * loopback, 5 worker processes and a local share pick the scatter by themselves and give the
 * single machine's greedy text and logits.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel } from "../../src/engine/open.js";
import { openDistributedModel } from "../../src/cluster/client.js";
import { MeshReduce, ScatterReduce, type Link, type MemberInfo } from "../../src/cluster/reduce.js";
import { encodePartial, FrameReader, MSG, PROTOCOL_VERSION, type Frame } from "../../src/cluster/protocol.js";
import { STORIES, skipUnless } from "../helpers/models.js";
import { spawnWorker } from "./helpers.js";

const backend = await createBackend({ threads: 1 });
after(() => backend.close());
const quiet = (): void => undefined;

/** Members 0..n-1; member `noAttn` holds no attention part (its own part of even syncs is null). */
function membersOf(n: number, noAttn: number): MemberInfo[] {
  return Array.from({ length: n }, (_, rank) => ({ rank, label: `m${rank}`, host: "h", port: 1000 + rank, attn: rank !== noAttn, ffn: true, logits: rank === 0 }));
}

/** Wire reducers to each other through frame parsing, as the sockets would (asynchronously). */
function wire<R extends MeshReduce | ScatterReduce>(rs: R[]): void {
  for (const from of rs) {
    for (const to of rs) {
      if (to === from) continue;
      const reader = new FrameReader();
      const link: Link = {
        send: (buf) => queueMicrotask(() => {
          for (const f of reader.push(Buffer.from(buf)) as Frame[]) to.deliver(from.rank, f);
        }),
      };
      from.links.set(to.rank, link);
    }
  }
}

function parts(n: number, len: number, seed: number): Float32Array[] {
  let s = seed;
  const rnd = (): number => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * 2 ** ((s >>> 3) % 17 - 8);
  return Array.from({ length: n }, () => Float32Array.from({ length: len }, rnd));
}

/** Rank-order f32 sum of the parts held (null = no part), one element at a time. */
function referenceSum(ps: (Float32Array | null)[], len: number): Float32Array {
  const out = new Float32Array(len);
  for (let i = 0; i < len; i++) {
    let acc: number | null = null;
    for (const p of ps) if (p) acc = acc === null ? p[i]! : Math.fround(acc + p[i]!);
    out[i] = acc ?? 0;
  }
  return out;
}

test("ScatterReduce: every member gets the rank-order f32 sum, the same bits as the mesh", async () => {
  for (const n of [2, 3, 5, 7]) {
    const dimP = 52; // 3 tokens x 52 values: chunks of 156 / n do not divide evenly for 5, 7
    const members = membersOf(n, n - 1);
    const scatter = members.map((m) => new ScatterReduce(m.rank, members, dimP, 4));
    const mesh = members.map((m) => new MeshReduce(m.rank, members, dimP, 4));
    wire(scatter);
    wire(mesh);
    for (const [step, seq, nTok] of [[0, 0, 3], [0, 1, 3], [1, 0, 1], [1, 1, 4]] as const) {
      const len = nTok * dimP;
      const ps = parts(n, len, 17 * step + seq + n).map((p, r) => ((seq & 1) === 0 && r === n - 1 ? null : p));
      const want = referenceSum(ps, len);
      const gotScatter = await Promise.all(scatter.map((r, i) => r.reduce(step, seq, ps[i]!, nTok).then((v) => v.slice(0, len))));
      const gotMesh = await Promise.all(mesh.map((r, i) => r.reduce(step, seq, ps[i]!, nTok).then((v) => v.slice(0, len))));
      for (let i = 0; i < n; i++) {
        assert.deepEqual(new Uint32Array(gotScatter[i]!.buffer), new Uint32Array(want.buffer), `scatter, ${n} members, member ${i}, step ${step} sync ${seq}`);
        assert.deepEqual(new Uint32Array(gotMesh[i]!.buffer), new Uint32Array(want.buffer), `mesh, ${n} members, member ${i}, step ${step} sync ${seq}`);
      }
    }
    for (const r of scatter) assert.equal(r.pending, 0, "every chunk used");
    // each member sends 2(n-1) chunks of about len/n (plus headers) instead of the mesh's n-1 parts
    const sent = scatter[0]!.bytesSent;
    const meshSent = mesh[0]!.bytesSent;
    if (n >= 3) assert.ok(sent < meshSent, `${n} members: scatter sent ${sent} bytes, mesh ${meshSent}`);
  }
});

test("ScatterReduce: a chunk of the wrong size fails the sync with the sender's name", async () => {
  const members = membersOf(3, -1);
  const a = new ScatterReduce(0, members, 8, 1);
  for (const r of [1, 2]) a.links.set(r, { send: () => undefined });
  const frame = (values: number): Frame => {
    const body = encodePartial(0, 0, new Float32Array(values));
    return { version: PROTOCOL_VERSION, type: MSG.PARTIAL, id: 0, body };
  };
  const sync = a.reduce(0, 0, new Float32Array(8), 1); // its chunk is values 0..2 of 8
  a.deliver(1, frame(2));
  a.deliver(2, frame(1));
  await assert.rejects(sync, /scatter: m2 sent 1 values for sync 0 of step 0, expected 2/);
});

test("5 workers and a local share: auto picks the scatter; greedy text and logits are the single machine's", { skip: skipUnless(STORIES) }, async () => {
  const single = await openModel(STORIES, { backend, maxSeqLen: 96 });
  const ids = single.tokenizer.encode("Once upon a time", true);
  const argmax = (l: Float32Array): number => l.reduce((b, v, i, a) => (v > a[b]! ? i : b), 0);
  const want: Float32Array[] = [];
  const tokens = [...ids];
  for (let pos = 0, chunk = ids; want.length < 24; pos += chunk.length, chunk = [tokens.at(-1)!]) {
    const l = (await single.forward(chunk, pos)).slice();
    want.push(l);
    tokens.push(argmax(l));
  }
  const ws = await Promise.all([0, 1, 2, 3, 4].map(() => spawnWorker()));
  try {
    const workers = ws.map((w) => ({ host: "127.0.0.1", port: w.port, share: 16 }));
    const byTopology = new Map<string, Float32Array[]>();
    for (const topology of [undefined, "mesh"] as const) {
      const m = await openDistributedModel(STORIES, { workers, localShare: 20, topology, backend, maxSeqLen: 96, log: quiet });
      try {
        assert.equal(m.topology, topology ?? "scatter", "auto: 6 nodes with a part -> scatter");
        const got: Float32Array[] = [];
        for (let pos = 0, i = 0; i < want.length; i++) {
          const chunk = i === 0 ? ids : [tokens[ids.length + i - 1]!];
          got.push((await m.forward(chunk, pos)).slice());
          pos += chunk.length;
        }
        // with the same plan the mesh and the scatter add the same parts in the same order: same bits
        for (let i = 0; i < want.length; i++) assert.equal(argmax(got[i]!), tokens[ids.length + i], `${m.topology}: token ${i}`);
        if (m.topology === "scatter") assert.ok(m.clusterReport().some((l) => l.startsWith("Cluster (scatter:")), m.clusterReport().join("\n"));
        byTopology.set(m.topology, got);
      } finally {
        await m.close();
      }
    }
    for (let i = 0; i < want.length; i++) assert.deepEqual(new Uint32Array(byTopology.get("scatter")![i]!.buffer), new Uint32Array(byTopology.get("mesh")![i]!.buffer), `step ${i}: scatter and mesh differ`);
  } finally {
    await Promise.all(ws.map((w) => w.stop()));
  }
});
