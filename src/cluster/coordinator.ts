/**
 * The coordinator: the client's side of every token once the cluster is set up. It holds the
 * embedding table and a residual stream, and runs each forward call either as a mesh step (STEP
 * to every worker, the client's own share as one more member, DONE with the logits rows) or as
 * star rounds (per layer, the normalised input out and the partial sums back). It keeps the
 * per-node statistics, the report and the CSV, watches for hung workers, and can take a new set
 * of nodes and replay the tokens so far (after a lost worker, see client.ts).
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import type { KernelBackend } from "../kernels/kernels.js";
import type { LlamaConfig } from "../model/config.js";
import { LlameshError } from "../core/errors.js";
import type { EmbeddingTable } from "../engine/embedding.js";
import { ResidualStream } from "../engine/residual.js";
import { nodeDims, type ModelSlice, type NodeSlice } from "../engine/slice.js";
import { hfNames, normIndex, type MemoryRow, type MemorySummary } from "../engine/weights.js";
import { formatBytes } from "../core/format.js";
import { MeshMember, Poller, type MemberInfo } from "./mesh.js";
import type { ClusterPlan } from "./planner.js";
import {
  decodeDone, decodeResult, encodeActRequest, encodeMesh, encodeStep, jsonOf, MSG, type Connection, type StepTimes,
} from "./protocol.js";

export type Topology = "mesh" | "star";

export interface NodeStats {
  rounds: number;
  rttMs: number;
  computeMs: number;
  sent: number;
  received: number;
}

/** A node of the current plan: a worker (conn) or the client's own share (local). */
export interface ClusterNode {
  label: string;
  /** Where the worker listens, as --workers gave it (null for the client's own share). */
  addr: { host: string; port: number } | null;
  share: number;
  slice: NodeSlice;
  conn: Connection | null;
  local: ModelSlice | null;
  threads: number;
  gmac: number;
  macsPerToken: number;
  weightBytes: number;
  weightBytesSent: number;
  stats: NodeStats;
}

export interface ClusterStats {
  /** Tokens through the cluster (prompt tokens included) and forward time. */
  tokens: number;
  forwardMs: number;
  rounds: number;
  roundMs: number;
  nodes: {
    label: string;
    share: number;
    gmac: number;
    threads: number;
    macsPerToken: number;
    weightBytes: number;
    rounds: number;
    rttMs: number;
    computeMs: number;
    sent: number;
    received: number;
  }[];
}

type Op = "attn" | "ffn" | "logits";
const OP_MSG: Record<Op, number> = { attn: MSG.ATTN, ffn: MSG.FFN, logits: MSG.LOGITS };

export function planLines(c: LlamaConfig, plan: ClusterPlan, nodes: ClusterNode[]): string[] {
  const lines = [`Plan (attention unit: ${plan.kvPerUnit} KV head${plan.kvPerUnit === 1 ? "" : "s"}; ${plan.attnUnits} attention, ${plan.ffnUnits} feed-forward, ${plan.vocabUnits} vocabulary units):`];
  const total = plan.shares.reduce((a, b) => a + b, 0);
  for (const n of nodes) {
    const s = n.slice;
    lines.push(
      `  ${n.label.padEnd(22)} share ${((100 * n.share) / total).toFixed(1).padStart(5)}%  kv heads ${s.kv0}-${s.kv1}  hidden ${s.hb0 * 32}-${Math.min(s.hb1 * 32, c.hiddenDim)}  vocab ${s.v0}-${s.v1}  weights ${formatBytes(n.weightBytes)}`,
    );
  }
  return lines;
}

interface CsvRow {
  pos: number;
  nTok: number;
  layer: number;
  op: Op;
  node: string;
  rttMs: number;
  computeMs: number;
  sent: number;
  received: number;
}

/** The coordinator's own arena (embedding, norms, residual stream) and the per-layer rounds. */
export class Coordinator {
  /** The residual stream (star: the only one; mesh: the client only fills it with embeddings). */
  private readonly stream: ResidualStream;
  private readonly dimP: number;
  private readonly logits: Float32Array;
  private readonly csv: CsvRow[] = [];
  /** Mesh mode (startMesh): the members in rank order, the client's own member if it has a share. */
  private mesh: { members: (MemberInfo & { node: ClusterNode })[]; local: MeshMember | null; step: number } | null = null;
  private readonly poller = new Poller();
  /** The token at every position so far: what replay() runs again after a re-plan. */
  private readonly history: number[] = [];
  private tokens = 0;
  private forwardMs = 0;
  private rounds = 0;
  private roundMs = 0;

