/**
 * Fuzzing a worker: `node dist/bench/fuzz.js [--frames N] [--seed S] [--concurrency C] [--secret both|yes|no]`
 * (after `npm run build`). The CI test (test/cluster/fuzz.test.ts) runs the same engine, bounded.
 *
 * A worker runs in a child process with --model stories260K and a 256 MB memory budget for
 * slices. Many connections at once, each one of:
 * - random bytes (plain, or a fake TLS start, or plain bytes to a worker that encrypts);
 * - a session: the handshake (now and then mutated), then SETUP, READY, MESH, LINK, STEPs,
 *   PARTIALs, PINGs, STATS, WEIGHTS, ABORT, PEER and frames of random type, each mutated with
 *   probability 0.35: bits flipped, bytes set to edge values, truncated, extended, the header's
 *   length, type or version changed, a JSON number replaced by 1e308, 2**53, -1..., a string by
 *   100 KB, a key dropped, a binary u32 set to an edge value;
 * then the connection is ended or cut, sometimes halfway through a frame.
 * Meanwhile a probe connection PINGs every 250 ms (a PONG later than 5 s is a hang) and the
 * worker's RSS is sampled every 100 ms. Checked: no crash, no hang, the RSS peak under the bound;
 * then a real client gets the single-machine text from the same worker.
 */
import * as net from "node:net";
import { fileURLToPath } from "node:url";
import { newNonce } from "../src/cluster/auth.js";
import { decodeMesh, encodeFrame, encodeMesh, encodePartial, encodeStep, encodeWeightChunk, HEADER_BYTES, MSG, PROTOCOL_VERSION } from "../src/cluster/protocol.js";
import { connectSocket, linkSecurity } from "../src/cluster/secure.js";
import { childWorker, hello, modelFacts, rawConn, SECRET, setupBody, sleep, wholeMember, type ChildWorker, type ModelFacts } from "../test/cluster/hardening-kit.js";
import { STORIES } from "../test/helpers/models.js";
import { SeededRandom } from "../src/synthetic/checkpoint.js";

/** The limits a fuzzed worker runs with (short deadlines so the run is not spent waiting). */
export const FUZZ_LIMITS = { maxMemoryBytes: 256 * 1024 * 1024, peerConnectMs: 300, handshakeDeadlineMs: 3000 };
/** What the worker's RSS may reach during a run: its slices' budget plus a fixed allowance. */
export const FUZZ_RSS_BOUND = 256 * 1024 * 1024 + 384 * 1024 * 1024;

export interface FuzzResult {
  secret: boolean;
  frames: number;
  connections: number;
  crashed: boolean;
  hangs: number;
  /** Slowest PONG of the probe, ms. */
  maxPongMs: number;
  rssStart: number;
  rssPeak: number;
  seconds: number;
  counters: Record<string, number>;
}

/** A seeded uniform generator (the synthetic checkpoints' mulberry32: the run is reproducible from its seed). */
function prng(seed: number): () => number {
  const r = new SeededRandom(seed);
  return () => r.uniform();
}

type Rnd = () => number;
const int = (r: Rnd, n: number): number => Math.floor(r() * n);
const pick = <T>(r: Rnd, xs: readonly T[]): T => xs[int(r, xs.length)]!;
const EDGE_U32 = [0, 1, 2, 0x7f, 0x80, 0xff, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 65536, 3_000_000];
const EDGE_JSON: unknown[] = [0, -1, 1, 1.5, 2 ** 31, 2 ** 32, 2 ** 53, 1e308, -1e308, 3e6, 1024, 1025, null, true, "", "x".repeat(100_000), [], {}, [1, 2, 3], "NaN"];

function randomBytes(r: Rnd, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = int(r, 256);
  return b;
}

