/**
 * The OpenAI-shaped HTTP API over stories260K (a copy with a minimal chat template): greedy
 * completions equal the generation loop's text, streamed or not; stop strings cut the text; chat
 * goes through the template; bad requests get 400/404/405 naming the problem; concurrent
 * requests are served in turn; a client that goes away does not block the next one.
 */
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import type { AddressInfo } from "node:net";
import type * as http from "node:http";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel, type LoadedModel } from "../../src/engine/open.js";
import { generate } from "../../src/engine/generate.js";
import { Sampler } from "../../src/engine/sampler.js";
import { TextStream } from "../../src/engine/text-stream.js";
import { applyChatTemplate } from "../../src/model/chat.js";
import { createApiServer } from "../../src/server/http.js";
import { STORIES, skipUnless, tempDir } from "../helpers/models.js";
import { runCli } from "../helpers/cli.js";

const skip = skipUnless(STORIES);
const backend = await createBackend({ threads: 1 });
let model: LoadedModel;
/** The generation loop's own model (the served one's slots belong to the server). */
let refModel: LoadedModel;
let server: http.Server;
let base = "";
let dir = "";

before(async () => {
  if (skip) return;
  // a copy of stories260K whose tokenizer_config.json has a chat template: the messages' contents
  dir = tempDir("llamesh-serve-");
  for (const f of fs.readdirSync(STORIES)) fs.copyFileSync(path.join(STORIES, f), path.join(dir, f));
  const cfgFile = path.join(dir, "tokenizer_config.json");
  const cfg = JSON.parse(fs.readFileSync(cfgFile, "utf8")) as Record<string, unknown>;
  cfg["chat_template"] = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}";
  fs.writeFileSync(cfgFile, JSON.stringify(cfg));
  model = await openModel(dir, { backend, maxSeqLen: 256, slots: 4 });
  refModel = await openModel(dir, { backend, maxSeqLen: 256 });
  server = createApiServer({ model, modelName: "stories" });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  server?.closeAllConnections();
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  await backend.close();
});

/** The text the generation loop gives for these ids and sampling. */
async function expectedText(ids: number[], n: number, temperature = 0, seed = 1): Promise<string> {
  const s = new TextStream(model.tokenizer);
  let text = "";
  await generate(refModel, ids, { maxNewTokens: n, sampler: new Sampler({ temperature, topP: 1, topK: 0, seed }), eosIds: model.tokenizer.eosIds, onToken: (t) => (text += s.push(t)) });
  return text + s.end();
}

async function post(url: string, body: unknown): Promise<{ status: number; json: Record<string, any> }> {
  const r = await fetch(base + url, { method: "POST", headers: { "content-type": "application/json" }, body: typeof body === "string" ? body : JSON.stringify(body) });
  return { status: r.status, json: (await r.json()) as Record<string, any> };
}

/** POST with stream: true; the data events, parsed, up to [DONE]. */
async function postStream(url: string, body: Record<string, unknown>): Promise<Record<string, any>[]> {
  const r = await fetch(base + url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, stream: true }) });
  assert.equal(r.status, 200);
  assert.match(r.headers.get("content-type") ?? "", /text\/event-stream/);
  const lines = (await r.text()).split("\n\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
  assert.equal(lines.at(-1), "[DONE]");
  return lines.slice(0, -1).map((l) => JSON.parse(l) as Record<string, any>);
}

const prompt = "Once upon a time";

test("completions: greedy text equals the generation loop's, streamed or not; usage and finish_reason", { skip }, async () => {
  const want = await expectedText(model.tokenizer.encode(prompt, true), 40);
  const r = await post("/v1/completions", { prompt, max_tokens: 40, temperature: 0 });
  assert.equal(r.status, 200);
  assert.equal(r.json["object"], "text_completion");
  assert.equal(r.json["model"], "stories");
  assert.equal(r.json["choices"][0].text, want);
  assert.equal(r.json["choices"][0].finish_reason, "length");
  assert.deepEqual(r.json["usage"], { prompt_tokens: 5, completion_tokens: 40, total_tokens: 45, prompt_tokens_details: { cached_tokens: 0 } });
  const events = await postStream("/v1/completions", { prompt, max_tokens: 40, temperature: 0 });
  assert.equal(events.map((e) => e["choices"][0].text).join(""), want);
  assert.equal(events.at(-1)!["choices"][0].finish_reason, "length");
  assert.ok(events.length > 10, "streamed token by token");
});

test("stop strings cut the text before them, streamed or not (finish_reason stop)", { skip }, async () => {
  const want = await expectedText(model.tokenizer.encode(prompt, true), 60);
  const cut = want.indexOf("Lily");
  assert.ok(cut > 0, want);
  const r = await post("/v1/completions", { prompt, max_tokens: 60, temperature: 0, stop: ["Lily", "never appears"] });
  assert.equal(r.json["choices"][0].text, want.slice(0, cut));
  assert.equal(r.json["choices"][0].finish_reason, "stop");
  assert.ok(r.json["usage"].completion_tokens < 60);
  const events = await postStream("/v1/completions", { prompt, max_tokens: 60, temperature: 0, stop: "Lily" });
  assert.equal(events.map((e) => e["choices"][0].text).join(""), want.slice(0, cut));
});