  constructor(
    readonly config: LlamaConfig,
    private readonly embedding: EmbeddingTable,
    /** readNorms' order: (2 * nLayers + 1) x dim. */
    private readonly norms: Float32Array,
    private readonly backend: KernelBackend,
    readonly seqLen: number,
    readonly batch: number,
    /** The nodes of the current plan (replace() after a lost worker). */
    public nodes: ClusterNode[],
    readonly perfCsv: string | undefined,
    readonly spinMs: number,
    /** See DistributedOptions.stepTimeoutMs. */
    private readonly stepTimeoutMs: number,
  ) {
    this.dimP = embedding.dimP;
    this.stream = new ResidualStream(config, norms, batch, backend);
    this.logits = new Float32Array(config.vocabSize);
  }

  memorySummary(): MemorySummary {
    const c = this.config;
    const L = c.nLayers;
    const local = this.nodes.find((n) => n.local)?.local ?? null;
    const byType: MemoryRow[] = [
      { type: "embedding", quant: "Q8_0", bytes: this.embedding.rows.length, params: c.vocabSize * c.dim },
      { type: "norms", quant: "F32", bytes: (2 * L + 1) * this.dimP * 4, params: (2 * L + 1) * c.dim },
    ];
    if (local) byType.push({ type: "own slice (q,k,v,o,gate,up,down,classifier)", quant: "Q8_0", bytes: local.weightBytes, params: local.macsPerToken });
    const model = byType.reduce((s, r) => s + r.bytes, 0);
    const kvCache = local ? local.kvBytes : 0;
    const arenas = local ? [this.stream.arena, ...local.arenas] : [this.stream.arena];
    const used = arenas.reduce((s, a) => s + a.used, 0);
    return {
      byType,
      runState: Math.max(0, used - (model - this.embedding.rows.length) - kvCache),
      kvCache,
      model,
      arenas: arenas.length,
      // tensors the client itself read: embedding, norms, and those its own slice comes from
      tensorsLoaded: 2 + 2 * L + (local ? new Set(local.descs.map((x) => x.tensor).filter((t) => t !== hfNames.embedding)).size : 0),
    };
  }

  /**
   * Switch to mesh mode: every node with a part becomes a member (rank = node order); each worker
   * gets the norms and the member list (MESH), then the workers link to each other (LINK).
   */
  async startMesh(): Promise<void> {
    const c = this.config;
    const members = this.nodes
      .map((node, rank) => {
        const s = node.slice;
        return {
          rank, label: node.conn ? node.label : "client", attn: s.kv1 > s.kv0, ffn: s.hb1 > s.hb0, logits: s.v1 > s.v0, node,
          ...(node.addr ?? {}),
        };
      })
      .filter((m) => m.attn || m.ffn || m.logits);
    const info: MemberInfo[] = members.map(({ node: _n, ...m }) => m);
    const norms = this.norms;
    const session = crypto.randomBytes(16).toString("hex");
    const localInfo = members.find((m) => m.node.local);
    let local: MeshMember | null = null;
    if (localInfo) {
      const lm = (local = new MeshMember(c, localInfo.node.local!, localInfo.rank, info, norms, this.backend, () => this.poller.keep(this.spinMs)));
      for (const m of members) {
        const conn = m.node.conn;
        if (!conn) continue;
        lm.links.set(m.rank, { send: (f) => conn.write(f) });
        conn.onUnsolicited = (f) => lm.deliver(m.rank, f);
        conn.onClosed = (e) => lm.fail(e);
      }
    }
    const workers = members.filter((m) => m.node.conn);
    await Promise.all(workers.map(async (m) => jsonOf(await m.node.conn!.request(MSG.MESH, encodeMesh({ session, rank: m.rank, members: info }, norms)), MSG.MESH_OK, `worker ${m.label}`)));
    await Promise.all(workers.map(async (m) => jsonOf(await m.node.conn!.requestJson(MSG.LINK, {}), MSG.LINK_OK, `worker ${m.label}`)));
    this.mesh = { members, local, step: 0 };
  }

