/**
 * `llamesh serve <model-dir> [--port 8080] [--host 127.0.0.1] [model flags]`: the OpenAI-shaped HTTP
 * API of src/server/http.ts over one model, on this machine or a cluster (--workers ...).
 *
 * The port is bound before the model is loaded, so a taken port is an error at once rather than
 * after a long load. While the model loads, requests get 503 (as llama.cpp's server answers
 * "Loading model"); `listening <host>:<port>` is printed on stdout once requests are served.
 */
import * as http from "node:http";
import * as path from "node:path";
import { LlameshError } from "../core/errors.js";
import { createApiServer } from "../server/http.js";
import { parseArgs, usageText, type FlagSpecs } from "./args.js";
import { contextWarning, loadModel, modelFlags, modelSettings } from "./load.js";
import { modelReport } from "./report.js";

export const serveFlags = {
  port: { type: "int", min: 0, max: 65535, default: 8080, help: "port to listen on (default 8080, 0 = any free port)" },
  host: { type: "string", default: "127.0.0.1", help: "address to listen on (default 127.0.0.1: this machine only)" },
  ...modelFlags,
} as const satisfies FlagSpecs;

export function serveUsage(command = "llamesh serve"): string {
  return usageText(
    command,
    ["<model-dir> [--port N] [--host ADDR] [-t|--threads N] [--max-seq-len L]", "[--workers host:port[@share],... [--local-share N] [--secret-file FILE] ...]"],
    `  Serves the model over HTTP in OpenAI's shape: POST /v1/completions, POST /v1/chat/completions
  (with "stream": true for server-sent events), GET /v1/models, GET /health. One request at a
  time, in arrival order. Defaults: port 8080, host 127.0.0.1 (use --host 0.0.0.0 to serve the LAN).
  The port is taken before the model loads; until it has loaded, requests get 503.`,
  );
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
  const { host, port } = flags;
  const log = (line: string): void => void process.stderr.write(line + "\n");

  // Bound first, answering 503 until the API (which needs the model) takes over.
  let api: http.Server | null = null;
  const server = http.createServer((req, res) => {
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
    loaded = await loadModel(dir, settings, log);
  } catch (e) {
    await stopListening();
    throw e;
  }
  const { model, distributed, backend, close } = loaded;
  for (const l of modelReport(model, backend.name, distributed !== null)) log(l);
  const warning = contextWarning(model);
  if (warning) log(warning);
  api = createApiServer({ model, modelName: path.basename(path.resolve(dir)), log });
  const addr = server.address() as { address: string; port: number };
  log(`Serving ${path.basename(path.resolve(dir))} on http://${addr.address}:${addr.port}/v1 (POST /v1/completions, /v1/chat/completions; GET /v1/models, /health)`);
  process.stdout.write(`listening ${addr.address}:${addr.port}\n`);
  const stop = (): void => {
    server.close();
    void close().then(() => process.exit(0));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  return new Promise<never>(() => undefined);
}
