/**
 * A model that runs on a cluster, behind the same interface as one machine's (LoadedModel): open
 * the checkpoint, set up the cluster (cluster.ts), start the step program (coordinator.ts), and
 * hand it the tokens. When a worker is lost or hangs, plan again over the nodes left, rebuild the
 * program and replay the tokens so far.
 *
 * The client keeps in memory the embedding table, the norms and its own slice (when
 * localShare > 0), nothing else.
 */
import * as fs from "node:fs";
import type { KernelBackend } from "../kernels/kernels.js";
import { LlameshError } from "../core/errors.js";
import { formatBytes } from "../core/format.js";
import { EmbeddingTable } from "../engine/embedding.js";
import { defaultSeqLen, openCheckpoint, openWeights, type LoadedModel } from "../engine/open.js";
import { nodeDims } from "../engine/slice.js";
import type { SequenceChunk } from "../engine/forward.js";
import { defaultQuant, typePlan, type QuantChoice, type TypePlan } from "../engine/types.js";
import { checkTensors, countLayouts, hfNames, memoryByType, readNorms, type MemorySummary } from "../engine/weights.js";
import type { LlamaConfig } from "../model/config.js";
import type { Tokenizer } from "../model/tokenizer-types.js";
import { modelFingerprint } from "./cache.js";
import { Cluster, type WorkerSpec } from "./cluster.js";
import { Coordinator, hasPart } from "./coordinator.js";
import { planLines } from "./nodes.js";
import { SCATTER_ABOVE } from "./reduce.js";
import type { ClusterPlan } from "./planner.js";
import { StepLog, type ClusterStats } from "./stats.js";

export type { ClusterStats } from "./stats.js";
export type { WorkerSpec } from "./cluster.js";

/**
 * How the nodes exchange their partial sums: "mesh" directly (each to every other), "scatter"
 * directly in chunks (reduce-scatter + all-gather, for larger clusters), "star" through the
 * client (the relay).
 */
export type Topology = "mesh" | "scatter" | "star";

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
  /** The matrices' types (engine/types.ts): default a GGUF's own, Q8_0 for a folder. */
  quant?: QuantChoice;
  /** Sequences served at once (each node holds a KV region of maxSeqLen positions per slot); default 1. */
  slots?: number;
  /** Write one row per step, sync and node here at close() (rows are kept only when this is set). */
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
  /** With a secret, encrypt every link (secure.ts); default true. */
  encrypt?: boolean;
  /**
   * While waiting for the workers' replies in a round, keep polling for up to this many ms
   * instead of sleeping (a sleeping core can take ~1 ms to wake on a VM). Default: 20 when the
   * client has a local share (its cores are its own), else 0 (it may share a core with a worker).
   */
  spinMs?: number;
  /**
   * "mesh": the nodes exchange their partial sums directly, the client only sends each token's
   * embedding and gathers the logits (reduce.ts MeshReduce). "scatter": directly too, each node
   * adding up one chunk of every sum and sending it to the others (ScatterReduce: two trips per
   * sync, 2(N-1)/N instead of N-1 sums sent per node). "star": every sync is a round trip through
   * the client (the relay). "auto" (default): mesh up to 4 nodes with a part, scatter above, or
   * star when the workers cannot link to each other (said in the log).
   */
  topology?: Topology | "auto";
}

export interface DistributedModel extends LoadedModel {
  /** Always asynchronous: every step waits for the workers. */
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
  /** Per-sync rows held for --perf-csv (0 without it). */
  readonly retainedRows: number;
  /** Worker counters (STATS), in worker order. */
  workerStats(): Promise<Record<string, unknown>[]>;
  /** The cluster's state now: every worker it started with (ok), fewer (degraded), or none left to compute (down). */
  health(): ClusterHealth;
  close(): Promise<void>;
}

export interface ClusterHealth {
  state: "ok" | "degraded" | "down";
  /** The workers the cluster was started with, and whether each is in the current plan. */
  workers: { label: string; inPlan: boolean }[];
}

