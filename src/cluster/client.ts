/**
 * The client side of the cluster: connect to the workers, plan the shares, stream each worker
 * the slices it lacks, then run the forward pass as the coordinator. Per layer it sends the
 * normalised input (Q8_0) to the nodes holding attention heads and gathers their partial sums,
 * then does the same for the feed-forward: 2 round trips per layer, plus one for the logits.
 *
 * The client keeps in memory the embedding table, the norms and its own slice (when
 * localShare > 0), nothing else.
 */
import * as fs from "node:fs";
import type { KernelBackend } from "../kernels/kernels.js";
import type { LlamaConfig } from "../model/config.js";
import type { TensorSource } from "../model/safetensors.js";
import { LlameshError } from "../model/errors.js";
import { EmbeddingTable } from "../engine/embedding.js";
import { checkTensors, dimsOf, hfNames, normIndex, readNorms, type MemoryRow, type MemorySummary } from "../engine/weights.js";
import { openCheckpoint, openWeights, type LoadedModel } from "../engine/open.js";
import { formatBytes } from "../cli/progress.js";
import { modelFingerprint, withKeys } from "./cache.js";
import { planCluster, type ClusterPlan } from "./planner.js";
import * as crypto from "node:crypto";
import { openSession } from "./auth.js";
import { MeshMember, Poller, type MemberInfo } from "./mesh.js";
import { ResidualStream } from "../engine/residual.js";
import {
  Connection, decodeDone, decodePartial, decodeResult, encodeActRequest, encodeMesh, encodeStep, encodeWeightChunk, jsonOf, MSG,
  type StepTimes,
} from "./protocol.js";
import { extractSlices, nodeDims, ModelSlice, sliceDescs, sliceMacs, type NodeSlice, type SliceDesc } from "../engine/slice.js";

export interface WorkerSpec {
  host: string;
  port: number;
  /** Relative share of the work; absent: follow the worker's measured GMAC. */
  share?: number;
}

/** Parse `--workers host:port[@share],...` (IPv6 hosts in brackets: `[::1]:1234`). */
export function parseWorkersFlag(value: string, flag = "--workers"): WorkerSpec[] {
  const items = value.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  if (items.length === 0) throw new LlameshError(`${flag} ${JSON.stringify(value)}: expected host:port[@share],... (e.g. 192.168.1.10:1234@70,192.168.1.11:1234@30)`);
  const out = items.map((item): WorkerSpec => {
    const m = /^(\[[^\]]+\]|[^:@\s]+):(\d+)(?:@([0-9]*\.?[0-9]+))?$/.exec(item);
    if (!m) throw new LlameshError(`${flag}: ${JSON.stringify(item)} is not host:port[@share] (e.g. 192.168.1.10:1234 or 192.168.1.10:1234@70)`);
    const port = Number(m[2]);
    if (!(port >= 1 && port <= 65535)) throw new LlameshError(`${flag}: ${JSON.stringify(item)}: port ${m[2]} is not between 1 and 65535`);
    const host = m[1]!.startsWith("[") ? m[1]!.slice(1, -1) : m[1]!;
    const spec: WorkerSpec = { host, port };
    if (m[3] !== undefined) {
      const share = Number(m[3]);
      if (!Number.isFinite(share) || share < 0) throw new LlameshError(`${flag}: ${JSON.stringify(item)}: share ${m[3]} is not a number >= 0`);
      spec.share = share;
    }
    return spec;
  });
  const withShare = out.filter((w) => w.share !== undefined).length;
  if (withShare !== 0 && withShare !== out.length) {
    throw new LlameshError(`${flag}: give a share to every worker (host:port@share) or to none (shares then follow each worker's measured GMAC)`);
  }
  const seen = new Set<string>();
  for (const w of out) {
    const k = `${w.host}:${w.port}`;
    if (seen.has(k)) throw new LlameshError(`${flag}: ${k} is listed twice`);
    seen.add(k);
  }
  return out;
}