  /**
   * Watch a token's requests: after stepTimeoutMs, ping every worker whose reply has not come;
   * one that does not answer the ping in as long hangs (stopped, swapping, wedged): it is
   * disconnected, which fails the token and makes it a lost worker. A worker that answers is
   * only waiting (for a hung peer, or on a long batch). Returns the function that stops watching.
   */
  private watch(waiting: { node: ClusterNode; reply: Promise<unknown> }[]): () => void {
    const done = new Set<ClusterNode>();
    for (const w of waiting) void w.reply.then(() => done.add(w.node), () => done.add(w.node));
    const timer = setTimeout(() => {
      for (const { node } of waiting) {
        const conn = node.conn;
        if (done.has(node) || !conn || conn.error) continue;
        conn.request(MSG.PING, "{}", this.stepTimeoutMs).catch(() => {
          conn.kill(new LlameshError(`worker ${conn.label}: no answer to a token's request nor to a ping within ${(2 * this.stepTimeoutMs) / 1000} s: hung, disconnected`));
        });
      }
    }, this.stepTimeoutMs);
    timer.unref();
    return () => clearTimeout(timer);
  }

  /** Take the nodes of a new plan (the old ones' local slice and mesh member are disposed). */
  replace(nodes: ClusterNode[]): void {
    this.mesh?.local?.dispose("re-planned");
    for (const n of this.nodes) n.local?.dispose();
    this.stopMesh();
    this.nodes = nodes;
  }

  /** Recompute every node's KV cache for positions 0..pos-1 (after replace()). */
  async replay(pos: number): Promise<void> {
    const h = this.history.slice(0, pos);
    for (let p = 0; p < pos; p += this.batch) await this.forward(h.slice(p, Math.min(pos, p + this.batch)), p);
  }

  /** Back to the star after a failed startMesh (the workers' sessions stay usable). */
  stopMesh(): void {
    this.mesh = null;
    for (const n of this.nodes) {
      if (!n.conn) continue;
      n.conn.onUnsolicited = null;
      n.conn.onClosed = null;
    }
  }