/** Replace one value somewhere in a JSON value (numbers, strings, keys, nesting). */
function mutateJson(r: Rnd, v: unknown, depth = 0): unknown {
  if (Array.isArray(v)) {
    if (v.length === 0 || r() < 0.2) return pick(r, EDGE_JSON);
    const out = v.slice();
    const i = int(r, out.length);
    if (r() < 0.15) out.push(...Array.from({ length: 300 }, () => out[i]));
    else out[i] = mutateJson(r, out[i], depth + 1);
    return out;
  }
  if (v !== null && typeof v === "object") {
    const o = { ...(v as Record<string, unknown>) };
    const keys = Object.keys(o);
    if (keys.length === 0 || depth > 4) return pick(r, EDGE_JSON);
    const k = pick(r, keys);
    const roll = r();
    if (roll < 0.15) delete o[k];
    else if (roll < 0.25) o[`${k}_${int(r, 9)}`] = pick(r, EDGE_JSON);
    else o[k] = r() < 0.6 ? mutateJson(r, o[k], depth + 1) : pick(r, EDGE_JSON);
    return o;
  }
  return pick(r, EDGE_JSON);
}

/** One mutation of a whole frame (header and body). */
export function mutateFrame(r: Rnd, f: Buffer): Buffer {
  const b = Buffer.from(f);
  const body = b.subarray(HEADER_BYTES);
  switch (int(r, 9)) {
    case 0: { // bits
      for (let i = int(r, 8) + 1; i > 0; i--) b[int(r, b.length)]! ^= 1 << int(r, 8);
      return b;
    }
    case 1: { // edge bytes
      for (let i = int(r, 4) + 1; i > 0; i--) b[int(r, b.length)] = pick(r, [0, 0xff, 0x7f, 0x80, 0x16, 0x4c]);
      return b;
    }
    case 2: return b.subarray(0, int(r, b.length)); // truncated (the rest never comes)
    case 3: return Buffer.concat([b, randomBytes(r, int(r, 512))]);
    case 4: b.writeUInt32LE(pick(r, [0, 1, body.length - 1, body.length + 1, 65535, 65537, 0x4000000, 0x4000001, 0xffffffff].map((x) => x >>> 0)), 12); return b;
    case 5: b.writeUInt16LE(int(r, 32), 6); return b;
    case 6: b.writeUInt16LE(pick(r, [0, 1, 3, PROTOCOL_VERSION + 1, 0xffff]), 4); return b;
    case 7: { // a u32 of a binary body
      if (body.length < 4) return b;
      body.writeUInt32LE(pick(r, EDGE_U32) >>> 0, 4 * int(r, body.length >> 2));
      return b;
    }
    default: { // JSON-aware, framing kept valid
      let j: unknown;
      try {
        j = JSON.parse(body.toString("utf8"));
      } catch {
        if (b.readUInt16LE(6) === MSG.MESH && body.length >= 4) {
          try {
            const m = decodeMesh(body);
            return encodeFrame(MSG.MESH, b.readUInt32LE(8), encodeMesh(mutateJson(r, m.json), r() < 0.2 ? m.norms.subarray(0, int(r, m.norms.length)) : m.norms));
          } catch {
            return b;
          }
        }
        return b;
      }
      return encodeFrame(b.readUInt16LE(6), b.readUInt32LE(8), JSON.stringify(mutateJson(r, j)));
    }
  }
}

