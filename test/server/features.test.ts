/**
 * What the server promises besides batching (stories260K with a chat template): a chat's second
 * turn reuses the first turn's KV cache (usage says how many tokens) and gives the text of an
 * uncached run; the queue limit (503 + Retry-After), the body limit (413), API keys (401, /health
 * and the page open); dropped queued requests never run; the official `openai` client streams 4
 * requests at once; stream usage; n and logprobs rejected by name; /metrics in Prometheus text;
 * a long prompt is tokenized off the event loop and gives the main thread's ids; a client that
 * never finishes its headers is cut off (408).
 */
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import OpenAI from "openai";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel, type LoadedModel } from "../../src/engine/open.js";
import { applyChatTemplate } from "../../src/model/chat.js";
import { PromptEncoder, INLINE_CHARS } from "../../src/server/tokenize.js";
import { STORIES, skipUnless } from "../helpers/models.js";
import { chatDir, post, PROMPT, reference, serve, streamTimed, streamText, until, type Json } from "./helpers.js";

const skip = skipUnless(STORIES);
const backend = await createBackend({ threads: 1 });
let dir = "";
let model: LoadedModel;
let ref: LoadedModel;
before(async () => {
  if (skip) return;
  dir = chatDir();
  model = await openModel(dir, { backend, maxSeqLen: 256, slots: 4 });
  ref = await openModel(dir, { backend, maxSeqLen: 256 });
});
after(() => backend.close());

const common = (a: readonly number[], b: readonly number[]): number => {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
};

test("a chat's second turn reports the cached prompt tokens and gives the uncached text", { skip }, async () => {
  const s = await serve(model);
  try {
    const turn1 = [{ role: "user" as const, content: "Once upon a time, there was a little girl named Lily." }];
    const a1 = await post(s.base, "/v1/chat/completions", { messages: turn1, max_tokens: 30, temperature: 0 });
    assert.equal(a1.json["choices"][0].finish_reason, "length");
    const ids1 = ref.tokenizer.encode(applyChatTemplate(dir, turn1), false);
    const gen1 = await reference(ref, ids1, 30);
    assert.equal(a1.json["choices"][0].message.content, gen1.text);
    const turn2 = [...turn1, { role: "assistant" as const, content: gen1.text }, { role: "user" as const, content: " She liked to play outside." }];
    const ids2 = ref.tokenizer.encode(applyChatTemplate(dir, turn2), false);
    const a2 = await post(s.base, "/v1/chat/completions", { messages: turn2, max_tokens: 30, temperature: 0 });
    // the slot holds turn 1's prompt and every generated token but the last (never fed back)
    const held = [...ids1, ...gen1.tokens.slice(0, -1)];
    const cached = a2.json["usage"].prompt_tokens_details.cached_tokens as number;
    assert.equal(cached, common(held, ids2));
    assert.ok(cached >= ids1.length - 1, `cached ${cached} of ${ids2.length}`);
    assert.equal(a2.json["usage"].prompt_tokens, ids2.length);
    assert.equal(a2.json["choices"][0].message.content, (await reference(ref, ids2, 30)).text, "the same text as without the cache");
  } finally {
    await s.close();
  }
});

test("queue limit: 503 with Retry-After when every slot is busy and the queue is full; a dropped queued request never runs", { skip }, async () => {
  const s = await serve(model, { maxQueue: 1 });
  try {
    // 4 slots busy, 1 queued, then one too many
    const running = [0, 1, 2, 3].map((i) => streamTimed(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 150, temperature: 0.8, seed: i }));
    await new Promise((r) => setTimeout(r, 30));
    const ac = new AbortController();
    const queued = await fetch(`${s.base}/v1/completions`, { method: "POST", body: JSON.stringify({ prompt: "One day", max_tokens: 50, stream: true }), signal: ac.signal });
    assert.equal(queued.status, 200, "a streamed request gets its headers while it waits");
    const full = await post(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 5 });
    assert.equal(full.status, 503);
    assert.equal(full.json["error"].type, "unavailable_error");
    assert.match(full.json["error"].message, /queue is full/);
    assert.match(full.headers.get("retry-after") ?? "", /^[1-9]\d*$/);
    ac.abort();
    await until(() => s.logs.some((l) => /cancelled/.test(l)), "the dropped request's log line");
    assert.match(s.logs.join("\n"), /: 3 prompt tokens \(0 cached\), 0 generated \(cancelled\).*client gone after 0 tokens/);
    for (const r of await Promise.all(running)) assert.equal(r.events.length, 151, "150 tokens and the finish event");
    const again = await post(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 5, temperature: 0 });
    assert.equal(again.status, 200, "served again once the queue emptied");
  } finally {
    await s.close();
  }
});