  /** One forward step in mesh mode: embeddings out, logits rows back; the members do the rest. */
  private async forwardMesh(n: number, pos: number): Promise<void> {
    const mesh = this.mesh!;
    const c = this.config;
    const step = ++mesh.step;
    const x0 = this.stream.values(n).slice();
    const body = encodeStep(step, pos, n, x0);
    const t0 = performance.now();
    const pending = mesh.members.map((m) => {
      const conn = m.node.conn;
      if (!conn) return null;
      return conn.request(MSG.STEP, body).then((r) => {
        if (r.type !== MSG.DONE) throw new LlameshError(`worker ${m.label}: unexpected reply type ${r.type}`);
        return { ...decodeDone(r.body), frame: r.body.length + 16 };
      });
    });
    for (const p of pending) p?.catch(() => undefined);
    const out: ({ times: StepTimes; logits: Float32Array | null; frame: number } | null)[] = mesh.members.map(() => null);
    const li = mesh.members.findIndex((m) => m.node.local);
    const stopWatch = this.watch(mesh.members.flatMap((m, i) => (pending[i] ? [{ node: m.node, reply: pending[i]! }] : [])));
    try {
      // all at once: the first failure (a lost worker) must not wait behind a reply that never comes
      const own = li >= 0 ? mesh.local!.step(step, pos, n, x0).then((r) => ({ ...r, frame: 0 })) : null;
      const replies = await Promise.all(mesh.members.map((_, i) => (i === li ? own : pending[i]) ?? null));
      replies.forEach((r, i) => (out[i] = r));
    } catch (e) {
      // A lost worker makes the others fail too (their link to it closed): blame the lost one.
      if (!mesh.members.some((m) => m.node.conn?.error)) {
        await Promise.race([Promise.allSettled(pending.filter((p) => p !== null)), new Promise((r) => setTimeout(r, 1000).unref())]);
      }
      const lost = mesh.members.find((m) => m.node.conn?.error);
      throw lost ? lost.node.conn!.error! : e;
    } finally {
      stopWatch();
    }
    const frameBytes = 24 + n * this.dimP * 4;
    const attnN = mesh.members.filter((m) => m.attn).length;
    const ffnN = mesh.members.filter((m) => m.ffn).length;
    const links = mesh.members.length - 1;
    mesh.members.forEach((m, i) => {
      const r = out[i]!;
      const t = r.times;
      const st = m.node.stats;
      let comp = t.logitsUs;
      let wait = 0;
      for (let s = 0; s < t.computeUs.length; s++) {
        comp += t.computeUs[s]!;
        wait += t.waitUs[s]!;
        const ffn = (s & 1) === 1;
        const has = ffn ? m.ffn : m.attn;
        const others = (ffn ? ffnN : attnN) - (has ? 1 : 0);
        this.csv.push({
          pos, nTok: n, layer: s >> 1, op: ffn ? "ffn" : "attn", node: m.node.label,
          rttMs: (t.computeUs[s]! + t.waitUs[s]!) / 1000, computeMs: t.computeUs[s]! / 1000,
          sent: has ? frameBytes * links : 0, received: others * frameBytes,
        });
      }
      if (m.logits) this.csv.push({ pos, nTok: n, layer: c.nLayers, op: "logits", node: m.node.label, rttMs: t.logitsUs / 1000, computeMs: t.logitsUs / 1000, sent: m.node.conn ? r.frame : 0, received: 0 });
      st.rounds += t.computeUs.length;
      st.rttMs += (comp + wait) / 1000;
      st.computeMs += comp / 1000;
      st.sent += t.bytesSent + (m.node.conn ? r.frame : 0);
      st.received += t.bytesReceived + (m.node.conn ? body.length + 16 : 0);
      if (r.logits) this.logits.set(r.logits.subarray(0, m.node.slice.v1 - m.node.slice.v0), m.node.slice.v0);
    });
    this.rounds += 2 * c.nLayers + 1;
    this.roundMs += performance.now() - t0;
  }

  /** One sync round: every node with a part of `op` computes it; returns their results in node order. */
  private async round(op: Op, layer: number, pos: number, nTok: number, xq: Uint8Array): Promise<Float32Array[]> {
    const has = (n: ClusterNode): boolean => {
      const s = n.slice;
      return op === "attn" ? s.kv1 > s.kv0 : op === "ffn" ? s.hb1 > s.hb0 : s.v1 > s.v0;
    };
    const t0 = performance.now();
    const body = encodeActRequest(layer, pos, nTok, xq);
    const pending: (Promise<{ values: Float32Array; computeUs: number; t: number }> | null)[] = this.nodes.map((n) => {
      if (!has(n) || !n.conn) return null;
      return n.conn.request(OP_MSG[op], body).then((r) => {
        if (r.type !== MSG.RESULT) throw new LlameshError(`worker ${n.label}: unexpected reply type ${r.type}`);
        return { ...decodeResult(r.body), t: performance.now() };
      });
    });
    // a reply may fail while we still wait for an earlier node: mark every one as handled now
    for (const p of pending) p?.catch(() => undefined);
    const results: (Float32Array | null)[] = this.nodes.map(() => null);
    for (let i = 0; i < this.nodes.length; i++) {
      const n = this.nodes[i]!;
      if (!n.local || !has(n)) continue;
      const tl = performance.now();
      const v = op === "attn" ? n.local.attention(layer, pos, nTok, xq) : op === "ffn" ? n.local.ffn(layer, nTok, xq) : n.local.logits(xq);
      results[i] = v.slice();
      const ms = performance.now() - tl;
      n.stats.rounds++;
      n.stats.rttMs += ms;
      n.stats.computeMs += ms;
      this.csv.push({ pos, nTok, layer, op, node: n.label, rttMs: ms, computeMs: ms, sent: 0, received: 0 });
    }
    if (this.spinMs > 0) {
      const waiting = pending.filter((p): p is Promise<{ values: Float32Array; computeUs: number; t: number }> => p !== null);
      let done = waiting.length === 0;
      void Promise.all(waiting).then(() => (done = true), () => (done = true));
      const until = performance.now() + this.spinMs;
      while (!done && performance.now() < until) await new Promise<void>((r) => setImmediate(r));
    }
    const reqBytes = body.length + 16;
    const stopWatch = this.watch(this.nodes.flatMap((n, i) => (pending[i] ? [{ node: n, reply: pending[i]! }] : [])));
    try {
      await Promise.all(pending);
    } finally {
      stopWatch();
    }
    for (let i = 0; i < this.nodes.length; i++) {
      const p = pending[i];
      if (!p) continue;
      const r = await p;
      const n = this.nodes[i]!;
      results[i] = r.values;
      const rtt = r.t - t0;
      const recv = r.values.byteLength + 4 + 16;
      n.stats.rounds++;
      n.stats.rttMs += rtt;
      n.stats.computeMs += r.computeUs / 1000;
      n.stats.sent += reqBytes;
      n.stats.received += recv;
      this.csv.push({ pos, nTok, layer, op, node: n.label, rttMs: rtt, computeMs: r.computeUs / 1000, sent: reqBytes, received: recv });
    }
    this.rounds++;
    this.roundMs += performance.now() - t0;
    return results.filter((r): r is Float32Array => r !== null);
  }

