/**
 * `llamesh serve <model-dir> [--port 8080] [--host 127.0.0.1] [model flags]`: the OpenAI-shaped HTTP
 * API of src/server/http.ts over one model, on this machine or a cluster (--workers ...).
 */
import * as path from "node:path";
import { LlameshError } from "../core/errors.js";
import { createApiServer } from "../server/http.js";
import { parseArgs, type FlagSpec } from "./args.js";
import { loadModel, modelFlags, modelSettings } from "./load.js";
import { modelReport } from "./report.js";

const serveFlags: Record<string, FlagSpec> = {
  port: { type: "int", min: 0, max: 65535, help: "port to listen on (default 8080, 0 = any free port)" },
  host: { type: "string", help: "address to listen on (default 127.0.0.1: this machine only)" },
  ...modelFlags,
  help: { type: "boolean", aliases: ["-h"], help: "show usage" },
};

export const SERVE_USAGE = `usage: llamesh serve <model-dir> [--port N] [--host ADDR] [--threads N] [--max-seq-len L]
              [--workers host:port[@share],... [--local-share N] [--secret-file FILE] ...]
  Serves the model over HTTP in OpenAI's shape: POST /v1/completions, POST /v1/chat/completions
  (with "stream": true for server-sent events), GET /v1/models, GET /health. One request at a
  time, in arrival order. Defaults: port 8080, host 127.0.0.1 (use --host 0.0.0.0 to serve the LAN).`;

export async function serveCommand(argv: readonly string[]): Promise<void> {
  const { positionals, flags } = parseArgs(argv, serveFlags, "llamesh serve");
  if (flags["help"]) {
    process.stdout.write(SERVE_USAGE + "\n");
    return;
  }
  if (positionals.length !== 1) {
    throw new LlameshError(`llamesh serve: expected one model folder, got ${positionals.length === 0 ? "none" : positionals.join(" ")}\n${SERVE_USAGE}`);
  }
  const dir = positionals[0]!;
  const settings = modelSettings(flags, "llamesh serve");
  const log = (line: string): void => void process.stderr.write(line + "\n");
  const { model, backend, close } = await loadModel(dir, settings, log);
  for (const l of modelReport(model, backend.name)) log(l);
  const server = createApiServer({ model, modelName: path.basename(path.resolve(dir)), log });
  const host = (flags["host"] as string | undefined) ?? "127.0.0.1";
  const port = (flags["port"] as number | undefined) ?? 8080;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) => reject(new LlameshError(`llamesh serve: cannot listen on ${host}:${port} (${e.code ?? e.message})`)));
    server.listen(port, host, () => resolve());
  }).catch(async (e: unknown) => {
    await close();
    throw e;
  });
  const addr = server.address() as { address: string; port: number };
  log(`Serving ${path.basename(path.resolve(dir))} on http://${addr.address}:${addr.port}/v1 (POST /v1/completions, /v1/chat/completions; GET /v1/models, /health)`);
  process.stdout.write(`listening ${addr.address}:${addr.port}\n`);
  const stop = (): void => {
    server.close();
    void close().then(() => process.exit(0));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  await new Promise<never>(() => undefined);
}