test("chat completions go through the model's chat template", { skip }, async () => {
  const messages = [{ role: "user" as const, content: prompt }];
  const want = await expectedText(model.tokenizer.encode(applyChatTemplate(dir, messages), false), 30);
  const r = await post("/v1/chat/completions", { messages, max_tokens: 30, temperature: 0 });
  assert.equal(r.status, 200);
  assert.equal(r.json["object"], "chat.completion");
  assert.deepEqual(r.json["choices"][0].message, { role: "assistant", content: want });
  const events = await postStream("/v1/chat/completions", { messages, max_tokens: 30, temperature: 0 });
  assert.equal(events[0]!["choices"][0].delta.role, "assistant");
  assert.equal(events.map((e) => e["choices"][0].delta.content ?? "").join(""), want);
  assert.equal(events[0]!["object"], "chat.completion.chunk");
});

test("bad requests: 400 naming the field, 404, 405; a model without a chat template", { skip }, async () => {
  const bad = async (body: unknown, re: RegExp, url = "/v1/completions"): Promise<void> => {
    const r = await post(url, body);
    assert.equal(r.status, 400, JSON.stringify(r.json));
    assert.equal(r.json["error"].type, "invalid_request_error");
    assert.match(r.json["error"].message, re);
  };
  await bad("{not json", /not valid JSON/);
  await bad({ prompt: 3 }, /prompt: expected a string/);
  await bad({ prompt, temperature: -1 }, /temperature: expected a number between 0 and 100, got -1/);
  await bad({ prompt, max_tokens: 1.5 }, /max_tokens: expected an integer/);
  await bad({ prompt, stop: [1] }, /stop: expected a string or a list of up to 4 strings/);
  await bad({ messages: [] }, /messages: expected a non-empty list/, "/v1/chat/completions");
  await bad({ messages: [{ role: "robot", content: "x" }] }, /messages\[0\]/, "/v1/chat/completions");
  const nf = await fetch(base + "/v1/nothing");
  assert.equal(nf.status, 404);
  assert.match(((await nf.json()) as { error: { message: string } }).error.message, /no such endpoint: GET \/v1\/nothing/);
  assert.equal((await fetch(base + "/v1/completions")).status, 405);
  const models = (await (await fetch(base + "/v1/models")).json()) as { data: { id: string }[] };
  assert.deepEqual(models.data.map((m) => m.id), ["stories"]);
  // the original stories260K has no chat template
  const plain = createApiServer({ model: await openModel(STORIES, { backend, maxSeqLen: 64 }), modelName: "plain" });
  await new Promise<void>((r) => plain.listen(0, "127.0.0.1", () => r()));
  const r = await fetch(`http://127.0.0.1:${(plain.address() as AddressInfo).port}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ messages: [{ role: "user", content: "x" }] }) });
  assert.equal(r.status, 400);
  assert.match(((await r.json()) as { error: { message: string } }).error.message, /no usable chat template: .*tokenizer_config\.json: no "chat_template"/);
  await new Promise((res) => plain.close(res));
});

test("concurrent requests get their own seeds' text; a client that goes away does not block the next", { skip }, async () => {
  const ids = model.tokenizer.encode(prompt, true);
  const [a, b] = await Promise.all([
    post("/v1/completions", { prompt, max_tokens: 20, temperature: 0.9, seed: 11 }),
    post("/v1/completions", { prompt, max_tokens: 20, temperature: 0.9, seed: 22 }),
  ]);
  assert.equal(a.json["choices"][0].text, await expectedText(ids, 20, 0.9, 11));
  assert.equal(b.json["choices"][0].text, await expectedText(ids, 20, 0.9, 22));
  const ac = new AbortController();
  const r = await fetch(base + "/v1/completions", { method: "POST", body: JSON.stringify({ prompt, max_tokens: 200, temperature: 0, stream: true }), signal: ac.signal });
  const reader = r.body!.getReader();
  await reader.read(); // the first event
  ac.abort();
  const after = await post("/v1/completions", { prompt, max_tokens: 5, temperature: 0 });
  assert.equal(after.status, 200);
  assert.equal(after.json["choices"][0].text, await expectedText(ids, 5));
  const health = (await (await fetch(base + "/health")).json()) as { status: string; served: number };
  assert.equal(health.status, "ok");
});

test("llamesh serve: bad arguments are one-line errors", async () => {
  const none = await runCli("llamesh", ["serve"]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /^error: llamesh serve: expected one model folder, got none/);
  const flag = await runCli("llamesh", ["serve", "/nonexistent", "--topology", "star"]);
  assert.equal(flag.code, 1);
  assert.match(flag.stderr, /^error: llamesh serve: --topology needs --workers/);
  const port = await runCli("llamesh", ["serve", "/nonexistent", "--port", "70000"]);
  assert.equal(port.code, 1);
  assert.match(port.stderr, /--port "70000" is not valid/);
});
