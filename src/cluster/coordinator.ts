/**
 * The coordinator: the client's side of every token once the cluster is set up. Per forward call
 * it looks up the tokens' embeddings, sends them to every worker (STEP), runs its own member when
 * it has a share, and gathers the logits rows from the DONE replies; in the relay it is also the
 * hub that adds each sync's partial sums. It watches for hung workers and keeps the tokens so far,
 * so a new set of nodes can replay them (after a lost worker, see cluster.ts).
 */
import * as crypto from "node:crypto";
import type { KernelBackend } from "../kernels/kernels.js";
import { LlameshError } from "../core/errors.js";
import type { EmbeddingTable } from "../engine/embedding.js";
import { checkChunks, type SequenceChunk } from "../engine/forward.js";
import type { LlamaConfig } from "../model/config.js";
import { jsonOf } from "./connection.js";
import { Member } from "./member.js";
import type { ClusterNode, WorkerNode } from "./nodes.js";
import { Poller } from "./poller.js";
import { syncTrace } from "./sync-trace.js";
import { decodeDone, encodeFrame, encodeMesh, encodeStep, MSG, type MemberTimes } from "./protocol.js";
import { MeshReduce, RelayHub, RelayReduce, ScatterReduce, type MemberInfo, type ReduceKind } from "./reduce.js";
import type { StepLog } from "./stats.js";

/** The members of the step program in rank order (rank = node order), with what reduces their sums. */
interface Program {
  kind: ReduceKind;
  members: (MemberInfo & { node: ClusterNode })[];
  local: Member | null;
  hub: RelayHub | null;
}

export interface CoordinatorOptions {
  /** See DistributedOptions.stepTimeoutMs. */
  stepTimeoutMs: number;
  /** Keep the event loop polling this long while a step runs (see DistributedOptions.spinMs). */
  spinMs: number;
}

/** Whether a node holds any rows (only those are members of the step program). */
export function hasPart(n: ClusterNode): boolean {
  return n.slice.kv1 > n.slice.kv0 || n.slice.hb1 > n.slice.hb0 || n.slice.v1 > n.slice.v0;
}

export class Coordinator {
  private program: Program | null = null;
  private readonly poller = new Poller();
  private readonly dimP: number;
  /** Logits rows per segment of the last step (vocabSize each). */
  private logits: Float32Array;
  /** Per slot, the token at every position so far: what replay() runs again after a re-plan. */
  private readonly history = new Map<number, number[]>();
  private step = 0;

  constructor(
    readonly config: LlamaConfig,
    private readonly embedding: EmbeddingTable,
    /** readNorms' order: (2 * nLayers + 1) x dim. */
    private readonly norms: Float32Array,
    private readonly backend: KernelBackend,
    readonly seqLen: number,
    readonly batch: number,
    readonly slots: number,
    private readonly log: StepLog,
    private readonly opts: CoordinatorOptions,
  ) {
    this.dimP = embedding.dimP;
    this.logits = new Float32Array(config.vocabSize);
  }

  /** How the current program reduces its sums (null before join()). */
  get kind(): ReduceKind | null {
    return this.program?.kind ?? null;
  }

