/**
 * What the hardening and fuzz tests share: a worker in a child process (hardening-worker.ts) with
 * its memory and counters, raw connections that speak frames (plain or in the TLS tunnel), and a
 * real session's opening on stories260K (HELLO + AUTH, SETUP of the whole model, READY, MESH).
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { authProof, newNonce } from "../../src/cluster/auth.js";
import { modelFingerprint } from "../../src/cluster/cache.js";
import type { Limits } from "../../src/cluster/limits.js";
import { encodeFrame, encodeMesh, FrameReader, MSG, type Frame } from "../../src/cluster/protocol.js";
import { connectSocket, linkSecurity } from "../../src/cluster/secure.js";
import { openWeights, type LoadedModel } from "../../src/engine/open.js";
import { greedyTokens } from "../../src/engine/generate.js";
import { typePlan, type TypePlan } from "../../src/engine/types.js";
import { readNorms } from "../../src/engine/weights.js";
import type { LlamaConfig } from "../../src/model/config.js";
import { tempDir } from "../helpers/models.js";

/** `n` greedy tokens after `prompt`: what a real client gets from the worker after an attack. */
export async function greedy(m: LoadedModel, prompt: string, n: number): Promise<number[]> {
  return greedyTokens(m, m.tokenizer.encode(prompt, true), n);
}

export const SECRET = "0123456789abcdef0123456789abcdef";

export interface WorkerStats {
  counters: Record<string, number>;
  rss: number;
  heapUsed: number;
  connections: number;
}

export interface ChildWorker {
  port: number;
  child: ChildProcess;
  stderr: () => string;
  stats: () => Promise<WorkerStats>;
  /** RSS of the worker process now, in bytes (from /proc). */
  rss: () => number;
  alive: () => boolean;
  stop: () => Promise<void>;
}

// (not node:test's after(): bench/fuzz.ts uses this kit outside the test runner)
const live = new Set<ChildProcess>();
/** Kill every worker still running (a test file's after(): a failed test never reached its stop()). */
export function killAll(): void {
  for (const c of live) c.kill("SIGKILL");
  live.clear();
}
process.once("exit", killAll);

