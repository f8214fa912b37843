/**
 * `bin/worker <port> [--host ADDR] [--threads N] [--cache-dir DIR] [--model DIR]`: a compute node
 * of the cluster. Prints its address, threads and measured GMAC, then serves until killed.
 */
import * as os from "node:os";
import { createBackend } from "../kernels/backend.js";
import { LlameshError } from "../core/errors.js";
import { defaultCacheDir } from "../cluster/cache.js";
import { loadSecret } from "../cluster/auth.js";
import { WorkerServer } from "../cluster/worker.js";
import { defaultThreads, parseArgs, type FlagSpecs } from "./args.js";
import { main } from "./main.js";

export const workerFlags = {
  host: { type: "string", default: "0.0.0.0", help: "address to listen on (default 0.0.0.0)" },
  threads: { type: "int", aliases: ["-t"], min: 1, max: 256, help: "compute threads" },
  "cache-dir": { type: "string", help: "folder of the weight-slice cache" },
  "secret-file": { type: "string", help: "file holding the cluster's shared secret (else LLAMESH_SECRET); clients and peers must prove they know it, and every link is encrypted" },
  "no-encryption": { type: "boolean", help: "with a secret: authenticate only, do not encrypt the links (the client must say the same)" },
  "cache-max-gb": { type: "number", min: 0, max: 1e6, help: "size limit of the cache; least recently used slices are deleted (default 64)" },
  model: { type: "string", help: "a local copy of the model folder to cut slices from" },
  kernels: { type: "string", choices: ["wasm", "ts"], default: "wasm", help: "wasm or ts (the plain TypeScript reference)" },
  "max-memory-gb": { type: "number", min: 0.0001, max: 1e6, help: "memory the model slices of all sessions may take together (default 75% of this machine's)" },
  "spin-ms": { type: "number", min: 0, max: 1000, help: "ms to keep polling for the next request after each result (default 5, 0 = sleep at once)" },
} as const satisfies FlagSpecs;

const USAGE = `usage: worker <port> [--host ADDR] [-t|--threads N] [--secret-file FILE [--no-encryption]] [--cache-dir DIR] [--cache-max-gb N] [--model DIR]
              [--max-memory-gb N] [--kernels wasm|ts] [--spin-ms MS]
  Serves a share of each token's work to a client started with --workers host:port,...
  Port 0 picks a free port (printed). Defaults: host 0.0.0.0, threads = OMP_NUM_THREADS or the
  core count, cache-dir = $XDG_CACHE_HOME/llamesh or ~/.cache/llamesh, cache-max-gb = 64,
  max-memory-gb = 75% of this machine's memory (a client asking for more gets a one-line refusal).
  With a secret (--secret-file, or LLAMESH_SECRET), only clients and peers that prove they know
  it are served, and every link is encrypted (TLS keyed from the secret); without one, anyone
  who reaches the port is, in plain text.`;

main(async () => {
  const { positionals, flags: f, help } = parseArgs(process.argv.slice(2), workerFlags, "worker");
  if (help) {
    process.stdout.write(USAGE + "\n");
    return;
  }
  if (positionals.length !== 1) throw new LlameshError(`worker: expected one port, got ${positionals.length === 0 ? "none" : positionals.join(" ")}\n${USAGE}`);
  const port = Number(positionals[0]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new LlameshError(`worker: port ${JSON.stringify(positionals[0])} is not valid, expected an integer between 0 and 65535`);
  const threads = f.threads ?? defaultThreads(process.env, os.availableParallelism());
  const log = (line: string): void => void process.stderr.write(line + "\n");
  const backend = await createBackend({ threads, log, forceReference: f.kernels === "ts" });
  const host = f.host;
  const secret = loadSecret(f["secret-file"]);
  if (f["no-encryption"] && !secret) throw new LlameshError("worker: --no-encryption needs a shared secret (--secret-file or LLAMESH_SECRET): without one the links are plain already");
  let server: WorkerServer;
  try {
    server = await WorkerServer.start({
      port, host, backend, log,
      cacheDir: f["cache-dir"] ?? defaultCacheDir(),
      secret,
      encrypt: !f["no-encryption"],
      cacheMaxBytes: f["cache-max-gb"] === undefined ? undefined : f["cache-max-gb"] * 1e9,
      modelDir: f.model,
      spinMs: f["spin-ms"],
      limits: f["max-memory-gb"] === undefined ? undefined : { maxMemoryBytes: Math.floor(f["max-memory-gb"] * 1e9) },
      gmac: process.env["LLAMESH_WORKER_GMAC"] ? Number(process.env["LLAMESH_WORKER_GMAC"]) : undefined,
    });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE" || code === "EACCES" || code === "EADDRNOTAVAIL") throw new LlameshError(`worker: cannot listen on ${host}:${port} (${code})`);
    throw e;
  }
  log(`Worker on ${server.addresses().join(", ")}: ${backend.threads} thread${backend.threads === 1 ? "" : "s"}, ${server.gmac.toFixed(2)} GMAC (Q8_0 matvec), kernels ${backend.name}`);
  if (!secret && host !== "127.0.0.1" && host !== "::1" && host !== "localhost") {
    log(`Warning: no shared secret: anyone who reaches ${host}:${server.port} can use this worker (set --secret-file FILE or LLAMESH_SECRET on every machine, or --host 127.0.0.1)`);
  }
  if (secret) log(server.security.encrypt ? "Links: encrypted (TLS, ECDHE-PSK with ChaCha20-Poly1305, keyed from the shared secret)" : "Links: authenticated, NOT encrypted (--no-encryption)");
  log(`Cache: ${server.cache.dir} (at most ${(server.cache.maxBytes / 1e9).toFixed(1)} GB)${server.fingerprint ? `; model ${f.model ?? ""} (fingerprint ${server.fingerprint})` : ""}`);
  // Machine-readable for scripts and tests, printed once ready: "listening <host>:<port>".
  process.stdout.write(`listening ${server.host}:${server.port}\n`);
  const stop = (): void => {
    void server.close().then(() => backend.close()).then(() => process.exit(0));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  await new Promise<never>(() => undefined);
});
