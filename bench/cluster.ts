/**
 * `npm run bench:cluster`: one worker against two on the TinyLlama-1.1B shape (a synthetic BF16
 * checkpoint cached in .cache/cluster-bench/), over 1 Gbit/s links between "hosts" (network
 * namespaces on one switch, bench/cluster-net.ts).
 *
 * Host 0 runs the client (not pinned: the scheduler puts it where it likes, as on a user's
 * machine; --pin-client pins it to core 0) and worker A pinned to core 0 (`taskset`), host 1 runs
 * worker B pinned to core 1; each worker has 1 thread. Run 0: the client alone (local share only: one machine, no
 * network). Run 1: worker A alone (the client coordinates). Run 2: workers A and B, 50/50 (the
 * client coordinates). Run 3: the client computes 50% itself and worker B 50% (two machines, no
 * process sharing a core). Each setup runs 5 times, alternating, and the fastest run of each
 * counts (the host's other tenants slow single runs down at random); every run's figure and the
 * ratio of the medians are printed too.
 *
 * In the mesh topology (default) the client sleeps while a token runs, so both workers poll for
 * their peers' partial sums. In the star topology the client works between rounds on core 0, so
 * worker A must not poll (--spin-ms 0).
 *
 * --encryption: run 2 against itself with a shared secret (every link TLS, secure.ts), alternating:
 * the cost of encryption. --nodes 2,3,4,8: the network figures of N workers (bench/cluster-nodes.ts).
 *
 * Needs root (namespaces, tc); without it, says why and exits 0. Traffic stays inside the
 * namespaces it creates, which it deletes at the end.
 *
 * Flags: --tokens N (decode steps measured per run, default 32), --reps N (runs per setup,
 * default 5), --topology mesh|scatter|star, --share-a N (worker A's share in the 2-worker run,
 * default 50; B gets the rest), --csv PREFIX (each run writes its per-sync CSV), --setups 1,2 (run
 * only those of runs 0-3, e.g. the 1-worker/2-worker pair of the speedup), --pin-client,
 * --ab-worker-flags "FLAGS", --ab-worker-env "K=V ..." and/or --ab-base DIR (a second pair of
 * workers started with FLAGS, e.g. "--spin-ms 0", with that environment, or from the checkout
 * DIR, e.g. main's: the 1- and 2-worker runs of both
 * pairs alternating, both speedups and their ratio; the client is this checkout's). Worker slice
 * caches persist in .cache/cluster-bench so a re-run sends no weights.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { createBackend } from "../src/kernels/backend.js";
import { modelMacsPerToken } from "../src/engine/weights.js";
import { SHAPES, writeSyntheticModel } from "../src/synthetic/checkpoint.js";
import { openDistributedModel, type Topology, type WorkerSpec } from "../src/cluster/client.js";
import type { ClusterStats } from "../src/cluster/stats.js";
import { cannotRun, createLan, fmtBytes, median, ROOT, runJson, startWorker, table, teardown, type BenchWorker, type Host } from "./cluster-net.js";
import { nodesBench } from "./cluster-nodes.js";

const BASE = path.join(ROOT, ".cache", "cluster-bench");
export const MODEL = path.join(BASE, "1b-seed1");
/** The shared secret of --encryption runs (a bench-only value: these links never leave the namespaces). */
const BENCH_SECRET = "llamesh-bench-cluster-secret-0123456789abcdef";
const log = (l: string): void => void process.stderr.write(l + "\n");

export interface ClientResult {
  tokPerSec: number;
  msPerToken: number;
  bytesPerToken: number;
  msPerRound: number;
  roundsPerToken: number;
  gmacs: number[];
  macsPerToken: number;
  weightsSent: number[];
  topology: Topology;
  nodes: ClusterStats["nodes"];
  report: string[];
}

/** What the bench asks of one client run (passed as JSON to the client phase). */
export interface ClientRequest {
  workers: WorkerSpec[];
  tokens: number;
  localShare?: number;
  topology: Topology;
  csv?: string;
  secret?: string;
}

