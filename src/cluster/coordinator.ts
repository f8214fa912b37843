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
import type { LlamaConfig } from "../model/config.js";
import { jsonOf } from "./connection.js";
import { Member } from "./member.js";
import type { ClusterNode, WorkerNode } from "./nodes.js";
import { Poller } from "./poller.js";
import { decodeDone, encodeFrame, encodeMesh, encodeStep, MSG, type MemberTimes } from "./protocol.js";
import { MeshReduce, RelayHub, RelayReduce, type MemberInfo, type ReduceKind } from "./reduce.js";
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

export class Coordinator {
  private program: Program | null = null;
  private readonly poller = new Poller();
  private readonly dimP: number;
  private readonly logits: Float32Array;
  /** The token at every position so far: what replay() runs again after a re-plan. */
  private readonly history: number[] = [];
  private step = 0;

  constructor(
    readonly config: LlamaConfig,
    private readonly embedding: EmbeddingTable,
    /** readNorms' order: (2 * nLayers + 1) x dim. */
    private readonly norms: Float32Array,
    private readonly backend: KernelBackend,
    readonly seqLen: number,
    readonly batch: number,
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
    const withPart = nodes.filter((n) => n.slice.kv1 > n.slice.kv0 || n.slice.hb1 > n.slice.hb0 || n.slice.v1 > n.slice.v0);
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
    if (kind === "mesh") {
      if (localInfo && localInfo.node.kind === "local") {
        const reduce = new MeshReduce(localInfo.rank, info, this.dimP, this.batch, spin);
        for (const m of workers) reduce.links.set(m.rank, { send: (f) => m.node.conn.write(f) });
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
    if (kind === "mesh") await Promise.all(workers.map(async (m) => jsonOf(await m.node.conn.requestJson(MSG.LINK, {}), MSG.LINK_OK, `worker ${m.label}`)));
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

  /** Run `tokens` at positions pos.. on the cluster; the logits of the last one (valid until the next call). */
  async forward(tokens: readonly number[], pos: number): Promise<Float32Array> {
    const p = this.program;
    if (!p) throw new LlameshError("the cluster has no step program (join() first)");
    const n = tokens.length;
    if (n < 1 || n > this.batch) throw new RangeError(`forward: ${n} tokens, expected 1..${this.batch}`);
    if (pos + n > this.seqLen) throw new RangeError(`forward: positions up to ${pos + n} exceed the context ${this.seqLen}`);
    if (pos > this.history.length) throw new RangeError(`forward: position ${pos} skips positions ${this.history.length}..${pos - 1}`);
    const t0 = performance.now();
    const x0 = new Float32Array(n * this.dimP);
    for (let t = 0; t < n; t++) this.embedding.lookup(tokens[t]!, x0.subarray(t * this.dimP, (t + 1) * this.dimP));
    this.history.length = pos;
    this.history.push(...tokens);
    const input = { step: ++this.step, pos, nTok: n };
    const body = encodeStep(input.step, pos, n, x0);
    const stepFrame = encodeFrame(MSG.STEP, 0, body).length;
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
    replies.forEach((r, i) => {
      const s = p.members[i]!.node.slice;
      if (r.logits) this.logits.set(r.logits.subarray(0, s.v1 - s.v0), s.v0);
    });
    this.log.record(p.kind, pos, n, this.dimP, p.members.map((m, i) => ({
      node: m.node, info: m, times: replies[i]!.times, stepBytes: m.node.kind === "worker" ? stepFrame : 0, doneBytes: replies[i]!.doneBytes,
    })), performance.now() - t0);
    return this.logits;
  }

  /** A step failed: a lost worker makes the others fail too (their link to it closed), so blame the lost one. */
  private async blame(p: Program, pending: (Promise<unknown> | null)[], e: unknown): Promise<unknown> {
    const lost = (): WorkerNode | undefined => p.members.map((m) => m.node).find((n): n is WorkerNode => n.kind === "worker" && n.conn.error !== null);
    if (!lost()) await Promise.race([Promise.allSettled(pending.filter((q) => q !== null)), new Promise((r) => setTimeout(r, 1000).unref())]);
    return lost()?.conn.error ?? e;
  }

  /** Recompute every node's KV cache for positions 0..pos-1 (after a new join()). */
  async replay(pos: number): Promise<void> {
    const h = this.history.slice(0, pos);
    for (let q = 0; q < pos; q += this.batch) await this.forward(h.slice(q, Math.min(pos, q + this.batch)), q);
  }

  dispose(): void {
    this.leave("the client closed the cluster");
  }
}

