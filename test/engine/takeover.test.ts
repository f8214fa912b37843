/**
 * A whole forward pass with the pool's takeover on every late chunk (pool-worker.ts CHUNK_FREE,
 * takeoverAfter 0: the main thread runs every matmul chunk a worker has not committed the moment
 * it runs out of chunks): the prompt's and every greedy step's logits equal one thread's bit for
 * bit, on llama.cpp's Q4_K_M file of stories260K-256: Q4_K and Q6_K matmuls of 1 and 9 tokens,
 * shadows committed and chunks taken over among attention, norms and SiLU. (Late writes need a
 * worker slower than the main thread to show: test/kernels/pool-takeover.test.ts looks for them.)
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import { WasmBackend } from "../../src/kernels/wasm.js";
import { openModel, type LoadedModel } from "../../src/engine/open.js";
import { GGUF_LLAMACPP, skipUnless } from "../helpers/models.js";

const FILE = path.join(GGUF_LLAMACPP, "stories260K-256-Q4_K_M.gguf");
const backends: WasmBackend[] = [];
after(async () => {
  for (const b of backends) await b.close();
});

const argmax = (l: Float32Array): number => l.reduce((b, v, i, a) => (v > a[b]! ? i : b), 0);

async function greedy(m: LoadedModel, prompt: number[], n: number): Promise<Float32Array[]> {
  const logits = [Float32Array.from((await m.forwardBatch([{ slot: 0, pos: 0, tokens: prompt }]))[0]!)];
  for (let i = 1; i < n; i++) {
    const l = (await m.forwardBatch([{ slot: 0, pos: prompt.length + i - 1, tokens: [argmax(logits[i - 1]!)] }]))[0]!;
    logits.push(Float32Array.from(l));
  }
  return logits;
}

test("takeover of every late chunk: logits equal one thread's, bit for bit (stories260K-256 Q4_K_M)", { skip: skipUnless(GGUF_LLAMACPP) }, async () => {
  const one = await WasmBackend.create(1);
  const many = await WasmBackend.create(3, { alwaysSplit: true });
  backends.push(one, many);
  many.pool.takeoverAfter = 0;
  const a = await openModel(FILE, { backend: one, maxSeqLen: 96 });
  const b = await openModel(FILE, { backend: many, maxSeqLen: 96 });
  const prompt = a.tokenizer.encode("Once upon a time, in a small town,", true);
  const want = await greedy(a, prompt, 24);
  const got = await greedy(b, prompt, 24);
  got.forEach((l, i) => assert.deepEqual(l, want[i], `logits after step ${i}`));
  assert.ok(many.pool.takeovers > 0, "the main thread took chunks over");
});