/** The valid frames of a session on stories260K, in order, for worker port `port`. */
function sessionFrames(r: Rnd, m: ModelFacts, port: number): Buffer[] {
  const token = newNonce();
  const dimP = Math.ceil(m.config.dim / 32) * 32;
  const out: Buffer[] = [
    encodeFrame(MSG.SETUP, 3, setupBody(m, { seqLen: 32 + int(r, 64), batch: 1 + int(r, 8) })),
    encodeFrame(MSG.READY, 4, "{}"),
    encodeFrame(MSG.MESH, 5, encodeMesh({ session: token, rank: 0, reduce: pick(r, ["mesh", "scatter", "relay"]), members: [wholeMember(0, port)] }, m.norms)),
    encodeFrame(MSG.LINK, 6, "{}"),
  ];
  for (let i = 0; i < 1 + int(r, 10); i++) {
    const nTok = 1 + int(r, 3);
    out.push(encodeFrame(MSG.STEP, 10 + i, encodeStep(i, [{ slot: 0, pos: i * 3, nTok }], new Float32Array(nTok * dimP).map(() => r() - 0.5))));
  }
  const extra = [
    encodeFrame(MSG.PARTIAL, 0, encodePartial(int(r, 4), int(r, 10), new Float32Array(dimP))),
    encodeFrame(MSG.PING, 30, "{}"), encodeFrame(MSG.STATS, 31, "{}"), encodeFrame(MSG.ABORT, 32, "{}"),
    encodeFrame(MSG.WEIGHTS, 0, encodeWeightChunk(`k${int(r, 99)}`, int(r, 4096), randomBytes(r, int(r, 2048)))),
    encodeFrame(MSG.PEER, 33, JSON.stringify({ session: token, rank: int(r, 3), nonce: newNonce() })),
    encodeFrame(MSG.SETUP, 34, setupBody(m)),
    encodeFrame(int(r, 40), int(r, 1000), randomBytes(r, int(r, 300))),
  ];
  for (let i = 0; i < 2 + int(r, 5); i++) out.splice(int(r, out.length + 1), 0, pick(r, extra));
  return out;
}

/** Open a raw socket: plain, or the TLS tunnel when `secret`. */
async function open(port: number, secret: string | undefined): Promise<net.Socket> {
  const s = secret ? await connectSocket("127.0.0.1", port, 5000, linkSecurity(Buffer.from(secret)), "fuzz") : await new Promise<net.Socket>((resolve, reject) => {
    const c = net.connect({ host: "127.0.0.1", port }, () => resolve(c));
    c.once("error", reject);
  });
  s.on("error", () => undefined);
  s.on("data", () => undefined); // replies are read (and dropped): a peer that never reads is another test
  return s;
}

/** One fuzzing connection; returns the frames sent. */
export async function oneConnection(r: Rnd, m: ModelFacts, port: number, secret: string | undefined): Promise<number> {
  let sent = 0;
  if (r() < 0.25) {
    // garbage: plain random bytes, a fake TLS record, or plain frames to a worker that encrypts
    const s = await open(port, undefined);
    const first = r() < 0.3 ? Buffer.from([0x16, 0x03, 0x01, int(r, 256), int(r, 256)]) : Buffer.alloc(0);
    for (let i = 0; i < 1 + int(r, 4); i++, sent++) s.write(i === 0 ? Buffer.concat([first, randomBytes(r, int(r, 3000))]) : r() < 0.5 ? mutateFrame(r, encodeFrame(MSG.HELLO, 1, JSON.stringify({ fingerprint: m.fingerprint, nonce: newNonce() }))) : randomBytes(r, int(r, 3000)));
    await sleep(int(r, 30));
    s.destroy();
    return sent;
  }
  let s: net.Socket;
  const frames: Buffer[] = [];
  if (r() < 0.85) {
    // a correct handshake first, so the fuzzing reaches the states behind it
    const c = await rawConn(port, secret).catch(() => null);
    if (!c) return 0; // refused over the cap: fine
    try {
      await hello(c, m.fingerprint, secret);
    } catch {
      c.close();
      return 1;
    }
    sent += secret ? 2 : 1;
    s = c.socket;
  } else {
    try {
      s = await open(port, secret);
    } catch {
      return 0;
    }
    frames.push(encodeFrame(MSG.HELLO, 1, JSON.stringify({ fingerprint: m.fingerprint, nonce: newNonce() })));
  }
  frames.push(...sessionFrames(r, m, port));
  for (const f of frames) {
    if (s.destroyed) break;
    s.write(r() < 0.35 ? mutateFrame(r, f) : f);
    sent++;
    if (r() < 0.3) await sleep(int(r, 5));
  }
  await sleep(int(r, 60));
  if (r() < 0.5) s.end();
  else s.destroy();
  return sent;
}

