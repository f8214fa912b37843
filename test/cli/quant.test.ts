/**
 * `--quant TYPE` on a safetensors folder: the matrices are quantized at load to that type (with
 * llama.cpp's rules for the classifier and the Q4_K_M mix), the report's memory table says so, and
 * stories260K-256 (a real trained model) still tells its story.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { runCli } from "../helpers/cli.js";
import { STORIES_256, skipUnless } from "../helpers/models.js";

const skip = skipUnless(STORIES_256);

test("--quant q4_k: a coherent story from stories260K-256, Q4_K matrices and a Q6_K classifier in the report", { skip }, async () => {
  const r = await runCli("client", [STORIES_256, "-n", "60", "-i", "Once upon a time", "--temp", "0", "-t", "1", "--quant", "q4_k"]);
  assert.equal(r.code, 0, r.stderr);
  // the float model's story, as every quantization of it begins (docs: gguf-llamacpp's files)
  assert.ok(r.stdout.startsWith(", there was a little girl named Lily. She loved to play"), r.stdout);
  // words and sentences, not byte soup
  assert.match(r.stdout, /^[A-Za-z ,.'!?"\n-]+$/);
  assert.ok(r.stdout.split(/[.!?]/).filter((s) => s.trim().split(/\s+/).length >= 3).length >= 4, r.stdout);
  assert.match(r.stderr, /attention \(q,k,v,o\)\s+Q4_K\s+[\d.]+ [KMG]B\s+[\d.]+\s+0\.5625/);
  assert.match(r.stderr, /feed-forward \(gate,up,down\)\s+Q4_K\s/);
  assert.match(r.stderr, /embedding\s+Q6_K\s/, "tied: the embedding is the classifier, Q6_K as llama.cpp makes it");
});

test("--quant q4_k_m gives attn_v and ffn_down Q6_K in llama.cpp's layers; a bad --quant is a one-line error", { skip }, async () => {
  const r = await runCli("client", [STORIES_256, "-n", "8", "-i", "Once upon a time", "--temp", "0", "-t", "1", "--quant", "Q4_K_M"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /attention \(q,k,v,o\)\s+Q4_K\+Q6_K\s/);
  assert.match(r.stderr, /feed-forward \(gate,up,down\)\s+Q4_K\+Q6_K\s/);
  const bad = await runCli("client", [STORIES_256, "-n", "8", "-i", "x", "--quant", "q9"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^error: client: --quant "q9" is not valid, expected one of q8_0, .*q4_k_m.*\n$/);
});