export async function openDistributedModel(dir: string, opts: DistributedOptions): Promise<DistributedModel> {
  const { config, tokenizer, source, configText } = await openCheckpoint(dir);
  const seqLen = opts.maxSeqLen ?? defaultSeqLen(config);
  const batch = Math.max(1, Math.min(opts.batch ?? 32, seqLen));
  const localShare = opts.localShare ?? 0;
  const slots = opts.slots ?? 1;
  const t0 = performance.now();
  let cluster: Cluster | null = null;
  try {
    checkTensors(source, config);
    const plan = typePlan(source, config, opts.quant ?? defaultQuant(source));
    cluster = await Cluster.connect({
      config, plan, fingerprint: modelFingerprint(configText, source.files), workers: opts.workers, localShare, backend: opts.backend, seqLen, batch, slots,
      secret: opts.secret ?? null, encrypt: opts.encrypt, connectTimeoutMs: opts.connectTimeoutMs ?? 10_000, log: opts.log,
    });
    // the first pass over the checkpoint also fills the client's embedding table
    const embDesc = EmbeddingTable.desc(config, plan);
    const embedding = new EmbeddingTable(config, plan, new Uint8Array(embDesc.bytes));
    const sent = await cluster.deploy(source, { desc: embDesc, rows: embedding.rows }, opts.onProgress);
    const steps = new StepLog(opts.perfCsv);
    const coord = new Coordinator(config, embedding, readNorms(source, config), opts.backend, seqLen, batch, slots, steps, {
      stepTimeoutMs: opts.stepTimeoutMs ?? 30_000, spinMs: opts.spinMs ?? (localShare > 0 ? 20 : 0),
    });
    const m = new ClusterModel(dir, config, tokenizer, cluster, coord, steps, embedding, plan, opts, { seqLen, batch, slots });
    await m.start();
    m.loadMs = performance.now() - t0;
    m.files = source.files.map((f: string) => ({ file: f, bytes: fs.statSync(f).size }));
    opts.log(`Cluster ready in ${(m.loadMs / 1000).toFixed(2)} s: ${cluster.nodes.length} node${cluster.nodes.length === 1 ? "" : "s"}, weights sent ${formatBytes(sent)}`);
    for (const l of planLines(config, cluster.plan!, cluster.nodes)) opts.log(l);
    for (const n of cluster.workers) n.conn.traffic.sent = n.conn.traffic.received = 0;
    return m;
  } catch (e) {
    cluster?.close();
    throw e;
  } finally {
    source.close();
  }
}

/** The cluster behind the LoadedModel interface: forward calls that survive lost workers. */
class ClusterModel implements DistributedModel {
  topology: Topology = "mesh";
  loadMs = 0;
  files: { file: string; bytes: number }[] = [];
  readonly weightBytesSent: number[];
  readonly memory: MemorySummary;
  readonly seqLen: number;
  readonly batch: number;
  readonly slots: number;
  private readonly recovered: string[] = [];
  private readonly clientBytes: number;

  constructor(
    readonly dir: string,
    readonly config: LlamaConfig,
    readonly tokenizer: Tokenizer,
    private readonly cluster: Cluster,
    private readonly coord: Coordinator,
    private readonly steps: StepLog,
    embedding: EmbeddingTable,
    plan: TypePlan,
    private readonly opts: DistributedOptions,
    shape: { seqLen: number; batch: number; slots: number },
  ) {
    this.seqLen = shape.seqLen;
    this.batch = shape.batch;
    this.slots = shape.slots;
    this.weightBytesSent = cluster.workers.map((n) => n.weightBytesSent);
    this.memory = clusterMemory(config, plan, cluster);
    this.clientBytes = embedding.rows.length + (2 * config.nLayers + 1) * embedding.dimP * 4;
  }

  get plan(): ClusterPlan {
    return this.cluster.plan!;
  }

  get recoveries(): number {
    return this.recovered.length;
  }

  get retainedRows(): number {
    return this.steps.retainedRows;
  }

  /** Start the step program (see startProgram). */
  async start(): Promise<void> {
    this.topology = await startProgram(this.cluster, this.coord, this.opts.topology ?? "auto", this.opts.log);
  }

  async forward(tokens: readonly number[], pos: number): Promise<Float32Array> {
    return (await this.forwardBatch([{ slot: 0, pos, tokens }]))[0]!;
  }

  async forwardBatch(chunks: readonly SequenceChunk[]): Promise<Float32Array[]> {
    if (this.cluster.returning > 0) await this.readmit(this.coord.lengthsBefore(chunks));
    // each recovery drops at least one worker, so this ends
    for (;;) {
      const before = this.coord.lengthsBefore(chunks);
      try {
        return await this.coord.forwardBatch(chunks);
      } catch (e) {
        await this.recover(before, chunks[0]!.pos, e);
      }
    }
  }

  /**
   * A worker was lost: plan again over the nodes left, give them their new slices (from the
   * checkpoint, opened again), restart the step program and recompute the KV caches by
   * replaying the `pos` tokens so far. Throws `cause` when no worker was lost.
   */
  private async recover(lengths: ReadonlyMap<number, number>, pos: number, cause: unknown): Promise<void> {
    const c = this.cluster;
    const log = this.opts.log;
    const lost = c.dropLost();
    if (lost.length === 0) throw cause;
    const names = lost.join(", ");
    const left = c.nodesLeft;
    if (left === 0) {
      throw new LlameshError(`${cause instanceof Error ? cause.message : String(cause)}; no worker left to take over ${names}'s share (run more workers or give this machine a --local-share)`);
    }
    log(`Lost worker ${names} at position ${pos}: re-planning over ${left} node${left === 1 ? "" : "s"} and replaying ${pos} token${pos === 1 ? "" : "s"}`);
    await this.replan(lengths, "Recovered", `lost ${names} at position ${pos}`);
  }

