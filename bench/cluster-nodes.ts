/**
 * `npm run bench:cluster -- --nodes 2,3,4,8`: the network figures of a cluster of N workers, each
 * on its own host (network namespace) behind one 1 Gbit/s switch, the client on another, for the
 * mesh and the scatter reduce (reduce.ts), alternating runs. Reports per token: syncs, bytes moved
 * (all nodes, and the busiest node's), the time per sync and how much of it nodes spent waiting,
 * and what the model of docs/cluster.md predicts from the link's measured latency and throughput
 * (bench/echo.ts: Node to Node, no llamesh code) and the nodes' measured compute.
 *
 * On a 2-core machine N workers share 2 cores, so beyond N = 2 a node's wait includes the other
 * nodes' compute on its core: compute and ms/token are not what N laptops would see; bytes,
 * syncs and the network part of a sync are. Workers do not poll (--spin-ms 0: more processes
 * than cores), as the echo does not.
 */
import { spawn } from "node:child_process";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { Topology } from "../src/cluster/client.js";
import { loadLlamaConfig } from "../src/model/config.js";
import { createLan, fmtBytes, median, runJson, startWorker, table, teardown, type BenchWorker, type Host } from "./cluster-net.js";
import { ensureModel, MODEL, runClient, type ClientResult } from "./cluster.js";

const log = (l: string): void => void process.stderr.write(l + "\n");
const ECHO = path.join(path.dirname(fileURLToPath(import.meta.url)), "echo.js");

export interface NodesBenchOptions {
  counts: number[];
  tokens: number;
  reps: number;
  base: string;
  /** One topology only (default: mesh and scatter). */
  topology?: Topology;
}

/** Latency and throughput of one host-to-host link for two Node processes. */
export interface LinkFigures {
  /** One-way time of a small message (half the median round trip of 64 bytes), µs. */
  latencyUs: number;
  /**
   * Throughput from the round trips of 64 B and 256 KB, bytes per µs (the echo sends the bytes
   * back as they arrive, so the two directions overlap: the extra time is one transfer).
   */
  bytesPerUs: number;
  /** Median round trip of one sync's partial sum (dim floats), µs. */
  syncRttUs: number;
}

async function measureLink(from: Host, to: Host, syncBytes: number): Promise<LinkFigures> {
  const server = spawn("ip", ["netns", "exec", to.ns, "taskset", "-c", "1", process.execPath, ECHO, "serve", to.ip], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = "";
      server.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /listening [^\s]*:(\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      server.on("exit", (code) => reject(new Error(`echo server exited with ${code}`)));
    });
    const big = 256 * 1024;
    const r = await runJson<Record<string, { minUs: number; medianUs: number }>>(from, "0", ECHO, ["ping", to.ip, String(port), "64", String(syncBytes), String(big)]);
    const small = r["64"]!.medianUs;
    return { latencyUs: small / 2, bytesPerUs: (big - 64) / (r[String(big)]!.medianUs - small), syncRttUs: r[String(syncBytes)]!.medianUs };
  } finally {
    server.kill("SIGTERM");
  }
}

/**
 * docs/cluster.md's model of one token's time: the slowest node's compute, plus per sync the
 * reduce's network time, plus the client's round (embedding out, logits back). Per sync of F bytes
 * over links of latency L and throughput B: the mesh L + (N-1) F / B (each node sends its part to
 * N-1 others on its own link); the scatter 2 (L + (N-1) F / (N B)) (a chunk to each, then the
 * summed chunk to each).
 */
export function predictMsPerToken(o: { topology: Topology; nodes: number; syncs: number; computeMs: number; partBytes: number; logitsBytes: number; link: LinkFigures }): number {
  const { latencyUs: L, bytesPerUs: B } = o.link;
  const n = o.nodes;
  const sync = o.topology === "scatter" ? 2 * (L + ((n - 1) * o.partBytes) / (n * B)) : o.topology === "mesh" ? L + ((n - 1) * o.partBytes) / B : 2 * L + (n * o.partBytes) / B;
  const round = 2 * L + (o.partBytes + o.logitsBytes / n) / B;
  return o.computeMs + (o.syncs * sync + round) / 1000;
}

interface Row {
  n: number;
  topology: Topology;
  best: ClientResult;
  all: number[];
}

