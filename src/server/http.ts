/**
 * An HTTP API in the shape of OpenAI's, so that existing clients and tools can use a llamesh model
 * (on one machine or a cluster): `POST /v1/completions`, `POST /v1/chat/completions` (the model's
 * chat template), both with `"stream": true` as server-sent events, `GET /v1/models`, `GET
 * /health`. One model, one KV cache: requests are served one at a time, in arrival order.
 *
 * Parameters: prompt / messages, max_tokens (default 256), temperature (default 1), top_p
 * (default 1), top_k (an extension, default 0 = off), seed (default: the clock), stop (a string or
 * up to 4). A bad request gets 400 with {error: {message, type: "invalid_request_error"}} naming
 * the field and what was expected; a generation stops early when the client goes away.
 */
import * as http from "node:http";
import * as crypto from "node:crypto";
import { generate, type StopReason } from "../engine/generate.js";
import type { LoadedModel } from "../engine/open.js";
import { Sampler } from "../engine/sampler.js";
import { TextStream } from "../engine/text-stream.js";
import { applyChatTemplate, type ChatMessage } from "../model/chat.js";
import { LlameshError } from "../core/errors.js";

export interface ServerOptions {
  model: LoadedModel;
  /** The model's name in responses and /v1/models (default: the folder's name). */
  modelName: string;
  log?: (line: string) => void;
  /** Largest request body accepted, in bytes (default 1 MB). */
  maxBodyBytes?: number;
}

/** A request that cannot be served as sent: 400 with this message. */
class BadRequest extends Error {
  constructor(message: string, readonly status = 400) {
    super(message);
  }
}

interface Params {
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  stop: string[];
  stream: boolean;
}

