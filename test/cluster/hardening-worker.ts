/**
 * A worker in a child process for the hardening and fuzz tests, so its memory (RSS from
 * /proc/PID/status) and its survival are its own: `node hardening-worker.js '{json}'` with
 * {secret?, model?: dir, limits?: Partial<Limits>, encrypt?: false, cacheDir}. Prints "listening PORT" on
 * stdout; each line "stats" on stdin is answered with one JSON line {counters, rss, heapUsed,
 * connections}. Log lines go to stderr.
 */
import * as readline from "node:readline";
import { createBackend } from "../../src/kernels/backend.js";
import type { Limits } from "../../src/cluster/limits.js";
import { WorkerServer } from "../../src/cluster/worker.js";

interface Args {
  secret?: string;
  model?: string;
  limits?: Partial<Limits>;
  /** false: authenticated but not encrypted (--no-encryption). */
  encrypt?: boolean;
  cacheDir: string;
}

async function main(json: string): Promise<void> {
  const args = JSON.parse(json) as Args;
  const backend = await createBackend({ threads: 1 });
  const server = await WorkerServer.start({
    port: 0, host: "127.0.0.1", backend, cacheDir: args.cacheDir, gmac: 1, spinMs: 0,
    secret: args.secret ? Buffer.from(args.secret, "utf8") : null,
    modelDir: args.model, limits: args.limits, encrypt: args.encrypt,
    log: (l) => void process.stderr.write(l + "\n"),
  });
  process.stdout.write(`listening 127.0.0.1:${server.port}\n`);
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    if (line.trim() !== "stats") return;
    const m = process.memoryUsage();
    process.stdout.write(JSON.stringify({ counters: server.counters, rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, connections: server.connections, arenas: backend.boundArenas }) + "\n");
  });
  rl.on("close", () => void server.close().then(() => process.exit(0)));
}

// the test runner also runs every file under test/ as a test: without arguments, nothing to do
if (process.argv[2] !== undefined) await main(process.argv[2]);