  /**
   * Workers lost earlier answer again (Cluster.watchLost): take them back in between steps: plan
   * over every node again, give them their slices (their disk cache usually has them), restart
   * the step program and replay the positions so far, so the next step runs at full width.
   */
  private async readmit(lengths: ReadonlyMap<number, number>): Promise<void> {
    const names = this.cluster.admitReturning().join(", ");
    await this.replan(lengths, "Rejoined", `${names} back`);
  }

  /** Re-plan over the cluster's nodes now, send the slices they lack, restart the program, replay; log and report it. */
  private async replan(lengths: ReadonlyMap<number, number>, verb: string, what: string): Promise<void> {
    const c = this.cluster;
    const tr = performance.now();
    this.coord.leave("re-planned");
    const src = openWeights(this.dir).source;
    let bytes: number;
    try {
      bytes = await c.deploy(src, null);
    } finally {
      src.close();
    }
    await this.start();
    await this.coord.replay(lengths);
    const replayed = [...lengths.values()].reduce((a, b) => a + b, 0);
    const n = c.nodesLeft;
    const line = `${what}: re-planned over ${n} node${n === 1 ? "" : "s"}, ${formatBytes(bytes)} of weights sent, ${replayed} tokens replayed, in ${((performance.now() - tr) / 1000).toFixed(2)} s`;
    this.recovered.push(line);
    this.opts.log(`${verb}: ${line}`);
    for (const l of planLines(this.config, c.plan!, c.nodes)) this.opts.log(l);
  }

  clusterReport(): string[] {
    return [...this.steps.report(this.coord.kind, this.cluster.nodes, this.config, this.seqLen, this.clientBytes), ...this.recovered.map((r) => `Recovery: ${r}`)];
  }

  clusterStats(): ClusterStats {
    return this.steps.stats(this.cluster.nodes);
  }

  resetStats(): void {
    this.steps.reset(this.cluster.nodes);
  }

  workerStats(): Promise<Record<string, unknown>[]> {
    return this.cluster.workerStats();
  }

  health(): ClusterHealth {
    const inPlan = new Set(this.cluster.workers.map((w) => w.label));
    const workers = this.opts.workers.map((w) => `${w.host}:${w.port}`).map((label) => ({ label, inPlan: inPlan.has(label) && !this.cluster.isLost(label) }));
    const up = workers.filter((w) => w.inPlan).length + (this.cluster.nodes.some((n) => n.kind === "local") ? 1 : 0);
    return { state: up === 0 ? "down" : workers.every((w) => w.inPlan) ? "ok" : "degraded", workers };
  }

  async close(): Promise<void> {
    this.steps.writeCsv();
    this.coord.dispose();
    this.cluster.close();
  }
}

/**
 * Start the step program: the mesh, or with `auto` the relay through this machine (the star) when
 * the workers cannot link to each other (said in the log).
 */
async function startProgram(c: Cluster, coord: Coordinator, topology: Topology | "auto", log: (l: string) => void): Promise<Topology> {
  if (topology === "star") {
    await coord.join(c.nodes, "relay");
    return "star";
  }
  const withPart = c.nodes.filter(hasPart).length;
  const linked: Topology = topology === "auto" ? (withPart > SCATTER_ABOVE ? "scatter" : "mesh") : topology;
  try {
    await coord.join(c.nodes, linked);
    return linked;
  } catch (e) {
    if (topology !== "auto" || !(e instanceof LlameshError) || c.anyLost) throw e;
    log(`${linked === "mesh" ? "Mesh" : "Scatter"} topology not possible (${e.message}); every sync goes through this machine instead (star topology)`);
    await coord.join(c.nodes, "relay");
    return "star";
  }
}

/**
 * What the report shows of the model's memory: the whole model by layer type (as on one machine;
 * each node's part is in the cluster report), the KV cache of every node, and this machine's own
 * run state.
 */
function clusterMemory(c: LlamaConfig, plan: TypePlan, cluster: Cluster): MemorySummary {
  const byType = memoryByType(c, plan);
  const local = cluster.nodes.find((n) => n.kind === "local");
  const model = local?.kind === "local" ? local.model : null;
  const arenas = model ? model.arenas : [];
  const used = arenas.reduce((t, a) => t + a.used, 0);
  return {
    byType,
    runState: Math.max(0, used - (model ? model.weightBytes + model.kvBytes : 0)),
    kvCache: cluster.nodes.reduce((t, n) => t + c.nLayers * 2 * cluster.seqLen * nodeDims(c, n.slice).kvRows * 2, 0),
    model: byType.reduce((t, r) => t + r.bytes, 0),
    arenas: arenas.length,
    // tensors the client itself read: embedding, norms, and those its own slice comes from
    tensorsLoaded: 2 + 2 * c.nLayers + (model ? new Set(model.descs.map((x) => x.tensor).filter((t) => t !== hfNames.embedding)).size : 0),
    repacked: countLayouts(model?.repacked),
  };
}
