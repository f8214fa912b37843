/**
 * The client's view of its cluster, setup and recovery: connect and shake hands with every worker
 * (authenticating when there is a shared secret), plan the shares, give every worker the slices it
 * lacks, and, when a worker is lost, plan again over the ones left. The per-token side is the
 * Coordinator (coordinator.ts).
 */
import type { KernelBackend } from "../kernels/kernels.js";
import type { TensorSource } from "../core/tensor-source.js";
import { LlameshError } from "../core/errors.js";
import { formatBytes } from "../core/format.js";
import { extractSlices, ModelSlice, sliceDescs, sliceMacs, type SliceDesc } from "../engine/slice.js";
import type { LlamaConfig } from "../model/config.js";
import { widestBlock, type TypePlan } from "../engine/types.js";
import { hfNames } from "../engine/weights.js";
import { openSession } from "./auth.js";
import { withKeys } from "./cache.js";
import { Connection, jsonOf } from "./connection.js";
import { linkSecurity } from "./secure.js";
import { emptyStats, type ClusterNode, type WorkerNode } from "./nodes.js";
import { planCluster, type ClusterPlan } from "./planner.js";
import { encodeWeightChunk, MSG } from "./protocol.js";

/** The blocks column splits must respect: the widest among o_proj's types and among down's. */
export function planBlocks(c: LlamaConfig, plan: TypePlan): { attn: number; ffn: number } {
  const layers = Array.from({ length: c.nLayers }, (_, l) => hfNames.layer(l));
  return { attn: widestBlock(layers.map((n) => plan[n.wo]!)), ffn: widestBlock(layers.map((n) => plan[n.down]!)) };
}

export interface WorkerSpec {
  host: string;
  port: number;
  /** Relative share of the work; absent: follow the worker's measured GMAC. */
  share?: number;
}

/** How often lost workers are tried again, and how long one attempt may take. */
const REJOIN_PROBE_MS = 2000;
const REJOIN_CONNECT_MS = 1500;
/** How often an idle session says it is alive. */
const KEEPALIVE_MS = 60_000;

/** Connect to a worker and shake hands (authenticating when there is a secret). */
async function hello(s: ClusterSetup, w: WorkerSpec, timeoutMs: number, opened: (c: Connection) => void, quiet = false): Promise<WorkerHello> {
  const tc = performance.now();
  const conn = await Connection.connect(w.host, w.port, timeoutMs, linkSecurity(s.secret, s.encrypt));
  opened(conn);
  try {
    const j = jsonOf(await openSession(conn, MSG.HELLO, { fingerprint: s.fingerprint, client: "llamesh" }, s.secret), MSG.HELLO_OK, `worker ${conn.label}`);
    const gmac = typeof j["gmac"] === "number" ? j["gmac"] : 1;
    const threads = typeof j["threads"] === "number" ? j["threads"] : 1;
    if (!quiet) s.log(`Connected to worker ${conn.label}: ${threads} thread${threads === 1 ? "" : "s"}, ${gmac.toFixed(2)} GMAC, in ${(performance.now() - tc).toFixed(1)} ms`);
    return { conn, gmac, threads, spec: w };
  } catch (e) {
    conn.close();
    throw e;
  }
}

/** A worker that answered the handshake. */
interface WorkerHello {
  conn: Connection;
  gmac: number;
  threads: number;
  spec: WorkerSpec;
}

export interface ClusterSetup {
  config: LlamaConfig;
  /** The matrices' types (engine/types.ts): the slices travel and compute in them. */
  plan: TypePlan;
  /** The model's fingerprint (cache.ts modelFingerprint): workers key their slices by it. */
  fingerprint: string;
  workers: WorkerSpec[];
  /** See DistributedOptions.localShare. */
  localShare: number;
  backend: KernelBackend;
  seqLen: number;
  batch: number;
  /** KV regions every node holds (sequences served at once). */
  slots: number;
  secret: Buffer | null;
  /** Encrypt the links when there is a secret (secure.ts); default true. */
  encrypt?: boolean;
  connectTimeoutMs: number;
  log: (line: string) => void;
}

export class Cluster {
  /** The nodes of the current plan, in plan order (the client's own share first, when it has one). */
  nodes: ClusterNode[] = [];
  plan: ClusterPlan | null = null;
  private alive: WorkerHello[];
  /** Workers lost during the run (their --workers entries), and those of them answering again. */
  private lost: WorkerSpec[] = [];
  private back: WorkerHello[] = [];
  private watchTimer: NodeJS.Timeout | null = null;
  private probing = false;
  private closed = false;
  private readonly keepAlive: NodeJS.Timeout;
  private readonly explicit: boolean;
  private readonly local: number;