function num(body: Record<string, unknown>, key: string, def: number, min: number, max: number, int = false): number {
  const v = body[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max || (int && !Number.isInteger(v))) {
    throw new BadRequest(`${key}: expected ${int ? "an integer" : "a number"} between ${min} and ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function params(body: Record<string, unknown>): Params {
  let stop: string[] = [];
  const s = body["stop"];
  if (typeof s === "string") stop = [s];
  else if (Array.isArray(s) && s.length <= 4 && s.every((x) => typeof x === "string")) stop = s as string[];
  else if (s !== undefined && s !== null) throw new BadRequest(`stop: expected a string or a list of up to 4 strings, got ${JSON.stringify(s)}`);
  stop = stop.filter((x) => x.length > 0);
  const stream = body["stream"];
  if (stream !== undefined && typeof stream !== "boolean") throw new BadRequest(`stream: expected true or false, got ${JSON.stringify(stream)}`);
  return {
    maxTokens: num(body, "max_tokens", 256, 0, 1_000_000, true),
    temperature: num(body, "temperature", 1, 0, 100),
    topP: num(body, "top_p", 1, 0, 1),
    topK: num(body, "top_k", 0, 0, 1_000_000, true),
    seed: num(body, "seed", Date.now() % 2147483647, 0, Number.MAX_SAFE_INTEGER, true),
    stop,
    stream: stream === true,
  };
}

function messagesOf(body: Record<string, unknown>): ChatMessage[] {
  const m = body["messages"];
  if (!Array.isArray(m) || m.length === 0) throw new BadRequest("messages: expected a non-empty list of {role, content}");
  return m.map((x, i) => {
    const o = x as Record<string, unknown> | null;
    if (!o || typeof o !== "object" || typeof o["content"] !== "string" || !["system", "user", "assistant"].includes(o["role"] as string)) {
      throw new BadRequest(`messages[${i}]: expected {role: "system" | "user" | "assistant", content: string}`);
    }
    return { role: o["role"] as ChatMessage["role"], content: o["content"] as string };
  });
}

async function readJson(req: http.IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit) throw new BadRequest(`request body over ${limit} bytes`, 413);
    chunks.push(c as Buffer);
  }
  let v: unknown;
  try {
    v = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new BadRequest("the request body is not valid JSON");
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new BadRequest("the request body must be a JSON object");
  return v as Record<string, unknown>;
}

/**
 * Text of a generation, with stop strings: `push` returns what can be sent now, holding back an
 * end that might still become a stop string; `stopped` says a stop string was met (the text
 * before it is all that is sent).
 */
class StopFilter {
  private pending = "";
  private done = false;
  private readonly hold: number;

  constructor(private readonly stops: string[]) {
    this.hold = Math.max(0, ...stops.map((s) => s.length - 1));
  }

  get stopped(): boolean {
    return this.done;
  }

  push(text: string): string {
    if (this.done) return "";
    this.pending += text;
    let cut = -1;
    for (const s of this.stops) {
      const i = this.pending.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.done = true;
      const out = this.pending.slice(0, cut);
      this.pending = "";
      return out;
    }
    const keep = Math.min(this.hold, this.pending.length);
    const out = this.pending.slice(0, this.pending.length - keep);
    this.pending = this.pending.slice(this.pending.length - keep);
    return out;
  }

  end(): string {
    const out = this.done ? "" : this.pending;
    this.pending = "";
    return out;
  }
}

function finishReason(stop: StopReason, stopString: boolean): "stop" | "length" {
  return stop === "eos" || stopString ? "stop" : "length";
}

export function createApiServer(opts: ServerOptions): http.Server {
  const { model, modelName } = opts;
  const limit = opts.maxBodyBytes ?? 1 << 20;
  let queue: Promise<void> = Promise.resolve();
  let served = 0;

  /** Run one generation after the ones before it. */
  const serialized = <T>(work: () => Promise<T>): Promise<T> => {
    const run = queue.then(work);
    queue = run.then(() => undefined, () => undefined);
    return run;
  };

  const complete = async (req: http.IncomingMessage, res: http.ServerResponse, chat: boolean): Promise<void> => {
    const body = await readJson(req, limit);
    const p = params(body);
    let ids: number[];
    if (chat) {
      let text: string;
      try {
        text = applyChatTemplate(model.dir, messagesOf(body));
      } catch (e) {
        if (e instanceof LlameshError) throw new BadRequest(`this model has no usable chat template: ${e.message}`);
        throw e;
      }
      ids = model.tokenizer.encode(text, false); // the template writes its own BOS
    } else {
      const prompt = body["prompt"];
      if (typeof prompt !== "string") throw new BadRequest("prompt: expected a string");
      ids = model.tokenizer.encode(prompt, true);
    }
    if (ids.length >= model.seqLen) throw new BadRequest(`the prompt is ${ids.length} tokens but the context holds ${model.seqLen}`);
    const id = `${chat ? "chatcmpl" : "cmpl"}-${crypto.randomBytes(12).toString("hex")}`;
    const created = Math.floor(Date.now() / 1000);
    const object = chat ? "chat.completion" : "text_completion";
    let gone = false;
    res.on("close", () => (gone = !res.writableFinished));
    const send = (delta: string, finish: string | null, first = false): void => {
      const choice = chat
        ? { index: 0, delta: first ? { role: "assistant", content: delta } : delta ? { content: delta } : {}, finish_reason: finish }
        : { index: 0, text: delta, finish_reason: finish };
      res.write(`data: ${JSON.stringify({ id, object: `${object}${chat ? ".chunk" : ""}`, created, model: modelName, choices: [choice] })}\n\n`);
    };
    await serialized(async () => {
      if (gone) return;
      const stream = new TextStream(model.tokenizer);
      const filter = new StopFilter(p.stop);
      let text = "";
      let first = true;
      if (p.stream) {
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
      }
      const emit = (t: string): void => {
        if (!t) return;
        text += t;
        if (p.stream && !gone) {
          send(t, null, first);
          first = false;
        }
      };
      const t0 = performance.now();
      const r = await generate(model, ids, {
        maxNewTokens: p.maxTokens,
        sampler: new Sampler({ temperature: p.temperature, topP: p.topP, topK: p.topK, seed: p.seed }),
        eosIds: model.tokenizer.eosIds,
        onToken: (tok) => emit(filter.push(stream.push(tok))),
        shouldStop: () => filter.stopped || gone,
      });
      emit(filter.push(stream.end()));
      emit(filter.end());
      const finish = finishReason(r.stop, filter.stopped);
      served++;
      opts.log?.(`${req.method} ${req.url}: ${ids.length} prompt tokens, ${r.tokens.length} generated (${finish}) in ${((performance.now() - t0) / 1000).toFixed(2)} s${gone ? ", client gone" : ""}`);
      if (gone) return;
      const usage = { prompt_tokens: ids.length, completion_tokens: r.tokens.length, total_tokens: ids.length + r.tokens.length };
      if (p.stream) {
        if (first) send("", null, true);
        send("", finish);
        res.end("data: [DONE]\n\n");
        return;
      }
      const choice = chat ? { index: 0, message: { role: "assistant", content: text }, finish_reason: finish } : { index: 0, text, finish_reason: finish };
      json(res, 200, { id, object, created, model: modelName, choices: [choice], usage });
    });
  };

  return http.createServer((req, res) => {
    const url = (req.url ?? "/").split("?")[0];
    const route = `${req.method} ${url}`;
    const handle = async (): Promise<void> => {
      switch (route) {
        case "GET /health":
          return json(res, 200, { status: "ok", served });
        case "GET /v1/models":
          return json(res, 200, { object: "list", data: [{ id: modelName, object: "model", owned_by: "llamesh" }] });
        case "POST /v1/completions":
          return complete(req, res, false);
        case "POST /v1/chat/completions":
          return complete(req, res, true);
        default:
          if (["/health", "/v1/models", "/v1/completions", "/v1/chat/completions"].includes(url!)) throw new BadRequest(`${req.method} is not allowed on ${url}`, 405);
          throw new BadRequest(`no such endpoint: ${req.method} ${url} (try POST /v1/completions, POST /v1/chat/completions, GET /v1/models)`, 404);
      }
    };
    handle().catch((e: unknown) => {
      const status = e instanceof BadRequest ? e.status : e instanceof LlameshError ? 400 : 500;
      const message = e instanceof Error ? e.message : String(e);
      if (status === 500) opts.log?.(`${route}: ${e instanceof Error ? (e.stack ?? message) : message}`);
      if (res.headersSent) {
        res.end(`data: ${JSON.stringify({ error: { message, type: "server_error" } })}\n\n`);
        return;
      }
      json(res, status, { error: { message, type: status === 500 ? "server_error" : "invalid_request_error" } });
    });
  });
}

function json(res: http.ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}