  /**
   * Start the step program on `nodes`: every node with a part becomes a member (rank = node
   * order); each worker gets the norms and the member list (MESH), and in the mesh the workers
   * link to each other (LINK). Throws (a LlameshError naming the worker) when that fails.
   */
  async join(nodes: readonly ClusterNode[], kind: ReduceKind): Promise<void> {
    this.leave("re-planned");
    const withPart = nodes.filter(hasPart);
    const members = withPart.map((node, rank) => ({
      rank,
      label: node.label,
      ...(node.kind === "worker" ? { host: node.addr.host, port: node.addr.port } : {}),
      attn: node.slice.kv1 > node.slice.kv0,
      ffn: node.slice.hb1 > node.slice.hb0,
      logits: node.slice.v1 > node.slice.v0,
      node,
    }));
    const info: MemberInfo[] = members.map(({ node: _n, ...m }) => m);
    const workers = members.filter((m): m is (typeof m & { node: WorkerNode }) => m.node.kind === "worker");
    const localInfo = members.find((m) => m.node.kind === "local");
    const spin = (): void => this.poller.keep(this.opts.spinMs);
    let local: Member | null = null;
    let hub: RelayHub | null = null;
    if (kind !== "relay") {
      if (localInfo && localInfo.node.kind === "local") {
        const reduce = new (kind === "mesh" ? MeshReduce : ScatterReduce)(localInfo.rank, info, this.dimP, this.batch, spin);
        for (const m of workers) reduce.links.set(m.rank, { send: (f) => m.node.conn.write(f), idle: () => m.node.conn.idle });
        local = new Member(localInfo.node.model, localInfo.rank, this.norms, this.backend, reduce);
        for (const m of workers) m.node.conn.onUnsolicited = (f) => reduce.deliver(m.rank, f);
      }
    } else {
      let localReduce: RelayReduce | null = null;
      if (localInfo && localInfo.node.kind === "local") {
        localReduce = new RelayReduce(localInfo.rank, (step, seq, values) => {
          hub!.contribute(localInfo.rank, step, seq, values);
          return 0;
        });
        local = new Member(localInfo.node.model, localInfo.rank, this.norms, this.backend, localReduce);
      }
      const links = new Map(workers.map((m) => [m.rank, { send: (f: Buffer) => { m.node.conn.write(f); spin(); } }]));
      const h = (hub = new RelayHub(info, this.dimP, this.batch, links, localReduce));
      for (const m of workers) m.node.conn.onUnsolicited = (f) => h.deliver(m.rank, f);
    }
    for (const m of workers) m.node.conn.onClosed = (e) => (local?.fail(e), hub?.fail(e));
    this.program = { kind, members, local, hub };
    const session = crypto.randomBytes(16).toString("hex");
    await Promise.all(workers.map(async (m) => jsonOf(await m.node.conn.request(MSG.MESH, encodeMesh({ session, rank: m.rank, members: info, reduce: kind }, this.norms)), MSG.MESH_OK, `worker ${m.label}`)));
    if (kind !== "relay") await Promise.all(workers.map(async (m) => jsonOf(await m.node.conn.requestJson(MSG.LINK, {}), MSG.LINK_OK, `worker ${m.label}`)));
  }

  /** Stop the current program (its members' sessions stay usable for another join). */
  leave(why: string): void {
    const p = this.program;
    if (!p) return;
    p.local?.dispose(why);
    p.hub?.fail(new LlameshError(why));
    for (const m of p.members) {
      if (m.node.kind !== "worker") continue;
      m.node.conn.onUnsolicited = null;
      m.node.conn.onClosed = null;
    }
    this.program = null;
  }

  /**
   * Watch a step's replies: after stepTimeoutMs, ping every worker whose reply has not come; one
   * that does not answer the ping in as long hangs (stopped, swapping, wedged): it is disconnected,
   * which fails the step and makes it a lost worker. A worker that answers is only waiting (for a
   * hung peer, or on a long batch). Returns the function that stops watching.
   */
  private watch(waiting: { node: WorkerNode; reply: Promise<unknown> }[]): () => void {
    const t = this.opts.stepTimeoutMs;
    const done = new Set<WorkerNode>();
    for (const w of waiting) void w.reply.then(() => done.add(w.node), () => done.add(w.node));
    const timer = setTimeout(() => {
      for (const { node } of waiting) {
        const conn = node.conn;
        if (done.has(node) || conn.error) continue;
        conn.request(MSG.PING, "{}", t).catch(() => {
          conn.kill(new LlameshError(`worker ${conn.label}: no answer to a token's request nor to a ping within ${(2 * t) / 1000} s: hung, disconnected`));
        });
      }
    }, t);
    timer.unref();
    return () => clearTimeout(timer);
  }

  /** Run `tokens` at positions pos.. of slot 0 on the cluster; the logits of the last one (valid until the next call). */
  async forward(tokens: readonly number[], pos: number): Promise<Float32Array> {
    return (await this.forwardBatch([{ slot: 0, pos, tokens }]))[0]!;
  }