/** Start hardening-worker.js in a child process. */
export function childWorker(opts: { secret?: string; model?: string; limits?: Partial<Limits>; encrypt?: boolean } = {}): Promise<ChildWorker> {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), "hardening-worker.js");
  const child = spawn(process.execPath, [script, JSON.stringify({ ...opts, cacheDir: tempDir("llamesh-harden-cache-") })], { stdio: ["pipe", "pipe", "pipe"] });
  live.add(child);
  let err = "";
  let out = "";
  const statWaiters: ((s: WorkerStats) => void)[] = [];
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker did not start in 20 s: ${err}`)), 20_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (!/listening/.test(out)) reject(new Error(`worker exited with ${code}: ${err}`));
    });
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      let nl: number;
      while ((nl = out.indexOf("\n")) >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        const m = /^listening [^:]+:(\d+)$/.exec(line);
        if (m) {
          clearTimeout(timer);
          out = "listening\n" + out; // remembered for the exit check
          resolve({
            port: Number(m[1]), child, stderr: () => err,
            stats: () => new Promise((r) => (statWaiters.push(r), child.stdin!.write("stats\n"))),
            rss: () => rssOf(child.pid!),
            alive: () => child.exitCode === null && child.signalCode === null,
            stop: () => new Promise<void>((r) => {
              if (child.exitCode !== null || child.signalCode !== null) return r();
              child.once("exit", () => (live.delete(child), r()));
              child.stdin!.end();
              setTimeout(() => child.kill("SIGKILL"), 3000).unref();
            }),
          });
        } else if (line.startsWith("{")) {
          statWaiters.shift()?.(JSON.parse(line) as WorkerStats);
        }
      }
    });
  });
}

export function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}


export interface RawConn {
  socket: net.Socket;
  send: (b: Buffer) => void;
  /** The next frame, or "closed" when the worker closed the connection. */
  next: (timeoutMs?: number) => Promise<Frame | "closed" | "timeout">;
  closed: Promise<void>;
  close: () => void;
}

/** A raw connection to the worker: plain, or TLS keyed from `secret` (the tunnel only; no HELLO). */
export async function rawConn(port: number, secret?: string): Promise<RawConn> {
  const socket = secret
    ? await connectSocket("127.0.0.1", port, 5000, linkSecurity(Buffer.from(secret)), "test")
    : await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: "127.0.0.1", port }, () => resolve(s));
      s.once("error", reject);
    });
  socket.on("error", () => undefined);
  const reader = new FrameReader();
  const queue: (Frame | "closed")[] = [];
  const waiting: ((f: Frame | "closed") => void)[] = [];
  const push = (f: Frame | "closed"): void => {
    const w = waiting.shift();
    if (w) w(f);
    else queue.push(f);
  };
  socket.on("data", (d: Buffer) => {
    try {
      reader.push(d).forEach(push);
    } catch {
      socket.destroy();
    }
  });
  const closed = new Promise<void>((r) => socket.once("close", () => (push("closed"), r())));
  return {
    socket,
    send: (b) => void socket.write(b),
    next: (timeoutMs = 10_000) => {
      if (queue.length) return Promise.resolve(queue.shift()!);
      return new Promise((r) => {
        const t = setTimeout(() => {
          const i = waiting.indexOf(r);
          if (i >= 0) waiting.splice(i, 1);
          r("timeout");
        }, timeoutMs);
        waiting.push((f) => (clearTimeout(t), r(f)));
      });
    },
    closed,
    close: () => socket.destroy(),
  };
}

export function json(f: Frame | "closed" | "timeout"): { type: number; body: Record<string, unknown> } {
  if (f === "closed" || f === "timeout") throw new Error(`expected a frame, got ${f}`);
  return { type: f.type, body: JSON.parse(f.body.toString("utf8")) as Record<string, unknown> };
}

/** The ERROR's message (throws when `f` is not an ERROR). */
export function errorOf(f: Frame | "closed" | "timeout"): string {
  const j = json(f);
  if (j.type !== MSG.ERROR) throw new Error(`expected ERROR, got message ${j.type}`);
  return j.body["message"] as string;
}

/** HELLO (and AUTH with a secret) on `c`; resolves once HELLO_OK came. */
export async function hello(c: RawConn, fingerprint: string, secret?: string, type: number = MSG.HELLO, body: Record<string, unknown> = {}): Promise<Frame> {
  const cn = newNonce();
  c.send(encodeFrame(type, 1, JSON.stringify({ fingerprint, nonce: cn, ...body })));
  let f = await c.next();
  if (secret) {
    const ch = json(f);
    if (ch.type !== MSG.AUTH_CHALLENGE) throw new Error(`no challenge: ${JSON.stringify(ch.body)}`);
    c.send(encodeFrame(MSG.AUTH, 2, JSON.stringify({ proof: authProof(Buffer.from(secret), "client", cn, ch.body["nonce"] as string) })));
    f = await c.next();
  }
  if (f === "closed" || f === "timeout") throw new Error(`handshake: ${f}`);
  if (f.type === MSG.ERROR) throw new Error(`handshake refused: ${f.body.toString()}`);
  return f;
}

/** A real model's SETUP: its fingerprint, config, type plan and norms. */
export interface ModelFacts {
  fingerprint: string;
  config: LlamaConfig;
  plan: TypePlan;
  norms: Float32Array;
  slice: { kv0: number; kv1: number; hb0: number; hb1: number; v0: number; v1: number };
}

export function modelFacts(dir: string): ModelFacts {
  const { config, source, configText } = openWeights(dir);
  try {
    return {
      fingerprint: modelFingerprint(configText, source.files), config, plan: typePlan(source, config, "Q8_0"), norms: readNorms(source, config),
      slice: { kv0: 0, kv1: config.nKvHeads, hb0: 0, hb1: Math.ceil(config.hiddenDim / 32), v0: 0, v1: config.vocabSize },
    };
  } finally {
    source.close();
  }
}

export function setupBody(m: ModelFacts, over: Record<string, unknown> = {}, configOver: Record<string, unknown> = {}): string {
  return JSON.stringify({ config: { ...m.config, ...configOver }, slice: m.slice, seqLen: 64, batch: 8, slots: 1, types: m.plan, ...over });
}

/**
 * Open a session up to the step program on a worker with --model (it cuts the slice itself):
 * HELLO, SETUP, READY, MESH with `members` (this worker rank 0 by default). Returns the session token.
 */
export async function joinMesh(c: RawConn, m: ModelFacts, members: unknown[], secret?: string, rank = 0): Promise<string> {
  await hello(c, m.fingerprint, secret);
  c.send(encodeFrame(MSG.SETUP, 3, setupBody(m)));
  const s = json(await c.next(30_000));
  if (s.type !== MSG.SETUP_OK || (s.body["missing"] as unknown[]).length !== 0) throw new Error(`setup: ${JSON.stringify(s.body)}`);
  c.send(encodeFrame(MSG.READY, 4, "{}"));
  if (json(await c.next()).type !== MSG.READY_OK) throw new Error("ready");
  const token = newNonce();
  c.send(encodeFrame(MSG.MESH, 5, encodeMesh({ session: token, rank, reduce: "mesh", members }, m.norms)));
  const r = json(await c.next());
  if (r.type !== MSG.MESH_OK) throw new Error(`mesh: ${JSON.stringify(r.body)}`);
  return token;
}

/** This worker as the whole model, for a mesh's member list. */
export function wholeMember(rank: number, port: number): Record<string, unknown> {
  return { rank, label: `127.0.0.1:${port}`, host: "127.0.0.1", port, attn: true, ffn: true, logits: true };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