  async forward(tokens: readonly number[], pos: number): Promise<Float32Array> {
    const c = this.config;
    const n = tokens.length;
    if (n < 1 || n > this.batch) throw new RangeError(`forward: ${n} tokens, expected 1..${this.batch}`);
    if (pos + n > this.seqLen) throw new RangeError(`forward: positions up to ${pos + n} exceed the context ${this.seqLen}`);
    const t0 = performance.now();
    if (pos > this.history.length) throw new RangeError(`forward: position ${pos} skips positions ${this.history.length}..${pos - 1}`);
    const x = this.stream.values(n);
    for (let t = 0; t < n; t++) this.embedding.lookup(tokens[t]!, x.subarray(t * this.dimP, (t + 1) * this.dimP));
    this.history.length = pos;
    this.history.push(...tokens);
    if (this.mesh) {
      await this.forwardMesh(n, pos);
      this.tokens += n;
      this.forwardMs += performance.now() - t0;
      return this.logits;
    }
    for (let l = 0; l < c.nLayers; l++) {
      this.stream.addPartials(await this.round("attn", l, pos, n, this.stream.normQ(normIndex(l, false), n)), n);
      this.stream.addPartials(await this.round("ffn", l, pos, n, this.stream.normQ(normIndex(l, true), n)), n);
    }
    const parts = await this.round("logits", 0, pos + n - 1, 1, this.stream.normQ(2 * c.nLayers, n, true));
    let i = 0;
    for (const node of this.nodes) {
      const s = node.slice;
      if (s.v1 > s.v0) this.logits.set(parts[i++]!.subarray(0, s.v1 - s.v0), s.v0);
    }
    this.tokens += n;
    this.forwardMs += performance.now() - t0;
    return this.logits;
  }

  stats(): ClusterStats {
    return {
      tokens: this.tokens,
      forwardMs: this.forwardMs,
      rounds: this.rounds,
      roundMs: this.roundMs,
      nodes: this.nodes.map((n) => ({
        label: n.label, share: n.share, gmac: n.gmac, threads: n.threads, macsPerToken: n.macsPerToken, weightBytes: n.weightBytes, ...n.stats,
      })),
    };
  }

  resetStats(): void {
    this.tokens = this.forwardMs = this.rounds = this.roundMs = 0;
    this.csv.length = 0;
    for (const n of this.nodes) n.stats = { rounds: 0, rttMs: 0, computeMs: 0, sent: 0, received: 0 };
  }

