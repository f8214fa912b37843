/** The same weights loaded from a GGUF file and from the safetensors folder give the same greedy tokens. */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import { generate } from "../../src/engine/generate.js";
import { openModel } from "../../src/engine/open.js";
import { Sampler } from "../../src/engine/sampler.js";
import { writeGgufFromSafetensors } from "../../src/synthetic/gguf-writer.js";
import { testBackends } from "../helpers/backends.js";
import { STORIES, skipUnless, tempDir, tinyModel, tinyShape } from "../helpers/models.js";

const backends = await testBackends();

async function greedyTokens(model: string, prompt: string, n: number): Promise<number[]> {
  const m = await openModel(model, { backend: backends[backends.length - 1]!, maxSeqLen: 256 });
  const r = await generate(m, m.tokenizer.encode(prompt, true), {
    maxNewTokens: n,
    sampler: new Sampler({ temperature: 0, topK: 0, topP: 1, seed: 0 }),
    eosIds: [],
  });
  return r.tokens;
}

test("stories260K: GGUF Q8_0 and safetensors give the same 150 greedy tokens", { skip: skipUnless(STORIES) }, async () => {
  const gguf = path.join(tempDir(), "stories260K-q8_0.gguf");
  writeGgufFromSafetensors(STORIES, gguf, { quant: "Q8_0" });
  const a = await greedyTokens(STORIES, "Once upon a time", 150);
  const b = await greedyTokens(gguf, "Once upon a time", 150);
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