/** Inside namespace A: run the client against the given workers and print one JSON line. */
async function clientPhase(arg: string): Promise<void> {
  const { workers, tokens, localShare, topology, csv, secret } = JSON.parse(arg) as ClientRequest;
  const backend = await createBackend({ threads: 1 });
  const m = await openDistributedModel(MODEL, {
    workers, localShare, backend, maxSeqLen: 256, log, topology, perfCsv: csv ? `${csv}-${workers.length}w-local${localShare ?? 0}.csv` : undefined,
    ...(secret ? { secret: Buffer.from(secret) } : {}),
  });
  const argmax = (l: Float32Array): number => {
    let best = 0;
    for (let i = 1; i < l.length; i++) if (l[i]! > l[best]!) best = i;
    return best;
  };
  const prompt = [1, 450, 4996, 17354, 1701];
  let next = argmax(await m.forward(prompt, 0));
  for (let i = 0; i < 3; i++) next = argmax(await m.forward([next], prompt.length + i)); // warm-up
  m.resetStats();
  const t0 = performance.now();
  for (let i = 0; i < tokens; i++) next = argmax(await m.forward([next], prompt.length + 3 + i));
  const ms = performance.now() - t0;
  const st = m.clusterStats();
  const bytes = st.nodes.reduce((s, n) => s + n.sent + n.received, 0);
  const res: ClientResult = {
    tokPerSec: (1000 * tokens) / ms,
    msPerToken: ms / tokens,
    bytesPerToken: bytes / tokens,
    msPerRound: st.roundMs / Math.max(1, st.rounds),
    roundsPerToken: st.rounds / tokens,
    gmacs: st.nodes.map((n) => n.gmac),
    macsPerToken: modelMacsPerToken(m.config),
    weightsSent: m.weightBytesSent,
    topology: m.topology,
    nodes: st.nodes,
    report: m.clusterReport(),
  };
  await m.close();
  await backend.close();
  process.stdout.write(JSON.stringify(res) + "\n");
}

/** Every core of this machine, as taskset writes them: the client is not pinned. */
export const ALL_CORES = `0-${os.availableParallelism() - 1}`;

/** One client run on `host` (on `cores`, default every core: unpinned), against `workers`. */
export function runClient(host: Host, req: ClientRequest, cores = ALL_CORES, env: NodeJS.ProcessEnv = {}): Promise<ClientResult> {
  return runJson<ClientResult>(host, cores, fileURLToPath(import.meta.url), ["--client", JSON.stringify(req)], env);
}

/** The synthetic TinyLlama-1.1B checkpoint the cluster benches run (written once). */
export function ensureModel(): void {
  if (fs.existsSync(path.join(MODEL, ".complete"))) return;
  log(`Writing the synthetic TinyLlama-1.1B checkpoint (BF16, seed 1) to ${MODEL} ...`);
  fs.rmSync(MODEL, { recursive: true, force: true });
  writeSyntheticModel(MODEL, SHAPES["1b"]!, { seed: 1, dtype: "BF16" });
  fs.writeFileSync(path.join(MODEL, ".complete"), "");
}