export interface DistributedOptions {
  workers: WorkerSpec[];
  /**
   * The client's own part. With explicit worker shares it is a weight in the same units
   * (a:1@50,b:1@25 with localShare 25 = 50/25/25). Without them it is a percentage of the
   * whole, the workers sharing the rest in proportion to their measured GMAC. Default 0:
   * the client only coordinates.
   */
  localShare?: number;
  backend: KernelBackend;
  maxSeqLen?: number;
  /** Prompt tokens per forward call (default 32). */
  batch?: number;
  onProgress?: (done: number, total: number) => void;
  log: (line: string) => void;
  /** Write one row per token, layer, operation and node here at close(). */
  perfCsv?: string;
  connectTimeoutMs?: number;
  /**
   * When a token's replies take longer than this, the client pings the workers that have not
   * answered; one that does not answer the ping within the same time hangs: it is disconnected
   * and counts as lost (the client re-plans without it). Default 30 s.
   */
  stepTimeoutMs?: number;
  /** Shared secret of the cluster (auth.ts loadSecret): workers must prove they know it, and this client proves it too. */
  secret?: Buffer | null;
  /**
   * While waiting for the workers' replies in a round, keep polling for up to this many ms
   * instead of sleeping (a sleeping core can take ~1 ms to wake on a VM). Default: 20 when the
   * client has a local share (its cores are its own), else 0 (it may share a core with a worker).
   */
  spinMs?: number;
  /**
   * "mesh": the nodes exchange their partial sums directly, the client only sends each token's
   * embedding and gathers the logits (see mesh.ts). "star": every sync is a round trip through
   * the client. "auto" (default): mesh, or star when the workers cannot link to each other (said
   * in the log).
   */
  topology?: Topology | "auto";
}

export type Topology = "mesh" | "star";

interface NodeStats {
  rounds: number;
  rttMs: number;
  computeMs: number;
  sent: number;
  received: number;
}

