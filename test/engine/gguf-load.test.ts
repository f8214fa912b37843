/** The same weights loaded from a GGUF file and from the safetensors folder give the same greedy tokens. */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import { generate } from "../../src/engine/generate.js";
import { openModel } from "../../src/engine/open.js";
import { Sampler } from "../../src/engine/sampler.js";
import { writeGgufFromSafetensors } from "../../src/synthetic/gguf-writer.js";
import { testBackends } from "../helpers/backends.js";
import type { QuantChoice } from "../../src/engine/types.js";
import { GGUF_LLAMACPP, STORIES, STORIES_256, skipUnless, tempDir, tinyModel, tinyShape } from "../helpers/models.js";

const backends = await testBackends();

async function greedyTokens(model: string, prompt: string, n: number, quant?: QuantChoice): Promise<number[]> {
  const m = await openModel(model, { backend: backends[backends.length - 1]!, maxSeqLen: 256, quant });
  const r = await generate(m, m.tokenizer.encode(prompt, true), {
    maxNewTokens: n,
    sampler: new Sampler({ temperature: 0, topK: 0, topP: 1, seed: 0 }),
    eosIds: [],
  });
  return r.tokens;
}

test("stories260K: GGUF and safetensors give the same 150 greedy tokens (F16 both: a GGUF keeps its types)", { skip: skipUnless(STORIES) }, async () => {
  // stories260K's down_proj rows (172 values) are not whole Q8_0 blocks, so a Q8_0 GGUF holds it
  // as F16, which the loader keeps, as llama.cpp does: compare F16 with F16
  const gguf = path.join(tempDir(), "stories260K-f16.gguf");
  writeGgufFromSafetensors(STORIES, gguf, { quant: "F16" });
  const a = await greedyTokens(STORIES, "Once upon a time", 150, "F16");
  const b = await greedyTokens(gguf, "Once upon a time", 150);
  assert.equal(a.length, 150);
  assert.deepEqual(b, a);
});

test("stories260K-256: llama.cpp's own Q8_0 GGUF and the folder quantized at load give the same 150 greedy tokens", { skip: skipUnless(STORIES_256) }, async () => {
  // the loader quantizes as llama-quantize does: the same blocks, so the same text
  const a = await greedyTokens(STORIES_256, "Once upon a time", 150);
  const b = await greedyTokens(path.join(GGUF_LLAMACPP, "stories260K-256-Q8_0.gguf"), "Once upon a time", 150);
  assert.equal(a.length, 150);
  assert.deepEqual(b, a);
});

test("synthetic bf16 model: GGUF Q8_0 (used as is, no re-quantization) and safetensors agree", async () => {
  const dir = tinyModel(tinyShape({ hiddenDim: 128, nLayers: 3 }), "BF16");
  const gguf = path.join(tempDir(), "tiny.gguf");
  writeGgufFromSafetensors(dir, gguf, { quant: "Q8_0" });
  const a = await greedyTokens(dir, "It was a dark and stormy night", 40);
  const b = await greedyTokens(gguf, "It was a dark and stormy night", 40);
  assert.deepEqual(b, a);
});