/** --setups 1,2: which of runs 0-3 to make (default all). */
function setupsFlag(): Set<number> {
  const v = flag("--setups");
  if (v === undefined) return new Set([0, 1, 2, 3]);
  const list = v.split(",").map(Number);
  if (list.some((n) => !Number.isInteger(n) || n < 0 || n > 3)) throw new Error(`--setups ${v}: expected a list of run numbers 0..3 (e.g. 1,2)`);
  return new Set(list);
}

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const ci = process.argv.indexOf("--client");
  if (ci >= 0) return clientPhase(process.argv[ci + 1]!);
  const tokens = Number(flag("--tokens") ?? 32);
  const reps = Math.max(1, Number(flag("--reps") ?? 5));
  // worker A's share in the 2-worker run (B gets the rest): A shares its core with the client
  const shareA = Number(flag("--share-a") ?? 50);
  // --csv PREFIX: each client run writes its per-sync CSV to PREFIX-run<k>-<workers>w-local<share>.csv
  const csv = flag("--csv");
  const csvPrefix = csv ? path.resolve(csv) : undefined;
  const t = flag("--topology") ?? "mesh";
  if (t !== "mesh" && t !== "star" && t !== "scatter") throw new Error(`--topology ${t}: expected mesh, scatter or star`);
  const topology: Topology = t;
  const why = cannotRun();
  if (why) {
    log(`bench:cluster: skipped: ${why}`);
    return;
  }
  if (os.availableParallelism() < 2) {
    log("bench:cluster: skipped: needs at least 2 cores (one worker pinned per core)");
    return;
  }
  ensureModel();
  const load = os.loadavg()[0]!;
  if (load > 0.5) log(`Note: load average ${load.toFixed(2)} before the bench: other processes share these cores, so the numbers are noisy`);
  const nodes = flag("--nodes");
  if (nodes !== undefined) {
    const list = nodes.split(",").map(Number);
    if (list.some((n) => !Number.isInteger(n) || n < 2 || n > 16)) throw new Error(`--nodes ${nodes}: expected a list of worker counts 2..16 (e.g. 2,3,4,8)`);
    return nodesBench({ counts: list, tokens: Number(flag("--tokens") ?? 16), reps: Math.max(1, Number(flag("--reps") ?? 3)), base: BASE, topology: flag("--topology") as Topology | undefined });
  }
  let hosts: Host[];
  try {
    hosts = createLan(2);
  } catch (e) {
    log(`bench:cluster: skipped: cannot create the namespaces / veth / tbf (${(e as Error).message.trim()})`);
    teardown();
    return;
  }
  const children: BenchWorker[] = [];
  const cleanup = (): void => {
    for (const w of children) if (w.child.exitCode === null) w.child.kill("SIGTERM");
    teardown();
  };
  process.on("SIGINT", () => {
    cleanup();
    process.exit(130);
  });
  let runNo = 0;
  const cores = process.argv.includes("--pin-client") ? "0" : ALL_CORES;
  // --trace PREFIX: every worker and client process writes a sync trace (src/cluster/sync-trace.ts)
  const trace = flag("--trace");
  const tracePrefix = trace ? path.resolve(trace) : undefined;
  const traceEnv = (who: string): NodeJS.ProcessEnv => (tracePrefix ? { LLAMESH_SYNC_TRACE: `${tracePrefix}-${who}-%p.trace` } : {});
  const client = (workers: WorkerSpec[], localShare = 0, secret?: string): Promise<ClientResult> => {
    const run = ++runNo;
    return runClient(hosts[0]!, { workers, tokens, localShare, topology, secret, csv: csvPrefix ? `${csvPrefix}-run${run}` : undefined }, cores, traceEnv(`client-run${run}`));
  };
  try {
    // star: worker A shares core 0 with the client, which works between rounds: A must not poll
    // (--spin-ms 0). mesh: the client sleeps while a token runs, so both workers poll.
    const spinA = topology === "star" ? ["--spin-ms", "0"] : [];
    const wa = await startWorker(hosts[0]!, 0, path.join(BASE, "cache-a"), spinA, traceEnv("worker-a"));
    children.push(wa);
    const wb = await startWorker(hosts[1]!, 1, path.join(BASE, "cache-b"), [], traceEnv("worker-b"));
    children.push(wb);
    log(`Workers: A ${wa.host.ip}:${wa.port} (core 0), B ${wb.host.ip}:${wb.port} (core 1), links 1 Gbit/s (tbf)`);
    const two = (a: BenchWorker, b: BenchWorker): WorkerSpec[] => [{ host: a.host.ip, port: a.port, share: shareA }, { host: b.host.ip, port: b.port, share: 100 - shareA }];
    if (process.argv.includes("--encryption")) {
      const env = { LLAMESH_SECRET: BENCH_SECRET };
      const sa = await startWorker(hosts[0]!, 0, path.join(BASE, "cache-a"), spinA, { ...env, ...traceEnv("tls-worker-a") });
      children.push(sa);
      const sb = await startWorker(hosts[1]!, 1, path.join(BASE, "cache-b"), [], { ...env, ...traceEnv("tls-worker-b") });
      children.push(sb);
      await encryptionBench(reps, tokens, topology, () => client(two(wa, wb)), () => client(two(sa, sb), 0, BENCH_SECRET));
      return;
    }
    log(`The client runs ${cores === "0" ? "pinned to core 0 (--pin-client)" : `unpinned (cores ${cores})`}`);
    const abFlags = flag("--ab-worker-flags");
    const abBase = flag("--ab-base");
    const abEnv = flag("--ab-worker-env");
    if (abFlags !== undefined || abBase !== undefined || abEnv !== undefined) {
      // a second pair of workers, with other flags (e.g. "--spin-ms 0") or another checkout's
      // bin/worker (its own dist/): 1 and 2 workers of each pair, alternating
      const extra = (abFlags ?? "").split(" ").filter((x) => x !== "");
      const root = abBase ? path.resolve(abBase) : ROOT;
      const env = Object.fromEntries((abEnv ?? "").split(" ").filter((x) => x.includes("=")).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
      const what = [abFlags, abEnv, abBase ? `workers of ${root}` : undefined].filter(Boolean).join(", ");
      const xa = await startWorker(hosts[0]!, 0, path.join(BASE, "cache-a"), [...spinA, ...extra], { ...env, ...traceEnv("ab-worker-a") }, root);
      children.push(xa);
      const xb = await startWorker(hosts[1]!, 1, path.join(BASE, "cache-b"), extra, { ...env, ...traceEnv("ab-worker-b") }, root);
      children.push(xb);
      await abBench(reps, tokens, what, [
        { name: "A/B: 1 worker, this checkout", run: () => client([{ host: wa.host.ip, port: wa.port, share: 100 }]) },
        { name: "A/B: 2 workers, this checkout", run: () => client(two(wa, wb)) },
        { name: `A/B: 1 worker, ${what}`, run: () => client([{ host: xa.host.ip, port: xa.port, share: 100 }]) },
        { name: `A/B: 2 workers, ${what}`, run: () => client(two(xa, xb)) },
      ]);
      return;
    }
    await scalingBench(reps, tokens, topology, shareA, load, setupsFlag(), [
      { name: "Run 0: the client alone (local share only, no network): one machine", run: () => client([], 100) },
      { name: "Run 1: worker A alone", run: () => client([{ host: wa.host.ip, port: wa.port, share: 100 }]) },
      { name: `Run 2: workers A and B, ${shareA}/${100 - shareA}`, run: () => client(two(wa, wb)) },
      { name: "Run 3: the client's own share (50, core 0, in-process) and worker B (50)", run: () => client([{ host: wb.host.ip, port: wb.port, share: 50 }], 50) },
    ]);
  } finally {
    cleanup();
  }
}