export async function nodesBench(o: NodesBenchOptions): Promise<void> {
  ensureModel();
  const config = loadLlamaConfig(MODEL);
  const maxN = Math.max(...o.counts);
  const hosts = createLan(maxN + 1);
  const workers: BenchWorker[] = [];
  const stopWorkers = (): void => {
    for (const w of workers.splice(0)) if (w.child.exitCode === null) w.child.kill("SIGTERM");
  };
  process.on("SIGINT", () => {
    stopWorkers();
    teardown();
    process.exit(130);
  });
  const rows: Row[] = [];
  try {
    const link = await measureLink(hosts[0]!, hosts[1]!, config.dim * 4);
    log(`Link (Node to Node, echo): one-way ${link.latencyUs.toFixed(0)} µs, ${(link.bytesPerUs * 8 / 1000).toFixed(2)} Gbit/s, a ${fmtBytes(config.dim * 4)} round trip ${link.syncRttUs.toFixed(0)} µs`);
    const topologies: Topology[] = o.topology ? [o.topology] : ["mesh", "scatter"];
    for (const n of o.counts) {
      for (let i = 1; i <= n; i++) workers.push(await startWorker(hosts[i]!, (i - 1) % 2, path.join(o.base, `cache-n${n}-${i}`), ["--spin-ms", "0"]));
      const specs = workers.map((w) => ({ host: w.host.ip, port: w.port, share: 1 }));
      log(`${n} workers on ${n} hosts (cores ${workers.map((_, i) => i % 2).join(",")}), the client on ${hosts[0]!.ns}`);
      const runs = topologies.map((topology) => ({ topology, best: null as ClientResult | null, all: [] as number[] }));
      for (let rep = 0; rep < o.reps; rep++) {
        for (const r of runs) {
          log(`  ${n} workers, ${r.topology} (repetition ${rep + 1}/${o.reps})`);
          const res = await runClient(hosts[0]!, { workers: specs, tokens: o.tokens, topology: r.topology });
          if (res.topology !== r.topology) throw new Error(`asked for ${r.topology}, the client ran ${res.topology}`);
          r.all.push(res.tokPerSec);
          if (!r.best || res.tokPerSec > r.best.tokPerSec) r.best = res;
        }
      }
      for (const r of runs) rows.push({ n, topology: r.topology, best: r.best!, all: r.all });
      stopWorkers();
    }
    report(rows, link, config.dim * 4, config.vocabSize * 4, o, hosts);
  } finally {
    stopWorkers();
    teardown();
  }
}

function report(rows: Row[], link: LinkFigures, partBytes: number, logitsBytes: number, o: NodesBenchOptions, hosts: Host[]): void {
  const out: string[][] = [["workers", "reduce", "syncs/token", "bytes/token (all nodes)", "busiest node sent/token", "ms/token (best)", "ms/token (median)", "ms/sync", "wait ms/sync", "slowest compute ms/token", "model ms/token"]];
  for (const r of rows) {
    const b = r.best;
    const workers = b.nodes.filter((x) => x.rounds > 0);
    const waitPerSync = workers.reduce((s, x) => s + (x.rttMs - x.computeMs) / x.rounds, 0) / Math.max(1, workers.length);
    const tokens = o.tokens;
    const computeMs = Math.max(...workers.map((x) => x.computeMs / tokens));
    const syncs = b.roundsPerToken - 1;
    const model = predictMsPerToken({ topology: r.topology, nodes: r.n, syncs, computeMs, partBytes, logitsBytes, link });
    out.push([
      String(r.n), r.topology, b.roundsPerToken.toFixed(0), fmtBytes(b.nodes.reduce((s, x) => s + x.sent, 0) / tokens), fmtBytes(Math.max(...workers.map((x) => x.sent / tokens))),
      b.msPerToken.toFixed(1), (1000 / median(r.all)).toFixed(1), b.msPerRound.toFixed(3), waitPerSync.toFixed(3), computeMs.toFixed(1), model.toFixed(1),
    ]);
  }
  process.stdout.write(`\nTinyLlama-1.1B shape (synthetic, Q8_0), N workers on N hosts (network namespaces, one switch, 1 Gbit/s tbf links), the client on another, ${o.tokens} tokens, ${o.reps} alternating runs; ${os.availableParallelism()} cores shared by all workers:\n\n`);
  process.stdout.write(table(out));
  process.stdout.write(`\nlink (bench/echo.js, Node to Node between ${hosts[0]!.ns} and ${hosts[1]!.ns}): one-way ${link.latencyUs.toFixed(0)} µs, ${((link.bytesPerUs * 8) / 1000).toFixed(2)} Gbit/s\n`);
  process.stdout.write(`"model": docs/cluster.md's prediction from that link and the slowest node's measured compute; beyond 2 workers the nodes share 2 cores, so their waits include each other's compute\n`);
}
