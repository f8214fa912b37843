/**
 * The client side of the cluster: connect to the workers (authenticating when there is a shared
 * secret), plan the shares, stream each worker the slices it lacks, link the mesh, and hand the
 * tokens to the coordinator (coordinator.ts). When a worker is lost or hangs, plan again over the
 * nodes left and replay the tokens so far.
 *
 * The client keeps in memory the embedding table, the norms and its own slice (when
 * localShare > 0), nothing else.
 */
import * as fs from "node:fs";
import type { KernelBackend } from "../kernels/kernels.js";
import type { TensorSource } from "../core/tensor-source.js";
import { LlameshError } from "../core/errors.js";
import { EmbeddingTable } from "../engine/embedding.js";
import { openCheckpoint, openWeights, type LoadedModel } from "../engine/open.js";
import { extractSlices, ModelSlice, sliceDescs, sliceMacs, type SliceDesc } from "../engine/slice.js";
import { checkTensors, readNorms } from "../engine/weights.js";
import { formatBytes } from "../core/format.js";
import { openSession } from "./auth.js";
import { modelFingerprint, withKeys } from "./cache.js";
import { Coordinator, planLines, type ClusterNode, type ClusterStats, type NodeStats, type Topology } from "./coordinator.js";
import { planCluster, type ClusterPlan } from "./planner.js";
import { Connection, encodeWeightChunk, jsonOf, MSG } from "./protocol.js";

export type { ClusterStats, Topology } from "./coordinator.js";

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

/** A worker that answered the handshake. */
interface WorkerHello {
  conn: Connection;
  gmac: number;
  threads: number;
  spec: WorkerSpec;
}

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