  /** One step over several sequences (engine/forward.ts SequenceChunk); each chunk's last logits (views, valid until the next call). */
  async forwardBatch(chunks: readonly SequenceChunk[]): Promise<Float32Array[]> {
    const p = this.program;
    if (!p) throw new LlameshError("the cluster has no step program (join() first)");
    const segments = checkChunks(chunks, this.batch, this.seqLen, this.slots);
    for (const ch of chunks) {
      const h = this.history.get(ch.slot) ?? [];
      if (ch.pos > h.length) throw new RangeError(`forward: slot ${ch.slot}: position ${ch.pos} skips positions ${h.length}..${ch.pos - 1}`);
    }
    const t0 = performance.now();
    const n = segments.reduce((m, g) => m + g.nTok, 0);
    const x0 = new Float32Array(n * this.dimP);
    let t = 0;
    for (const ch of chunks) for (const tok of ch.tokens) this.embedding.lookup(tok, x0.subarray(t * this.dimP, ++t * this.dimP));
    for (const ch of chunks) {
      const h = this.history.get(ch.slot) ?? [];
      h.length = ch.pos;
      h.push(...ch.tokens);
      this.history.set(ch.slot, h);
    }
    const input = { step: ++this.step, segments };
    const body = encodeStep(input.step, segments, x0);
    const stepFrame = encodeFrame(MSG.STEP, 0, body).length;
    if (!p.local) syncTrace?.step(input.step, true);
    this.poller.keep(this.opts.spinMs);
    const pending = p.members.map((m) => {
      if (m.node.kind !== "worker") return null;
      return m.node.conn.request(MSG.STEP, body).then((r) => {
        if (r.type !== MSG.DONE) throw new LlameshError(`worker ${m.label}: unexpected reply type ${r.type}`);
        return { ...decodeDone(r.body), doneBytes: r.body.length + 16 };
      });
    });
    for (const q of pending) q?.catch(() => undefined);
    const stopWatch = this.watch(p.members.flatMap((m, i) => (pending[i] && m.node.kind === "worker" ? [{ node: m.node, reply: pending[i]! }] : [])));
    let replies: { times: MemberTimes; logits: Float32Array | null; doneBytes: number }[];
    try {
      // all at once: the first failure (a lost worker) must not wait behind a reply that never comes
      replies = await Promise.all(p.members.map((m, i) => pending[i] ?? p.local!.step(input, x0).then((r) => ({ ...r, doneBytes: 0 }))));
    } catch (e) {
      throw await this.blame(p, pending, e);
    } finally {
      stopWatch();
    }
    if (!p.local) syncTrace?.step(input.step, false);
    const vocab = this.config.vocabSize;
    if (this.logits.length < chunks.length * vocab) this.logits = new Float32Array(chunks.length * vocab);
    replies.forEach((r, i) => {
      const s = p.members[i]!.node.slice;
      const w = s.v1 - s.v0;
      if (!r.logits || w === 0) return;
      if (r.logits.length !== chunks.length * w) throw new LlameshError(`worker ${p.members[i]!.label}: ${r.logits.length} logits, expected ${chunks.length} x ${w}`);
      for (let c = 0; c < chunks.length; c++) this.logits.set(r.logits.subarray(c * w, (c + 1) * w), c * vocab + s.v0);
    });
    this.log.record(p.kind, segments[0]!.pos, n, this.dimP, p.members.map((m, i) => ({
      node: m.node, info: m, times: replies[i]!.times, stepBytes: m.node.kind === "worker" ? stepFrame : 0, doneBytes: replies[i]!.doneBytes,
    })), performance.now() - t0);
    return chunks.map((_, c) => this.logits.subarray(c * vocab, (c + 1) * vocab));
  }

  /** Forget slot `slot`'s history (its sequence ended; a new one starts at position 0 or reuses a prefix). */
  truncate(slot: number, length: number): void {
    const h = this.history.get(slot);
    if (h) h.length = Math.min(h.length, length);
  }

  /** A step failed: a lost worker makes the others fail too (their link to it closed), so blame the lost one. */
  private async blame(p: Program, pending: (Promise<unknown> | null)[], e: unknown): Promise<unknown> {
    const lost = (): WorkerNode | undefined => p.members.map((m) => m.node).find((n): n is WorkerNode => n.kind === "worker" && n.conn.error !== null);
    if (!lost()) await Promise.race([Promise.allSettled(pending.filter((q) => q !== null)), new Promise((r) => setTimeout(r, 1000).unref())]);
    return lost()?.conn.error ?? e;
  }

  /**
   * Recompute every node's KV cache (after a new join()): for each slot, its positions so far, up
   * to `upTo` (a map slot -> length; the failed step's own tokens are not replayed).
   */
  async replay(upTo: ReadonlyMap<number, number>): Promise<void> {
    for (const [slot, len] of upTo) {
      const h = (this.history.get(slot) ?? []).slice(0, len);
      for (let q = 0; q < h.length; q += this.batch) await this.forwardBatch([{ slot, pos: q, tokens: h.slice(q, q + this.batch) }]);
    }
  }

  /** Each slot's length before the chunks of a step (what a replay must rebuild if that step fails). */
  lengthsBefore(chunks: readonly SequenceChunk[]): Map<number, number> {
    const out = new Map<number, number>();
    for (const [slot, h] of this.history) out.set(slot, h.length);
    for (const ch of chunks) out.set(ch.slot, Math.min(out.get(ch.slot) ?? 0, ch.pos));
    return out;
  }

  dispose(): void {
    this.leave("the client closed the cluster");
  }
}

