/**
 * Shared by the server tests: a served model on a free loopback port with its log captured,
 * requests (plain, and streamed with each event's arrival time), the reference text of the
 * generation loop, and the checks every setup (one machine, a cluster) must pass.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import type { AddressInfo } from "node:net";
import type * as http from "node:http";
import type { LoadedModel } from "../../src/engine/open.js";
import { generate } from "../../src/engine/generate.js";
import { Sampler } from "../../src/engine/sampler.js";
import { TextStream } from "../../src/engine/text-stream.js";
import { createApiServer, type ServerOptions } from "../../src/server/http.js";
import { STORIES, tempDir } from "../helpers/models.js";

export interface Served {
  base: string;
  server: http.Server;
  /** The server's log lines so far. */
  logs: string[];
  close(): Promise<void>;
}

export async function serve(model: LoadedModel, opts: Partial<ServerOptions> = {}): Promise<Served> {
  const logs: string[] = [];
  const server = createApiServer({ model, modelName: "stories", log: (l) => void logs.push(l), ...opts });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    logs,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

/** A copy of stories260K whose tokenizer_config.json has a chat template: the messages' contents, in order. */
export function chatDir(): string {
  const dir = tempDir("llamesh-serve-");
  for (const f of fs.readdirSync(STORIES)) fs.copyFileSync(path.join(STORIES, f), path.join(dir, f));
  const cfgFile = path.join(dir, "tokenizer_config.json");
  const cfg = JSON.parse(fs.readFileSync(cfgFile, "utf8")) as Record<string, unknown>;
  cfg["chat_template"] = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}";
  fs.writeFileSync(cfgFile, JSON.stringify(cfg));
  return dir;
}

/** Greedy (or seeded) tokens and text of the generation loop alone on `model` (slot 0). */
export async function reference(model: LoadedModel, ids: readonly number[], n: number, temperature = 0, seed = 1): Promise<{ text: string; tokens: number[] }> {
  const s = new TextStream(model.tokenizer);
  let text = "";
  const r = await generate(model, ids, { maxNewTokens: n, sampler: new Sampler({ temperature, topP: 1, topK: 0, seed }), eosIds: model.tokenizer.eosIds, onToken: (t) => (text += s.push(t)) });
  return { text: text + s.end(), tokens: r.tokens };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = Record<string, any>;

export async function post(base: string, url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: Json; headers: Headers }> {
  const r = await fetch(base + url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) });
  return { status: r.status, json: (await r.json()) as Json, headers: r.headers };
}

export interface TimedStream {
  /** Parsed data events (without [DONE]), each with its arrival time (performance.now()). */
  events: { at: number; data: Json }[];
  sentAt: number;
  doneAt: number;
  /** Reads that brought data: events written apart arrive apart. */
  reads: number;
}

/** POST with stream: true, reading events as they arrive; `stopAfter` events: abort there (the client goes away). */
export async function streamTimed(base: string, url: string, body: Json, stopAfter = Infinity): Promise<TimedStream> {
  const ac = new AbortController();
  const sentAt = performance.now();
  const r = await fetch(base + url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, stream: true }), signal: ac.signal });
  assert.equal(r.status, 200, await (r.status === 200 ? "" : r.text()));
  assert.match(r.headers.get("content-type") ?? "", /text\/event-stream/);
  const reader = r.body!.getReader();
  const dec = new TextDecoder();
  const events: TimedStream["events"] = [];
  let buf = "";
  let reads = 0;
  let done = false;
  while (!done) {
    const { value, done: end } = await reader.read();
    if (end) break;
    reads++;
    buf += dec.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (ev === "data: [DONE]") done = true;
      else if (ev.startsWith("data: ")) events.push({ at: performance.now(), data: JSON.parse(ev.slice(6)) as Json });
    }
    if (events.length >= stopAfter) {
      ac.abort();
      break;
    }
  }
  return { events, sentAt, doneAt: performance.now(), reads };
}

/** The text of a stream's events (completions or chat chunks). */
export const streamText = (s: TimedStream): string => s.events.map((e) => e.data["choices"]?.[0]?.text ?? e.data["choices"]?.[0]?.delta?.content ?? "").join("");

/** Wait until `cond` holds (polling), or fail naming `what`. */
export async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > ms) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const PROMPT = "Once upon a time";
/** Prompts of other lengths for the concurrent requests. */
export const OTHERS = ["The little dog ran", "Lily and Ben went to the park to play with a big red ball", "One day", "Tom had a toy car", "The sun was hot and the sky", "A bird sat on", "Mom said"];