test("body limit: 413 from Content-Length or while reading a chunked body; the server keeps serving", { skip }, async () => {
  const s = await serve(model, { maxBodyBytes: 10_000 });
  try {
    const big = JSON.stringify({ prompt: "x".repeat(20_000) });
    const r = await post(s.base, "/v1/completions", big);
    assert.equal(r.status, 413);
    assert.match(r.json["error"].message, /over the limit of 10000 bytes/);
    // no Content-Length: a stream of chunks
    const chunks = new ReadableStream({ start(c) { for (let i = 0; i < 4; i++) c.enqueue(new TextEncoder().encode(big.slice(i * 5000, (i + 1) * 5000))); c.close(); } });
    const rc = await fetch(`${s.base}/v1/completions`, { method: "POST", body: chunks, duplex: "half" } as RequestInit);
    assert.equal(rc.status, 413);
    assert.equal((await post(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 3 })).status, 200);
  } finally {
    await s.close();
  }
});

test("header timeout: a client that never finishes its headers is cut off", { skip }, async () => {
  const s = await serve(model, { limits: { headersTimeoutMs: 300 } });
  try {
    const sock = net.connect(Number(new URL(s.base).port), "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    sock.write("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"); // and nothing more
    const t0 = performance.now();
    let reply = "";
    sock.on("data", (d) => (reply += d.toString()));
    await new Promise((r) => sock.once("close", r));
    const ms = performance.now() - t0;
    assert.ok(ms < 2500, `closed after ${ms.toFixed(0)} ms`);
    assert.match(reply, /^HTTP\/1\.1 408/);
  } finally {
    await s.close();
  }
});

test("API key: 401 without it or with a wrong one; /health and the chat page open", { skip }, async () => {
  const s = await serve(model, { apiKey: "s3cret" });
  try {
    const none = await post(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 3 });
    assert.equal(none.status, 401);
    assert.equal(none.json["error"].type, "authentication_error");
    assert.match(none.json["error"].message, /missing API key/);
    assert.equal(none.headers.get("www-authenticate"), "Bearer");
    const wrong = await post(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 3 }, { authorization: "Bearer s3crex" });
    assert.equal(wrong.status, 401);
    assert.match(wrong.json["error"].message, /invalid API key/);
    assert.equal((await fetch(`${s.base}/v1/models`)).status, 401);
    assert.equal((await fetch(`${s.base}/metrics`)).status, 401);
    const ok = await post(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 3 }, { authorization: "Bearer s3cret" });
    assert.equal(ok.status, 200);
    assert.equal((await fetch(`${s.base}/health`)).status, 200);
    const page = await fetch(`${s.base}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /text\/html/);
    assert.match(await page.text(), /v1\/chat\/completions/);
  } finally {
    await s.close();
  }
});

test("the official openai client streams 4 concurrent requests; each gives the generation loop's text", { skip }, async () => {
  const s = await serve(model);
  try {
    const client = new OpenAI({ baseURL: `${s.base}/v1`, apiKey: "unused", maxRetries: 0 });
    const prompts = ["Once upon a time", "The little dog", "Lily and Ben", "One day, a"];
    const texts = await Promise.all(prompts.map(async (content) => {
      const stream = await client.chat.completions.create({ model: "stories", messages: [{ role: "user", content }], max_tokens: 40, temperature: 0, stream: true, stream_options: { include_usage: true } });
      let text = "";
      let chunks = 0;
      let usage: Json | null = null;
      for await (const c of stream) {
        chunks++;
        text += c.choices[0]?.delta?.content ?? "";
        if (c.usage) usage = c.usage as unknown as Json;
      }
      assert.ok(chunks > 10, "streamed in chunks");
      assert.equal(usage?.["completion_tokens"], 40);
      return text;
    }));
    for (const [i, content] of prompts.entries()) {
      assert.equal(texts[i], (await reference(ref, ref.tokenizer.encode(applyChatTemplate(dir, [{ role: "user", content }]), false), 40)).text);
    }
    const listed = await client.models.list();
    assert.deepEqual(listed.data.map((m) => m.id), ["stories"]);
  } finally {
    await s.close();
  }
});

test("stream usage with stream_options.include_usage; n > 1 and logprobs rejected by name", { skip }, async () => {
  const s = await serve(model);
  try {
    const t = await streamTimed(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 12, temperature: 0, stream_options: { include_usage: true } });
    const last = t.events.at(-1)!.data;
    assert.deepEqual(last["choices"], []);
    assert.deepEqual(last["usage"], { prompt_tokens: 5, completion_tokens: 12, total_tokens: 17, prompt_tokens_details: { cached_tokens: 0 } });
    assert.equal(streamText(t), (await reference(ref, ref.tokenizer.encode(PROMPT, true), 12)).text);
    const plain = await streamTimed(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 3, temperature: 0 });
    assert.ok(plain.events.every((e) => e.data["usage"] === undefined), "no usage unless asked");
    const bad = async (body: Json, re: RegExp, url = "/v1/completions"): Promise<void> => {
      const r = await post(s.base, url, body);
      assert.equal(r.status, 400, JSON.stringify(r.json));
      assert.match(r.json["error"].message, re);
    };
    await bad({ prompt: PROMPT, n: 2 }, /^n: only 1 choice per request is supported, got 2/);
    await bad({ prompt: PROMPT, logprobs: 3 }, /^logprobs: not supported by llamesh, got 3/);
    await bad({ messages: [{ role: "user", content: "x" }], logprobs: true }, /^logprobs: not supported/, "/v1/chat/completions");
    await bad({ messages: [{ role: "user", content: "x" }], top_logprobs: 2 }, /^top_logprobs: not supported/, "/v1/chat/completions");
    await bad({ prompt: PROMPT, presence_penalty: 0.5 }, /^presence_penalty: not supported/);
    await bad({ prompt: PROMPT, stream_options: { include_usage: true } }, /stream_options: only allowed with stream: true/);
    // the defaults are accepted
    assert.equal((await post(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 2, n: 1, logprobs: null, presence_penalty: 0 })).status, 200);
    // max_tokens is capped by the context left
    const capped = await post(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 100_000, temperature: 0.9, seed: 5, top_k: 1 });
    assert.ok(capped.json["usage"].completion_tokens <= 256 - 5);
  } finally {
    await s.close();
  }
});

test("/metrics: Prometheus text with requests by status, tokens, queue and slots", { skip }, async () => {
  const s = await serve(model);
  try {
    await post(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 7, temperature: 0 });
    await post(s.base, "/v1/completions", { prompt: PROMPT, max_tokens: 7, temperature: 0 });
    await post(s.base, "/v1/completions", { prompt: 1 });
    const r = await fetch(`${s.base}/metrics`);
    assert.match(r.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const text = await r.text();
    const value = (line: string): number => {
      const m = new RegExp(`^${line.replace(/[{}"/]/g, "\\$&")} (\\S+)$`, "m").exec(text);
      assert.ok(m, `${line} in\n${text}`);
      return Number(m[1]);
    };
    assert.equal(value('llamesh_requests_total{endpoint="/v1/completions",status="200"}'), 2);
    assert.equal(value('llamesh_requests_total{endpoint="/v1/completions",status="400"}'), 1);
    assert.equal(value("llamesh_completion_tokens_total"), 14);
    assert.equal(value("llamesh_prompt_tokens_total"), 10);
    assert.equal(value("llamesh_prompt_tokens_cached_total"), 4, "the second request found 4 of its 5 tokens");
    assert.equal(value("llamesh_slots"), 4);
    assert.equal(value("llamesh_slots_busy"), 0);
    assert.equal(value("llamesh_queue_length"), 0);
    assert.ok(value("llamesh_tokens_per_second") > 0);
    // every sample line belongs to a family declared with HELP and TYPE
    for (const l of text.trim().split("\n").filter((x) => !x.startsWith("#"))) {
      const name = /^[a-z_]+/.exec(l)![0];
      assert.match(text, new RegExp(`# TYPE ${name} (counter|gauge)`));
    }
  } finally {
    await s.close();
  }
});

test("a long prompt is tokenized in a worker thread: the main thread's ids, and /health answers meanwhile", { skip }, async () => {
  const text = "Once upon a time, there was a little girl named Lily. She liked to play in the park with her dog. ".repeat(600);
  assert.ok(text.length > INLINE_CHARS);
  const enc = new PromptEncoder(model.tokenizer, model.dir);
  try {
    const t0 = performance.now();
    const ids = enc.encode(text, true);
    let probes = 0;
    let done = false;
    void ids.then(() => (done = true));
    while (!done) {
      await new Promise((r) => setTimeout(r, 5));
      probes++;
    }
    assert.deepEqual(await ids, model.tokenizer.encode(text, true));
    assert.ok(probes >= 3, `the event loop ran ${probes} times during ${(performance.now() - t0).toFixed(0)} ms of tokenizing`);
  } finally {
    await enc.close();
  }
  const s = await serve(model);
  try {
    const r = await post(s.base, "/v1/completions", { prompt: text, max_tokens: 3 });
    assert.equal(r.status, 400);
    assert.match(r.json["error"].message, /the prompt is \d+ tokens but the context holds 256/);
  } finally {
    await s.close();
  }
});