/** PING the worker every 250 ms on an authenticated session; the slowest PONG and the count of hangs (none within 5 s). */
async function probe(w: ChildWorker, m: ModelFacts, secret: string | undefined, stop: () => boolean): Promise<{ maxMs: number; hangs: number }> {
  const c = await rawConn(w.port, secret);
  await hello(c, m.fingerprint, secret);
  let maxMs = 0;
  let hangs = 0;
  for (let id = 100; !stop(); id++) {
    const t0 = performance.now();
    c.send(encodeFrame(MSG.PING, id, "{}"));
    const f = await c.next(5000);
    if (f === "timeout" || f === "closed") {
      hangs++;
      if (f === "closed") break;
    }
    maxMs = Math.max(maxMs, performance.now() - t0);
    await sleep(250);
  }
  c.close();
  return { maxMs, hangs };
}

/** Fuzz worker `w` with `frames` frames (at least) over `concurrency` connections at a time. */
export async function fuzzWorker(w: ChildWorker, opts: { frames: number; secret?: string; seed: number; concurrency: number }): Promise<FuzzResult> {
  const m = modelFacts(STORIES);
  const r = prng(opts.seed);
  const t0 = performance.now();
  const rssStart = w.rss();
  let rssPeak = rssStart;
  const sampler = setInterval(() => {
    if (w.alive()) rssPeak = Math.max(rssPeak, w.rss());
  }, 100);
  let done = false;
  const probing = probe(w, m, opts.secret, () => done || !w.alive());
  let frames = 0;
  let connections = 0;
  const lane = async (): Promise<void> => {
    while (frames < opts.frames && w.alive()) {
      connections++;
      const n = await oneConnection(prng(int(r, 2 ** 31)), m, w.port, opts.secret).catch(() => 0);
      frames += n; // (not `frames += await ...`: that reads frames before the await, and lanes would overwrite each other)
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, lane));
  done = true;
  const p = await probing;
  clearInterval(sampler);
  const crashed = !w.alive();
  const counters = crashed ? {} : (await w.stats()).counters;
  return { secret: opts.secret !== undefined, frames, connections, crashed, hangs: p.hangs, maxPongMs: p.maxMs, rssStart, rssPeak, seconds: (performance.now() - t0) / 1000, counters };
}

export function fuzzLine(x: FuzzResult): string {
  const mb = (b: number): string => (b / 1048576).toFixed(0);
  return `${x.secret ? "secret (TLS)" : "no secret   "}  ${x.frames} frames, ${x.connections} connections in ${x.seconds.toFixed(1)} s: ${x.crashed ? "CRASHED" : "no crash"}, ${x.hangs} hangs (slowest PONG ${x.maxPongMs.toFixed(0)} ms), RSS ${mb(x.rssStart)} -> peak ${mb(x.rssPeak)} MB (bound ${mb(FUZZ_RSS_BOUND)}), ${x.counters["errorsSent"] ?? "?"} errors sent, ${x.counters["connectionsClosed"] ?? "?"} connections closed by a limit`;
}

async function main(): Promise<void> {
  const arg = (name: string, dflt: string): string => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? process.argv[i + 1]! : dflt;
  };
  const frames = Number(arg("frames", "100000"));
  const seed = Number(arg("seed", String(Date.now() % 1e9)));
  const concurrency = Number(arg("concurrency", "8"));
  const which = arg("secret", "both");
  const modes = which === "both" ? [undefined, SECRET] : which === "yes" ? [SECRET] : [undefined];
  console.log(`fuzz: ${frames} frames per mode, seed ${seed}, ${concurrency} connections at a time, stories260K`);
  let bad = false;
  for (const secret of modes) {
    const w = await childWorker({ model: STORIES, secret, limits: FUZZ_LIMITS });
    const x = await fuzzWorker(w, { frames, secret, seed, concurrency });
    console.log(fuzzLine(x));
    bad ||= x.crashed || x.hangs > 0 || x.rssPeak > FUZZ_RSS_BOUND;
    if (x.crashed) console.log(w.stderr().split("\n").slice(-20).join("\n"));
    await w.stop();
  }
  process.exitCode = bad ? 1 : 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