/**
 * The acceptance checks on a served model with 8 slots (one machine or a cluster): a 200-token
 * stream's first event comes long before its end; /health answers within 100 ms while 8 requests
 * run; a dropped stream stops within 2 tokens; a request's greedy text alone equals its text
 * among 7 concurrent others and the generation loop's.
 */
export async function checkServing(model: LoadedModel, refModel: LoadedModel, what: string): Promise<void> {
  const s = await serve(model);
  try {
    await checkStreams(s, what);
    await checkHealthUnderLoad(s, what);
    await checkDropped(s, what);
    await checkAloneAndCrowded(s, refModel, what);
  } finally {
    await s.close();
  }
}

async function checkStreams(s: Served, what: string): Promise<void> {
  const t = await streamTimed(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 200, temperature: 0.8, seed: 3, stream_options: { include_usage: true } });
  const usage = t.events.at(-1)!.data["usage"] as Json;
  assert.equal(usage["completion_tokens"], 200, `${what}: 200 tokens made`);
  const first = t.events[0]!.at - t.sentAt;
  const total = t.doneAt - t.sentAt;
  assert.ok(first < total / 2, `${what}: first event after ${first.toFixed(1)} ms of ${total.toFixed(1)} ms`);
  assert.ok(t.reads >= 20, `${what}: the events came in ${t.reads} reads, expected one per token or so`);
}

async function checkHealthUnderLoad(s: Served, what: string): Promise<void> {
  const running = [PROMPT, ...OTHERS].map((p, i) => streamTimed(s.base, "/v1/completions", { prompt: p, max_tokens: 60, temperature: 0.8, seed: i }));
  let worst = 0;
  let busySeen = 0;
  for (let k = 0; k < 10; k++) {
    const t0 = performance.now();
    const h = (await (await fetch(`${s.base}/health`)).json()) as Json;
    worst = Math.max(worst, performance.now() - t0);
    busySeen = Math.max(busySeen, h["slots_busy"] as number);
    await new Promise((r) => setTimeout(r, 10));
  }
  const done = await Promise.all(running);
  assert.equal(busySeen, 8, `${what}: every slot was busy during the probes`);
  assert.ok(worst < 100, `${what}: /health took up to ${worst.toFixed(1)} ms while 8 requests ran`);
  for (const d of done) assert.ok(d.events.length > 30);
}

async function checkDropped(s: Served, what: string): Promise<void> {
  s.logs.length = 0;
  await streamTimed(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 200, temperature: 0 }, 5);
  await until(() => s.logs.some((l) => /client gone/.test(l)), "the dropped request's log line");
  const m = /(\d+) generated \(cancelled\).*client gone after (\d+) tokens/.exec(s.logs.join("\n"));
  assert.ok(m, `${what}: ${s.logs.join("\n")}`);
  assert.ok(Number(m[1]) - Number(m[2]) <= 2, `${what}: ${m[1]} tokens made, the client left after ${m[2]}`);
  assert.ok(Number(m[1]) < 50, `${what}: generation stopped early (${m[1]} tokens)`);
}

async function checkAloneAndCrowded(s: Served, refModel: LoadedModel, what: string): Promise<void> {
  const body = { prompt: PROMPT, max_tokens: 40, temperature: 0 };
  const alone = await post(s.base, "/v1/completions", body);
  const crowd = await Promise.all([
    post(s.base, "/v1/completions", body),
    ...OTHERS.map(async (p, i) => {
      await new Promise((r) => setTimeout(r, i * 3)); // joining at different steps
      return post(s.base, "/v1/completions", { prompt: p, max_tokens: 10 + 4 * i, temperature: 0.7, seed: i });
    }),
  ]);
  const want = await reference(refModel, refModel.tokenizer.encode(PROMPT, true), 40);
  assert.equal(alone.json["choices"][0].text, want.text, `${what}: alone`);
  assert.equal(crowd[0]!.json["choices"][0].text, want.text, `${what}: among 7 others`);
  for (const [i, c] of crowd.slice(1).entries()) {
    const ref = await reference(refModel, refModel.tokenizer.encode(OTHERS[i]!, true), 10 + 4 * i, 0.7, i);
    assert.equal(c.json["choices"][0].text, ref.text, `${what}: the others' seeded text too (${i})`);
  }
}