  report(): string[] {
    const lines: string[] = [];
    const tok = Math.max(1, this.tokens);
    const total = this.nodes.reduce((s, n) => s + n.share, 0);
    lines.push(`Cluster (${this.mesh ? "mesh: the nodes add their partial sums among themselves" : "star: every sync through the client"}): ${this.nodes.length} node${this.nodes.length === 1 ? "" : "s"}, ${this.tokens} tokens through the cluster, ${(this.rounds / Math.max(1, this.tokens)).toFixed(1)} sync rounds per token`);
    // star: a round trip per sync, seen from the client; mesh: a node's sync = its compute + its wait for the others
    const rows: string[][] = [this.mesh
      ? ["node", "share", "syncs", "avg sync ms", "wait ms", "compute ms/tok", "sent/tok", "recv/tok", "GMAC"]
      : ["node", "share", "rounds", "avg RTT ms", "net overhead ms", "compute ms/tok", "sent/tok", "recv/tok", "GMAC"]];
    let netTotal = 0;
    for (const n of this.nodes) {
      const st = n.stats;
      const avg = st.rounds ? st.rttMs / st.rounds : 0;
      const overhead = st.rounds ? (st.rttMs - st.computeMs) / st.rounds : 0;
      if (n.conn) netTotal += st.rttMs - st.computeMs;
      const gmac = st.computeMs > 0 ? (n.macsPerToken * tok) / (st.computeMs / 1000) / 1e9 : 0;
      rows.push([
        n.label, `${((100 * n.share) / total).toFixed(1)}%`, String(st.rounds), avg.toFixed(3), n.conn || this.mesh ? overhead.toFixed(3) : "-",
        (st.computeMs / tok).toFixed(2), n.conn || this.mesh ? formatBytes(st.sent / tok) : "-", n.conn || this.mesh ? formatBytes(st.received / tok) : "-", gmac.toFixed(2),
      ]);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) lines.push("  " + r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  "));
    lines.push("Memory per node (weights + KV cache):");
    lines.push(`  client (embedding, norms): ${formatBytes(this.embedding.rows.length + (2 * this.config.nLayers + 1) * this.dimP * 4)}`);
    for (const n of this.nodes) {
      const d = nodeDims(this.config, n.slice);
      const kv = this.config.nLayers * 2 * this.seqLen * d.kvRows * 2;
      lines.push(`  ${n.label}: ${formatBytes(n.weightBytes)} + ${formatBytes(kv)}`);
    }
    const msTok = this.forwardMs / tok;
    lines.push(
      `Cluster speed: ${(1000 / Math.max(1e-9, msTok)).toFixed(2)} tok/s, ${msTok.toFixed(2)} ms/token, ` +
        `${(this.roundMs / Math.max(1, this.rounds)).toFixed(3)} ms per sync round, ` +
        `${((this.forwardMs - this.roundMs) / tok).toFixed(2)} ms/token in the client between rounds (embedding, norms, sums)`,
    );
    // Verdict: compare the network cost per token against the compute the busiest worker saved.
    const remote = this.nodes.filter((n) => n.conn);
    if (remote.length > 0 && this.nodes.length > 1) {
      const netPerTok = netTotal / remote.length / tok;
      const maxCompute = Math.max(...this.nodes.map((n) => n.stats.computeMs / tok));
      const sumCompute = this.nodes.reduce((s, n) => s + n.stats.computeMs / tok, 0);
      const saved = sumCompute - maxCompute;
      if (netPerTok > saved) {
        lines.push(`Verdict: the network costs more than it saves (${netPerTok.toFixed(2)} ms/token of network overhead per worker vs ${saved.toFixed(2)} ms/token of compute saved by splitting); one machine would be faster`);
      }
    }
    return lines;
  }

  /** The connections are closed: let go of the client's own arenas. */
  dispose(): void {
    this.mesh?.local?.dispose("the client closed the cluster");
    for (const n of this.nodes) n.local?.dispose();
    this.stream.dispose();
  }

  writeCsv(): void {
    if (!this.perfCsv) return;
    const out = ["pos,n_tokens,layer,operation,node,round_trip_ms,compute_ms,network_ms,bytes_sent,bytes_received"];
    for (const r of this.csv) {
      out.push(`${r.pos},${r.nTok},${r.layer},${r.op},${r.node},${r.rttMs.toFixed(4)},${r.computeMs.toFixed(4)},${(r.rttMs - r.computeMs).toFixed(4)},${r.sent},${r.received}`);
    }
    fs.writeFileSync(this.perfCsv, out.join("\n") + "\n");
  }
}
