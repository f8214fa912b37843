/**
 * `llamesh serve <model-dir> [--port 8080] [--host 127.0.0.1] [--parallel 4] [model flags]`: the
 * OpenAI-shaped HTTP API of src/server/ over one model, on this machine or a cluster (--workers).
 *
 * The port is bound before the model is loaded, so a taken port is an error at once rather than
 * after a long load. While the model loads, requests get 503 (as llama.cpp's server answers
 * "Loading model"); `listening <host>:<port>` is printed on stdout once requests are served.
 *
 * The context is shared as llama.cpp's server shares -c: --max-seq-len (default: the trained
 * context, at most 4096) is the positions of all slots together, each slot holding
 * max-seq-len / parallel of them (a 7B model's 4096 positions are 2 GB of KV cache per slot
 * otherwise). --slot-ctx gives each slot's context directly.
 */
import * as http from "node:http";
import * as path from "node:path";
import { LlameshError } from "../core/errors.js";
import { defaultSeqLen, openWeights } from "../engine/open.js";
import { youngGenerationReport } from "../server/heap.js";
import { createApiServer } from "../server/http.js";
import { parseArgs, usageText, type FlagSpecs } from "./args.js";
import { contextWarning, loadModel, modelFlags, modelSettings, type ModelSettings } from "./load.js";
import { modelReport } from "./report.js";

export const serveFlags = {
  port: { type: "int", min: 0, max: 65535, default: 8080, help: "port to listen on (default 8080, 0 = any free port)" },
  host: { type: "string", default: "127.0.0.1", help: "address to listen on (default 127.0.0.1: this machine only)" },
  parallel: { type: "int", aliases: ["-np"], min: 1, max: 16, default: 4, help: "requests served at once, each in its own slot of the KV cache (default 4)" },
  "slot-ctx": { type: "int", min: 2, max: 1 << 20, help: "positions per slot (default: --max-seq-len / --parallel)" },
  queue: { type: "int", min: 0, max: 100000, default: 32, help: "requests waiting for a slot before new ones get 503 (default 32)" },
  "api-key": { type: "string", help: "require Authorization: Bearer KEY on the API (else LLAMESH_API_KEY; /health and the chat page stay open)" },
  "max-body": { type: "int", min: 1024, max: 1 << 30, default: 1 << 20, help: "largest request body in bytes (default 1 MB; 413 beyond)" },
  ...modelFlags,
} as const satisfies FlagSpecs;

export function serveUsage(command = "llamesh serve"): string {
  return usageText(
    command,
    ["<model-dir> [--port N] [--host ADDR] [--parallel N] [--queue N] [--api-key KEY] [-t|--threads N] [--max-seq-len L]", "[--workers host:port[@share],... [--local-share N] [--secret-file FILE] ...]"],
    `  Serves the model over HTTP in OpenAI's shape: POST /v1/completions, POST /v1/chat/completions
  (with "stream": true for server-sent events), GET /v1/models, GET /health, GET /metrics
  (Prometheus), and a chat page at http://HOST:PORT/. --parallel requests share every step
  (continuous batching); each slot keeps its last prompt, so a chat's next turn computes only the
  new tokens. --max-seq-len is the context of all slots together (each gets max-seq-len /
  parallel, as llama.cpp's -c) unless --slot-ctx says. Defaults: port 8080, host 127.0.0.1
  (--host 0.0.0.0 serves the LAN). The port is taken before the model loads; until it has
  loaded, requests get 503.`,
  );
}

/** Each slot's context: --slot-ctx, or the total context (--max-seq-len or the model's default) shared by the slots. */
function slotContext(dir: string, settings: ModelSettings, parallel: number, slotCtx: number | undefined, command: string): number {
  if (slotCtx !== undefined) return slotCtx;
  let total = settings.maxSeqLen;
  if (total === undefined) {
    const w = openWeights(dir);
    w.source.close();
    total = defaultSeqLen(w.config);
  }
  const per = Math.floor(total / parallel);
  if (per < 16) throw new LlameshError(`${command}: --max-seq-len ${total} shared by --parallel ${parallel} slots leaves ${per} positions each; raise --max-seq-len or give --slot-ctx`);
  return per;
}

export async function serveCommand(argv: readonly string[], command = "llamesh serve"): Promise<number> {
  const { positionals, flags, help } = parseArgs(argv, serveFlags, command);
  if (help) {
    process.stdout.write(serveUsage(command) + "\n");
    return 0;
  }
  if (positionals.length !== 1) {
    throw new LlameshError(`${command}: expected one model folder, got ${positionals.length === 0 ? "none" : positionals.join(" ")}\n${serveUsage(command)}`);
  }
  const dir = positionals[0]!;
  const settings = modelSettings(flags, command);
  const { host, port, parallel } = flags;
  const apiKey = flags["api-key"] ?? (process.env["LLAMESH_API_KEY"] || null);
  const log = (line: string): void => void process.stderr.write(line + "\n");

  // Bound first, answering 503 until the API (which needs the model) takes over.
  let api: http.Server | null = null;
  const server = http.createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
    if (api) {
      api.emit("request", req, res);
      return;
    }
    res.writeHead(503, { "content-type": "application/json", "retry-after": "1" });
    res.end(JSON.stringify({ error: { message: "the model is still loading", type: "unavailable_error" } }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) => reject(new LlameshError(`${command}: cannot listen on ${host}:${port} (${e.code ?? e.message})`)));
    server.listen(port, host, () => resolve());
  });
  const stopListening = (): Promise<void> =>
    new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });

  let loaded: Awaited<ReturnType<typeof loadModel>>;
  try {
    const maxSeqLen = slotContext(dir, settings, parallel, flags["slot-ctx"], command);
    loaded = await loadModel(dir, { ...settings, maxSeqLen }, log, parallel);
  } catch (e) {
    await stopListening();
    throw e;
  }
  const { model, distributed, backend, warmup, close } = loaded;
  for (const l of modelReport(model, backend.name, distributed !== null)) log(l);
  if (warmup) log(warmup);
  log(youngGenerationReport());
  const warning = contextWarning(model);
  if (warning) log(warning);
  const name = path.basename(path.resolve(dir));
  api = createApiServer({ model, modelName: name, log, maxQueue: flags.queue, apiKey, maxBodyBytes: flags["max-body"] });
  // the bound server is the one clients talk to: it gets the API's timeouts too
  server.headersTimeout = api.headersTimeout;
  server.requestTimeout = api.requestTimeout;
  server.keepAliveTimeout = api.keepAliveTimeout;
  const addr = server.address() as { address: string; port: number };
  const at = `http://${addr.address}:${addr.port}`;
  log(`Serving ${name} on ${at}/v1 (POST /v1/completions, /v1/chat/completions; GET /v1/models, /health, /metrics), chat page at ${at}/: ${parallel} slot${parallel === 1 ? "" : "s"} of ${model.seqLen} positions${apiKey ? ", API key required" : ""}`);
  process.stdout.write(`listening ${addr.address}:${addr.port}\n`);
  const stop = (): void => {
    server.close();
    server.closeAllConnections();
    api?.close();
    void close().then(() => process.exit(0));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  return new Promise<never>(() => undefined);
}