interface Setup {
  name: string;
  run: () => Promise<ClientResult>;
}

/** Each setup `reps` times, the setups alternating; every run's tok/s and the fastest run of each. */
async function alternate(setups: Setup[], reps: number): Promise<{ best: ClientResult[]; all: number[][] }> {
  const best: (ClientResult | null)[] = setups.map(() => null);
  const all: number[][] = setups.map(() => []);
  for (let rep = 0; rep < reps; rep++) {
    for (let i = 0; i < setups.length; i++) {
      log(`${setups[i]!.name} (repetition ${rep + 1}/${reps})`);
      const r = await setups[i]!.run();
      for (const l of r.report) log("  " + l);
      all[i]!.push(r.tokPerSec);
      if (!best[i] || r.tokPerSec > best[i]!.tokPerSec) best[i] = r;
    }
  }
  return { best: best as ClientResult[], all };
}

/** Two workers, plain against encrypted (a shared secret: every link TLS), alternating. */
async function encryptionBench(reps: number, tokens: number, topology: Topology, plain: () => Promise<ClientResult>, encrypted: () => Promise<ClientResult>): Promise<void> {
  const { best, all } = await alternate([{ name: "Plain links (no secret)", run: plain }, { name: "Encrypted links (shared secret, TLS)", run: encrypted }], reps);
  const [p, e] = best as [ClientResult, ClientResult];
  process.stdout.write(`\nTinyLlama-1.1B shape (synthetic, Q8_0), 2 workers, ${topology}, 1 thread each, 1 Gbit/s links, ${tokens} tokens, ${reps} alternating runs each:\n\n`);
  process.stdout.write(table([
    ["links", "best tok/s", "median tok/s", "bytes/token", "all runs (tok/s)"],
    ["plain", p.tokPerSec.toFixed(2), median(all[0]!).toFixed(2), fmtBytes(p.bytesPerToken), all[0]!.map((x) => x.toFixed(2)).join(", ")],
    ["encrypted", e.tokPerSec.toFixed(2), median(all[1]!).toFixed(2), fmtBytes(e.bytesPerToken), all[1]!.map((x) => x.toFixed(2)).join(", ")],
  ]));
  process.stdout.write(`encrypted / plain: ${(e.tokPerSec / p.tokPerSec).toFixed(3)}x best against best, ${(median(all[1]!) / median(all[0]!)).toFixed(3)}x median against median (target >= 0.95x)\n`);
}

/** --ab-worker-flags: the 1- and 2-worker runs of two worker configurations, alternating; both speedups. */
async function abBench(reps: number, tokens: number, flags: string, setups: Setup[]): Promise<void> {
  const { all } = await alternate(setups, reps);
  const best = all.map((x) => Math.max(...x));
  const med = all.map((x) => median(x));
  process.stdout.write(`\n${tokens} tokens, ${reps} alternating runs of each:\n`);
  setups.forEach((s, i) => process.stdout.write(`  ${s.name}: best ${best[i]!.toFixed(2)} tok/s, median ${med[i]!.toFixed(2)} (all: ${all[i]!.map((x) => x.toFixed(2)).join(", ")})\n`));
  process.stdout.write(`this checkout: 2 workers / 1 worker ${(best[1]! / best[0]!).toFixed(2)}x best, ${(med[1]! / med[0]!).toFixed(2)}x median\n`);
  process.stdout.write(`${flags}: 2 workers / 1 worker ${(best[3]! / best[2]!).toFixed(2)}x best, ${(med[3]! / med[2]!).toFixed(2)}x median\n`);
  process.stdout.write(`2 workers, this checkout / ${flags}: ${(best[1]! / best[3]!).toFixed(3)}x best, ${(med[1]! / med[3]!).toFixed(3)}x median\n`);
}

