/** bin/client and bin/llamesh as a user runs them. */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { runCli } from "../helpers/cli.js";
import { LLAMA2_TOKENIZER, STORIES, skipUnless, tempDir, tinyModel, tinyShape } from "../helpers/models.js";

test("bin/client on stories260K: a story on stdout, the report on stderr", { skip: skipUnless(STORIES) }, async () => {
  const r = await runCli("client", [STORIES, "-n", "200", "-i", "Once upon a time", "--temperature", "0"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.length > 400, `expected a long story, got ${JSON.stringify(r.stdout)}`);
  assert.ok((r.stdout.match(/\./g) ?? []).length >= 5, "expected sentences");
  assert.doesNotMatch(r.stdout, /Loaded|Speed|GMAC/, "diagnostics must not reach stdout");
  assert.match(r.stderr, /Processed .*model\.safetensors \(1\.04 MB\)/);
  assert.match(r.stderr, /Loaded 47 tensors/);
  assert.match(r.stderr, /Config: dim 64, hidden_dim 172, n_layers 5, n_heads 8, n_kv_heads 4, vocab_size 512, seq_len 512/);
  assert.match(r.stderr, /Memory by layer type:\n\s+layer type\s+quant\s+memory\s+params \(M\)\s+bytes\/param/);
  assert.match(r.stderr, /feed-forward \(gate,up,down\)\s+Q8_0/);
  assert.match(r.stderr, /memory: run state .* \+ KV cache \(BF16\) .* \+ model .* = /);
  assert.match(r.stderr, /Prompt: 5 tokens in [\d.]+ ms, [\d.]+ tok\/s/);
  assert.match(r.stderr, /Generated: 200 tokens \(stopped: reached -n\)/);
  assert.match(r.stderr, /Speed: [\d.]+ tok\/s, [\d.]+ ms\/token\nGMAC: [\d.]+/);
});

test("same seed, same text; another seed, other text", { skip: skipUnless(STORIES) }, async () => {
  const args = (seed: string) => [STORIES, "-n", "60", "-i", "Once upon a time", "--temperature", "1", "--seed", seed];
  const [a, b, c] = await Promise.all([runCli("client", args("7")), runCli("client", args("7")), runCli("client", args("8"))]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(a.stdout, b.stdout);
  assert.notEqual(a.stdout, c.stdout);
  assert.match(a.stderr, /temperature 1, top-p 0.95, top-k 40, seed 7/);
});

test("threads default to OMP_NUM_THREADS", { skip: skipUnless(STORIES) }, async () => {
  const r = await runCli("client", [STORIES, "-n", "1", "-i", "Hi"], { OMP_NUM_THREADS: "1" });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /Kernels: .*(1 thread|typescript)/);
});

test("llamesh tokenize works on a folder holding only tokenizer files", { skip: skipUnless(LLAMA2_TOKENIZER) }, async () => {
  const dir = tempDir();
  for (const f of ["tokenizer.model", "tokenizer_config.json"]) fs.copyFileSync(path.join(LLAMA2_TOKENIZER, f), path.join(dir, f));
  const viaModel = await runCli("llamesh", ["tokenize", dir, "Hello world"]);
  const viaJson = await runCli("llamesh", ["tokenize", LLAMA2_TOKENIZER, "Hello world"]);
  const noBos = await runCli("llamesh", ["tokenize", LLAMA2_TOKENIZER, "Hello world", "--no-bos"]);
  assert.equal(viaModel.code, 0, viaModel.stderr);
  assert.match(viaModel.stdout, /^1( \d+)+\n$/);
  assert.equal(viaModel.stdout, viaJson.stdout);
  assert.equal(noBos.stdout, viaJson.stdout.replace(/^1 /, ""));
});

test("generation stops at the end of the context", async () => {
  const dir = tinyModel(tinyShape());
  const r = await runCli("client", [dir, "-n", "100", "-i", "abc", "--max-seq-len", "12", "--temperature", "0"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /Generated: \d+ tokens \(stopped: (context full \(--max-seq-len\)|end-of-sequence token)\)/);
});

test("the warm-up after loading leaves the text as it was (its KV rows are overwritten); --no-warmup skips it", { skip: skipUnless(STORIES) }, async () => {
  // a prompt shorter than the warm-up's passes: generation then overwrites the rows they wrote
  const args = [STORIES, "-n", "40", "-i", "Once", "--temperature", "0", "-t", "2"];
  const [warm, cold] = await Promise.all([runCli("client", args), runCli("client", [...args, "--no-warmup"])]);
  assert.equal(warm.code, 0, warm.stderr);
  assert.equal(cold.code, 0, cold.stderr);
  assert.match(warm.stderr, /Warm-up: 3 passes of up to 8 tokens in \d+ ms \(--no-warmup skips it\)/);
  assert.doesNotMatch(cold.stderr, /Warm-up/);
  assert.ok(warm.stdout.length > 100, warm.stdout);
  assert.equal(warm.stdout, cold.stdout);
});