interface ClusterNode {
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

export interface DistributedModel extends LoadedModel {
  /** Always asynchronous: every layer waits for the workers. */
  forward(tokens: readonly number[], pos: number): Promise<Float32Array>;
  /** The plan in use (another one after a lost worker). */
  readonly plan: ClusterPlan;
  readonly topology: Topology;
  /** Lost workers survived so far (see clusterReport). */
  readonly recoveries: number;
  /** Weight bytes sent to each worker during setup (in worker order). */
  weightBytesSent: number[];
  /** The cluster section of the report (stderr lines). */
  clusterReport(): string[];
  /** The numbers behind the report (since setup or the last resetStats()). */
  clusterStats(): ClusterStats;
  resetStats(): void;
  /** Worker counters (STATS), in worker order. */
  workerStats(): Promise<Record<string, unknown>[]>;
  close(): Promise<void>;
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

/** A worker that answered the handshake. */
interface WorkerHello {
  conn: Connection;
  gmac: number;
  threads: number;
  spec: WorkerSpec;
}

type Op = "attn" | "ffn" | "logits";
const OP_MSG: Record<Op, number> = { attn: MSG.ATTN, ffn: MSG.FFN, logits: MSG.LOGITS };

export async function openDistributedModel(dir: string, opts: DistributedOptions): Promise<DistributedModel> {
  const log = opts.log;
  const { config, tokenizer, source, configText } = await openCheckpoint(dir);
  const seqLen = opts.maxSeqLen ?? config.seqLen;
  const batch = Math.max(1, Math.min(opts.batch ?? 32, seqLen));
  const localShare = opts.localShare ?? 0;
  if (!(localShare >= 0)) throw new LlameshError(`--local-share ${localShare}: expected a number >= 0`);
  if (opts.workers.length === 0 && localShare === 0) throw new LlameshError("--workers: no workers and --local-share 0: nobody would compute");
  const t0 = performance.now();
  const conns: Connection[] = [];
  try {
    checkTensors(source, config);
    const fingerprint = modelFingerprint(configText, source.files);

    // Connect and shake hands with every worker, in parallel.
    const settled = await Promise.allSettled(
      opts.workers.map(async (w) => {
        const tc = performance.now();
        const conn = await Connection.connect(w.host, w.port, opts.connectTimeoutMs ?? 10_000);
        conns.push(conn);
        const j = jsonOf(await openSession(conn, MSG.HELLO, { fingerprint, client: "llamesh" }, opts.secret ?? null), MSG.HELLO_OK, `worker ${conn.label}`);
        const gmac = typeof j["gmac"] === "number" ? j["gmac"] : 1;
        const threads = typeof j["threads"] === "number" ? j["threads"] : 1;
        log(`Connected to worker ${conn.label}: ${threads} thread${threads === 1 ? "" : "s"}, ${gmac.toFixed(2)} GMAC, in ${(performance.now() - tc).toFixed(1)} ms`);
        return { conn, gmac, threads };
      }),
    );
    // wait for every attempt, so that no connection is left open behind an error
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    const hellos: WorkerHello[] = settled.map((r, i) => ({ ...(r as PromiseFulfilledResult<{ conn: Connection; gmac: number; threads: number }>).value, spec: opts.workers[i]! }));

    // Shares: explicit weights, or measured GMAC (over the workers still there after a loss).
    const explicit = opts.workers.length > 0 && opts.workers.every((w) => w.share !== undefined);
    const local = explicit ? localShare : Math.min(100, localShare);
    const sharesOf = (alive: WorkerHello[]): number[] => {
      if (explicit) return alive.map((h) => h.spec.share!);
      const g = alive.reduce((s, h) => s + h.gmac, 0);
      return alive.map((h) => (g > 0 ? ((100 - local) * h.gmac) / g : (100 - local) / alive.length));
    };
    const emptyStats = (): NodeStats => ({ rounds: 0, rttMs: 0, computeMs: 0, sent: 0, received: 0 });

    /**
     * Plan over `alive` and the local share, build the nodes and give every worker the slices it
     * lacks, in one pass over the checkpoint (plus `extra`, filled by the same pass).
     */
    const deploy = async (src: TensorSource, alive: WorkerHello[], extra: { desc: SliceDesc; rows: Uint8Array } | null, onProgress?: (d: number, t: number) => void) => {
      const workerShares = sharesOf(alive);
      const plan = planCluster(config, local > 0 ? [local, ...workerShares] : workerShares);
      const nodes: ClusterNode[] = [];
      if (local > 0) {
        const ln = new ModelSlice(config, plan.nodes[0]!, seqLen, batch, opts.backend);
        nodes.push({ label: "local", addr: null, share: local, slice: plan.nodes[0]!, conn: null, local: ln, threads: opts.backend.threads, gmac: 0, macsPerToken: ln.macsPerToken, weightBytes: ln.weightBytes, weightBytesSent: 0, stats: emptyStats() });
      }
      alive.forEach((h, i) => {
        const slice = plan.nodes[i + (local > 0 ? 1 : 0)]!;
        const bytes = sliceDescs(config, slice).reduce((s, d) => s + d.bytes, 0);
        nodes.push({ label: h.conn.label, addr: { host: h.spec.host, port: h.spec.port }, share: workerShares[i]!, slice, conn: h.conn, local: null, threads: h.threads, gmac: h.gmac, macsPerToken: sliceMacs(config, slice), weightBytes: bytes, weightBytesSent: 0, stats: emptyStats() });
      });
      // Setup: each worker says which slices it lacks.
      // (in parallel: a worker with --model cuts its slices from its own copy meanwhile)
      const wanted: SliceDesc[][] = await Promise.all(
        nodes.map(async (n) => {
          if (n.local) return n.local.descs;
          const descs = withKeys(sliceDescs(config, n.slice), fingerprint);
          const j = jsonOf(await n.conn!.requestJson(MSG.SETUP, { config, slice: n.slice, seqLen, batch }), MSG.SETUP_OK, `worker ${n.label}`);
          const missing = new Set(Array.isArray(j["missing"]) ? (j["missing"] as unknown[]).filter((x): x is string => typeof x === "string") : []);
          return descs.filter((d) => missing.has(d.key));
        }),
      );
      const toSend = wanted.map((w, i) => (nodes[i]!.local ? 0 : w.reduce((s, d) => s + d.bytes, 0)));
      const sent = toSend.reduce((a, b) => a + b, 0);
      if (sent > 0) log(`Sending weights: ${nodes.filter((_, i) => toSend[i]! > 0).map((n) => `${n.label} ${formatBytes(toSend[nodes.indexOf(n)]!)}`).join(", ")}`);
      await extractSlices(src, opts.backend, extra ? [...wanted, [extra.desc]] : wanted, async (i, desc, off, data) => {
        const n = nodes[i];
        if (!n) {
          extra!.rows.set(data, off);
        } else if (n.local) {
          n.local.view(desc.id).set(data, off);
        } else {
          n.weightBytesSent += data.length;
          await n.conn!.send(MSG.WEIGHTS, encodeWeightChunk(desc.key, off, data));
        }
      }, onProgress);
      for (const n of nodes) if (n.conn) jsonOf(await n.conn.requestJson(MSG.READY, {}), MSG.READY_OK, `worker ${n.label}`);
      return { nodes, plan, sent };
    };

    // the first pass also fills the client's embedding table
    const embedding = new EmbeddingTable(config, new Uint8Array(EmbeddingTable.desc(config).bytes));
    const first = await deploy(source, hellos, { desc: EmbeddingTable.desc(config), rows: embedding.rows }, opts.onProgress);
    let plan = first.plan;
    const coord = new Coordinator(config, embedding, readNorms(source, config), opts.backend, seqLen, batch, first.nodes, opts.perfCsv, opts.spinMs ?? (local > 0 ? 20 : 0), opts.stepTimeoutMs ?? 30_000);
    const linkUp = async (): Promise<Topology> => {
      if (opts.topology === "star") return "star";
      try {
        await coord.startMesh();
        return "mesh";
      } catch (e) {
        if (opts.topology === "mesh" || !(e instanceof LlameshError) || conns.some((c) => c.error)) throw e;
        coord.stopMesh();
        log(`Mesh topology not possible (${e.message}); every sync goes through this machine instead (star topology)`);
        return "star";
      }
    };
    let topology = await linkUp();
    const loadMs = performance.now() - t0;
    log(`Cluster ready in ${(loadMs / 1000).toFixed(2)} s: ${first.nodes.length} node${first.nodes.length === 1 ? "" : "s"}, weights sent ${formatBytes(first.sent)}`);
    for (const l of planLines(config, plan, first.nodes)) log(l);
    for (const c of conns) c.traffic.sent = c.traffic.received = 0;

    /**
     * A worker was lost: plan again over the nodes left, give them their new slices (from the
     * checkpoint, opened again), rebuild the links and recompute the KV caches by replaying the
     * `pos` tokens so far. Throws `cause` when no worker was lost (another kind of failure).
     */
    let alive = hellos;
    const recoveries: string[] = [];
    const recover = async (pos: number, cause: unknown): Promise<void> => {
      const lost = alive.filter((h) => h.conn.error);
      if (lost.length === 0) throw cause;
      alive = alive.filter((h) => !h.conn.error);
      const names = lost.map((h) => h.conn.label).join(", ");
      if (alive.length === 0 && local === 0) {
        throw new LlameshError(`${cause instanceof Error ? cause.message : String(cause)}; no worker left to take over ${names}'s share (run more workers or give this machine a --local-share)`);
      }
      const tr = performance.now();
      // the others may still wait for the lost one's partial sums
      for (const h of alive) void h.conn.send(MSG.ABORT, new Uint8Array(0)).catch(() => undefined);
      const left = alive.length + (local > 0 ? 1 : 0);
      log(`Lost worker ${names} at position ${pos}: re-planning over ${left} node${left === 1 ? "" : "s"} and replaying ${pos} token${pos === 1 ? "" : "s"}`);
      const src = openWeights(dir).source;
      let d: Awaited<ReturnType<typeof deploy>>;
      try {
        d = await deploy(src, alive, null);
      } finally {
        src.close();
      }
      plan = d.plan;
      coord.replace(d.nodes);
      topology = await linkUp();
      await coord.replay(pos);
      const line = `lost ${names} at position ${pos}: re-planned over ${left} node${left === 1 ? "" : "s"}, ${formatBytes(d.sent)} of weights sent, ${pos} tokens replayed, in ${((performance.now() - tr) / 1000).toFixed(2)} s`;
      recoveries.push(line);
      log(`Recovered: ${line}`);
      for (const l of planLines(config, plan, d.nodes)) log(l);
    };

    const model: DistributedModel = {
      dir,
      config,
      tokenizer,
      memory: coord.memorySummary(),
      files: source.files.map((f: string) => ({ file: f, bytes: fs.statSync(f).size })),
      loadMs,
      seqLen,
      batch,
      get plan() {
        return plan;
      },
      get topology() {
        return topology;
      },
      get recoveries() {
        return recoveries.length;
      },
      weightBytesSent: first.nodes.filter((n) => n.conn).map((n) => n.weightBytesSent),
      forward: async (tokens, pos) => {
        // each recovery drops at least one worker, so this ends
        for (;;) {
          try {
            return await coord.forward(tokens, pos);
          } catch (e) {
            await recover(pos, e);
          }
        }
      },
      clusterReport: () => [...coord.report(), ...recoveries.map((r) => `Recovery: ${r}`)],
      clusterStats: () => coord.stats(),
      resetStats: () => coord.resetStats(),
      workerStats: async () => {
        const out: Record<string, unknown>[] = [];
        for (const n of coord.nodes) {
          if (!n.conn) continue;
          const j = jsonOf(await n.conn.requestJson(MSG.STATS, {}), MSG.STATS_OK, `worker ${n.label}`);
          out.push((j["counters"] as Record<string, unknown>) ?? {});
        }
        return out;
      },
      close: async () => {
        coord.writeCsv();
        for (const c of conns) c.close();
        coord.dispose();
      },
    };
    return model;
  } catch (e) {
    for (const c of conns) c.close();
    throw e;
  } finally {
    source.close();
  }
}

function planLines(c: LlamaConfig, plan: ClusterPlan, nodes: ClusterNode[]): string[] {
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
class Coordinator {
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
    const d = dimsOf(c);
    const L = c.nLayers;
    const local = this.nodes.find((n) => n.local)?.local ?? null;
    const byType: MemoryRow[] = [
      { type: "embedding", quant: "Q8_0", bytes: this.embedding.rows.length, params: c.vocabSize * c.dim },
      { type: "norms", quant: "F32", bytes: (2 * L + 1) * d.dimP * 4, params: (2 * L + 1) * c.dim },
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
        conn.onUnsolicited = (f) => {
          const { step, seq, values } = decodePartial(f.body);
          lm.deliver(m.rank, step, seq, values, f.body.length + 16);
        };
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