async function scalingBench(reps: number, tokens: number, topology: Topology, shareA: number, load: number, which: Set<number>, setups: Setup[]): Promise<void> {
  const chosen = setups.flatMap((s, i) => (which.has(i) ? [i] : []));
  const got = await alternate(chosen.map((i) => setups[i]!), reps);
  // by run number (0-3); undefined for a run not made
  const best: (ClientResult | undefined)[] = [], all: (number[] | undefined)[] = [];
  chosen.forEach((i, k) => ((best[i] = got.best[k]), (all[i] = got.all[k])));
  const [zero, one, two, three] = best;
  const gmacs = (r: ClientResult): number => r.gmacs.reduce((a, b) => a + b, 0);
  // the client (runs 0 and 3) has no handshake measurement: it runs worker A's kernels on its core
  const gmacA = one ? gmacs(one) : two ? two.gmacs[0]! : NaN;
  const gmacOf = [gmacA, gmacA, two ? gmacs(two) : NaN, three ? gmacA + gmacs(three) : NaN];
  const names = ["client alone (1 machine)", "1 worker", "2 workers", "client 50% + worker B"];
  const speed = (i: number): string => (i === 0 ? "-" : i === 1 ? "1.00x" : i === 2 ? (one && two ? `${(two.tokPerSec / one.tokPerSec).toFixed(2)}x` : "-") : zero && three ? `${(three.tokPerSec / zero.tokPerSec).toFixed(2)}x vs alone` : "-");
  const rows = [["setup", "total GMAC", "theoretical tok/s", "measured tok/s", "ms/token", "speedup", "efficiency", "bytes/token", "ms/round", "rounds/token"]];
  for (const i of chosen) {
    const r = best[i]!;
    const theo = (gmacOf[i]! * 1e9) / r.macsPerToken;
    rows.push([names[i]!, gmacOf[i]!.toFixed(2), theo.toFixed(2), r.tokPerSec.toFixed(2), r.msPerToken.toFixed(1), speed(i), `${((100 * r.tokPerSec) / theo).toFixed(0)}%`, fmtBytes(r.bytesPerToken), r.msPerRound.toFixed(2), r.roundsPerToken.toFixed(0)]);
  }
  process.stdout.write(`\nTinyLlama-1.1B shape (synthetic, Q8_0), ${topology} topology, 1 thread per worker, 1 Gbit/s links (tbf), ${tokens} tokens, best of ${reps} alternating runs:\n\n`);
  process.stdout.write(table(rows));
  process.stdout.write(`\nall runs (tok/s): ${chosen.map((i) => `${names[i]}: ${all[i]!.map((x) => x.toFixed(2)).join(", ")}`).join("; ")}\n`);
  process.stdout.write(`load average before/after: ${load.toFixed(2)} / ${os.loadavg()[0]!.toFixed(2)} (${os.availableParallelism()} cores)\n`);
  if (one && two) {
    const speedup = two.tokPerSec / one.tokPerSec; // 2 workers vs 1 worker
    const ideal = gmacOf[2]! / gmacOf[1]!;
    process.stdout.write(`speedup ${speedup.toFixed(2)}x, best run against best run (target >= 1.7x; ideal from measured GMAC ${ideal.toFixed(2)}x, scaling efficiency ${((100 * speedup) / ideal).toFixed(0)}%); median run against median run ${(median(all[2]!) / median(all[1]!)).toFixed(2)}x\n`);
    process.stdout.write(`weights sent at setup: run 1 ${one.weightsSent.map(fmtBytes).join(", ")}; run 2 ${two.weightsSent.map(fmtBytes).join(", ")} (0 once the workers' caches hold them); A's share ${shareA}\n`);
  }
  if (zero && three) process.stdout.write(`two machines (client with a 50% share + worker B) vs one (the client alone): ${(three.tokPerSec / zero.tokPerSec).toFixed(2)}x\n`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main().then(
  () => process.exit(0),
  (e: unknown) => {
    if (!process.argv.includes("--client")) teardown();
    log(`bench:cluster failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    process.exit(1);
  },
);
