/**
 * An HTTP API in the shape of OpenAI's, so that existing clients and tools can use a llamesh model
 * (on one machine or a cluster): `POST /v1/completions`, `POST /v1/chat/completions` (the model's
 * chat template), both with `"stream": true` as server-sent events, `GET /v1/models`, `GET
 * /health`, `GET /metrics` (Prometheus), and a chat page at `GET /`.
 *
 * Requests share the model's slots (scheduler.ts: continuous batching, prompt reuse); what waits
 * for a slot is queued up to a bound (503 with Retry-After beyond it). Parameters are those of
 * params.ts; a bad request gets 4xx with {error: {message, type}} naming the field.
 */
import * as http from "node:http";
import type { DistributedModel } from "../cluster/client.js";
import type { LoadedModel } from "../engine/open.js";
import { LlameshError } from "../core/errors.js";
import { apiKeyCheck } from "./auth.js";
import { CHAT_PAGE } from "./chat-page.js";
import { complete, type CompletionContext } from "./completion.js";
import { applyTimeouts, DEFAULT_LIMITS, HttpError, type Limits } from "./limits.js";
import { Metrics } from "./metrics.js";
import { Scheduler } from "./scheduler.js";
import { PromptEncoder } from "./tokenize.js";

export interface ServerOptions {
  /** Opened with the slots to serve at once (each its own KV region). */
  model: LoadedModel;
  /** The model's name in responses and /v1/models (default: the folder's name). */
  modelName: string;
  log?: (line: string) => void;
  /** Largest request body accepted, in bytes (default 1 MB). */
  maxBodyBytes?: number;
  /** Timeouts (limits.ts); defaults DEFAULT_LIMITS. */
  limits?: Partial<Omit<Limits, "maxBodyBytes">>;
  /** Requests waiting for a slot before new ones get 503 (default 32). */
  maxQueue?: number;
  /** Bearer key every API request must carry (null/undefined: none). */
  apiKey?: string | null;
}

const ROUTES = ["/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions"];

function isCluster(m: LoadedModel): m is DistributedModel {
  return typeof (m as Partial<DistributedModel>).health === "function";
}

export function createApiServer(opts: ServerOptions): http.Server {
  const { model, modelName } = opts;
  const limits: Limits = { ...DEFAULT_LIMITS, ...opts.limits, maxBodyBytes: opts.maxBodyBytes ?? DEFAULT_LIMITS.maxBodyBytes };
  const scheduler = new Scheduler(model, model.tokenizer.eosIds, { maxQueue: opts.maxQueue, log: opts.log });
  const encoder = new PromptEncoder(model.tokenizer, model.dir);
  const ctx: CompletionContext = { model, modelName, scheduler, encoder, maxBodyBytes: limits.maxBodyBytes, log: opts.log };
  const metrics = new Metrics();
  const authorize = apiKeyCheck(opts.apiKey ?? null);
  const cluster = isCluster(model) ? model : null;

  const health = (res: http.ServerResponse): void => {
    const s = scheduler.stats();
    const h = cluster?.health();
    const status = h ? h.state : "ok";
    json(res, status === "down" ? 503 : 200, { status, slots: s.slots, slots_busy: s.busy, queued: s.queued, ...(h ? { workers: h.workers } : {}) });
  };

  const route = async (req: http.IncomingMessage, res: http.ServerResponse, url: string): Promise<void> => {
    const key = `${req.method} ${url}`;
    if (key === "GET /health") return health(res);
    if (key === "GET /") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "content-length": Buffer.byteLength(CHAT_PAGE), "cache-control": "no-cache" });
      return void res.end(CHAT_PAGE);
    }
    if (!ROUTES.includes(url)) throw new HttpError(404, `no such endpoint: ${req.method} ${url} (try POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health, GET /metrics)`);
    authorize(req);
    switch (key) {
      case "GET /v1/models":
        return json(res, 200, { object: "list", data: [{ id: modelName, object: "model", created: 0, owned_by: "llamesh" }] });
      case "GET /metrics": {
        const body = metrics.render(scheduler.stats(), cluster ? { stats: cluster.clusterStats(), health: cluster.health() } : null);
        res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8", "content-length": Buffer.byteLength(body) });
        return void res.end(body);
      }
      case "POST /v1/completions":
        return complete(ctx, req, res, false);
      case "POST /v1/chat/completions":
        return complete(ctx, req, res, true);
      default:
        throw new HttpError(405, `${req.method} is not allowed on ${url}`);
    }
  };

  // timeouts are checked every second (Node's default: every 30 s)
  const server = http.createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
    const url = (req.url ?? "/").split("?")[0]!;
    res.on("finish", () => metrics.request(ROUTES.includes(url) ? url : "other", res.statusCode));
    route(req, res, url).catch((e: unknown) => fail(req, res, url, e, opts.log));
  });
  applyTimeouts(server, limits);
  server.on("close", () => void encoder.close());
  return server;
}

/** Answer an error: JSON with its status, or an error event when a stream has begun. */
function fail(req: http.IncomingMessage, res: http.ServerResponse, url: string, e: unknown, log?: (l: string) => void): void {
  const status = e instanceof HttpError ? e.status : e instanceof LlameshError ? 400 : 500;
  const message = e instanceof Error ? e.message : String(e);
  if (status >= 500 && !(e instanceof HttpError)) log?.(`${req.method} ${url}: ${e instanceof Error ? (e.stack ?? message) : message}`);
  const type = e instanceof HttpError ? e.type : status === 500 ? "server_error" : "invalid_request_error";
  if (res.destroyed) return;
  if (res.headersSent) {
    res.end(`data: ${JSON.stringify({ error: { message, type } })}\n\n`);
    return;
  }
  json(res, status, { error: { message, type } }, e instanceof HttpError ? e.headers : {});
}

function json(res: http.ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...headers });
  res.end(body);
}