  private constructor(private readonly s: ClusterSetup, hellos: WorkerHello[]) {
    this.alive = hellos;
    // a PING now and then keeps an idle session open (workers close connections idle for long)
    this.keepAlive = setInterval(() => {
      for (const h of this.alive) if (!h.conn.error) h.conn.request(MSG.PING, "{}", KEEPALIVE_MS).catch(() => undefined);
    }, KEEPALIVE_MS);
    this.keepAlive.unref();
    this.explicit = s.workers.length > 0 && s.workers.every((w) => w.share !== undefined);
    // with explicit shares the local share is a weight like theirs; otherwise a percentage of the whole
    this.local = this.explicit ? s.localShare : Math.min(100, s.localShare);
  }

  /** Connect and shake hands with every worker, in parallel; no connection is left open behind an error. */
  static async connect(s: ClusterSetup): Promise<Cluster> {
    if (!(s.localShare >= 0)) throw new LlameshError(`--local-share ${s.localShare}: expected a number >= 0`);
    if (s.workers.length === 0 && s.localShare === 0) throw new LlameshError("--workers: no workers and --local-share 0: nobody would compute");
    const conns: Connection[] = [];
    const settled = await Promise.allSettled(s.workers.map((w) => hello(s, w, s.connectTimeoutMs, (c) => conns.push(c))));
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) {
      for (const c of conns) c.close();
      throw failed.reason;
    }
    return new Cluster(s, settled.map((r) => (r as PromiseFulfilledResult<WorkerHello>).value));
  }

  /** Workers lost earlier that answer again (see watchLost), waiting to be taken back in. */
  get returning(): number {
    return this.back.length;
  }

  /**
   * Take the workers that came back into the plan (in --workers order); returns their names. The
   * caller re-deploys, restarts the step program and replays, between tokens.
   */
  admitReturning(): string[] {
    const back = this.back.splice(0);
    const order = (h: WorkerHello): number => this.s.workers.indexOf(h.spec);
    this.alive = [...this.alive, ...back].sort((a, b) => order(a) - order(b));
    this.lost = this.lost.filter((spec) => !back.some((h) => h.spec === spec));
    if (this.lost.length === 0) this.stopWatching();
    return back.map((h) => h.conn.label);
  }

  /** Every few seconds, try the lost workers again: one that answers the handshake is kept for admitReturning. */
  private watchLost(): void {
    if (this.watchTimer) return;
    this.watchTimer = setInterval(() => {
      if (this.probing) return;
      this.probing = true;
      const todo = this.lost.filter((spec) => !this.back.some((h) => h.spec === spec));
      void Promise.allSettled(todo.map(async (spec) => {
        const h = await hello(this.s, spec, REJOIN_CONNECT_MS, () => undefined, true);
        if (this.closed) return h.conn.close();
        this.back.push(h);
        this.s.log(`Worker ${h.conn.label} answers again: it rejoins at the next step`);
      })).finally(() => (this.probing = false));
    }, REJOIN_PROBE_MS);
    this.watchTimer.unref();
  }

  private stopWatching(): void {
    if (this.watchTimer) clearInterval(this.watchTimer);
    this.watchTimer = null;
  }

  get seqLen(): number {
    return this.s.seqLen;
  }

  get workers(): WorkerNode[] {
    return this.nodes.filter((n): n is WorkerNode => n.kind === "worker");
  }

  /** Shares: explicit weights, or measured GMAC (over the workers still there after a loss). */
  private workerShares(): number[] {
    const alive = this.alive;
    if (this.explicit) return alive.map((h) => h.spec.share!);
    const g = alive.reduce((t, h) => t + h.gmac, 0);
    return alive.map((h) => (g > 0 ? ((100 - this.local) * h.gmac) / g : (100 - this.local) / alive.length));
  }

  /**
   * Plan over the workers alive and the local share, build the nodes and give every worker the
   * slices it lacks, in one pass over the checkpoint (plus `extra`, filled by the same pass).
   * Returns the weight bytes sent.
   */
  async deploy(src: TensorSource, extra: { desc: SliceDesc; rows: Uint8Array } | null, onProgress?: (done: number, total: number) => void): Promise<number> {
    const s = this.s;
    const c = s.config;
    const shares = this.workerShares();
    const plan = planCluster(c, this.local > 0 ? [this.local, ...shares] : shares, planBlocks(c, s.plan));
    const nodes: ClusterNode[] = [];
    if (this.local > 0) {
      const model = new ModelSlice(c, plan.nodes[0]!, s.plan, s.backend, { seqLen: s.seqLen, batch: s.batch, slots: s.slots });
      nodes.push({ kind: "local", label: "local", share: this.local, slice: plan.nodes[0]!, model, threads: s.backend.threads, gmac: 0, macsPerToken: model.macsPerToken, weightBytes: model.weightBytes, stats: emptyStats() });
    }
    this.alive.forEach((h, i) => {
      const slice = plan.nodes[i + (this.local > 0 ? 1 : 0)]!;
      const weightBytes = sliceDescs(c, slice, s.plan).reduce((t, d) => t + d.bytes, 0);
      nodes.push({ kind: "worker", label: h.conn.label, addr: { host: h.spec.host, port: h.spec.port }, share: shares[i]!, slice, conn: h.conn, threads: h.threads, gmac: h.gmac, macsPerToken: sliceMacs(c, slice), weightBytes, weightBytesSent: 0, stats: emptyStats() });
    });
    this.disposeLocal();
    this.nodes = nodes;
    this.plan = plan;
    // Setup: each worker says which slices it lacks (in parallel: one with --model cuts its own meanwhile).
    const wanted: SliceDesc[][] = await Promise.all(
      nodes.map(async (n) => {
        if (n.kind === "local") return n.model.descs;
        const descs = withKeys(sliceDescs(c, n.slice, s.plan), s.fingerprint);
        const j = jsonOf(await n.conn.requestJson(MSG.SETUP, { config: c, slice: n.slice, seqLen: s.seqLen, batch: s.batch, slots: s.slots, types: s.plan }), MSG.SETUP_OK, `worker ${n.label}`);
        const missing = new Set(Array.isArray(j["missing"]) ? (j["missing"] as unknown[]).filter((x): x is string => typeof x === "string") : []);
        return descs.filter((d) => missing.has(d.key));
      }),
    );
    const toSend = wanted.map((w, i) => (nodes[i]!.kind === "local" ? 0 : w.reduce((t, d) => t + d.bytes, 0)));
    const sent = toSend.reduce((a, b) => a + b, 0);
    if (sent > 0) s.log(`Sending weights: ${nodes.flatMap((n, i) => (toSend[i]! > 0 ? [`${n.label} ${formatBytes(toSend[i]!)}`] : [])).join(", ")}`);
    await extractSlices(src, s.backend, extra ? [...wanted, [extra.desc]] : wanted, async (i, desc, off, data) => {
      const n = nodes[i];
      if (!n) {
        extra!.rows.set(data, off);
      } else if (n.kind === "local") {
        n.model.view(desc.id).set(data, off);
      } else {
        n.weightBytesSent += data.length;
        await n.conn.send(MSG.WEIGHTS, encodeWeightChunk(desc.key, off, data));
      }
    }, onProgress);
    for (const n of nodes) if (n.kind === "local") n.model.seal();
    for (const n of this.workers) jsonOf(await n.conn.requestJson(MSG.READY, {}), MSG.READY_OK, `worker ${n.label}`);
    return sent;
  }

  /** Whether any connection has failed (then the step program cannot start). */
  get anyLost(): boolean {
    return this.alive.some((h) => h.conn.error !== null);
  }

  /**
   * Forget the workers whose connection failed (lost, or disconnected as hung); returns their
   * names, none when no worker was lost. The others are told to abort the step they are in.
   */
  dropLost(): string[] {
    const lost = this.alive.filter((h) => h.conn.error);
    if (lost.length === 0) return [];
    this.alive = this.alive.filter((h) => !h.conn.error);
    for (const h of this.alive) void h.conn.send(MSG.ABORT, new Uint8Array(0)).catch(() => undefined);
    this.lost.push(...lost.map((h) => h.spec));
    this.watchLost();
    return lost.map((h) => h.conn.label);
  }

  /** Whether the worker `label` (host:port) has lost its connection. */
  isLost(label: string): boolean {
    return this.workers.some((w) => w.label === label && w.conn.error !== null);
  }

  /** Nodes a new plan would have: the workers left and the local share. */
  get nodesLeft(): number {
    return this.alive.length + (this.local > 0 ? 1 : 0);
  }

  /** Worker counters (STATS), in worker order. */
  async workerStats(): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = [];
    for (const n of this.workers) {
      const j = jsonOf(await n.conn.requestJson(MSG.STATS, {}), MSG.STATS_OK, `worker ${n.label}`);
      out.push((j["counters"] as Record<string, unknown>) ?? {});
    }
    return out;
  }

  private disposeLocal(): void {
    for (const n of this.nodes) if (n.kind === "local") n.model.dispose();
  }

  close(): void {
    this.closed = true;
    this.stopWatching();
    clearInterval(this.keepAlive);
    for (const h of [...this.alive, ...this.back.splice(0)]) h.conn.close();
    for (const n of this.workers) n.conn.close();
    this.disposeLocal();
  }
}
