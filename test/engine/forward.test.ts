/**
 * The engine's logits against a plain float32 forward pass (test/engine/reference-llama.ts) on
 * tiny synthetic checkpoints: GQA and plain attention, tied and untied embeddings, F32/F16/BF16
 * files, one file or shards with an index, padding (intermediate size not a multiple of 32),
 * several arenas, and prompt batches against one token at a time.
 *
 * Tolerance. Q8_0 rounds each weight and each activation to 1/254 of its block's max |value|:
 * for Gaussian-like blocks (max ≈ 2.1 σ) the rounding error is ≈ 0.5% RMS of σ, so one product of
 * quantized weights and activations is off by ≈ 0.7% RMS; the BF16 KV cache adds ≈ 0.2%. A
 * two-layer model chains 15 products, and their errors add roughly in quadrature (≈ 3%) — but
 * the residual stream carries most of the signal unchanged, and we measured a worst relative L2
 * error of 1.2-1.7% on the logits of these models (LLAMESH_TEST_VERBOSE=1 prints it). We allow 3%, about twice that: a sign error in RoPE
 * (tried on purpose) gives 4-16% at the first positions, and grows with them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ForwardPass } from "../../src/engine/forward.js";
import { fullSlice, ModelSlice } from "../../src/engine/slice.js";
import { loadLlamaConfig } from "../../src/model/config.js";
import { SafetensorsModel } from "../../src/model/safetensors.js";
import type { SyntheticShape } from "../../src/synthetic/checkpoint.js";
import type { SafetensorsDtype } from "../../src/model/safetensors.js";
import { tinyModel, tinyShape } from "../helpers/models.js";
import { testBackends } from "../helpers/backends.js";
import { ReferenceLlama, relativeError, worstLogitError } from "./reference-llama.js";

const TOLERANCE = 0.03;
const TOKENS = [1, 300, 261, 259, 42, 7, 330, 310, 301, 2, 290, 100];

interface Case {
  name: string;
  shape: SyntheticShape;
  dtype: SafetensorsDtype;
  shards: number;
}

const cases: Case[] = [
  { name: "GQA, tied, F32, one file", shape: tinyShape({ tied: true }), dtype: "F32", shards: 1 },
  { name: "plain attention, untied, F16, 3 shards", shape: tinyShape({ nKvHeads: 4, hiddenDim: 128 }), dtype: "F16", shards: 3 },
  { name: "GQA 8/2, untied, BF16, padded hidden 100", shape: tinyShape({ nHeads: 8, nKvHeads: 2, dim: 128 }), dtype: "BF16", shards: 1 },
  { name: "tied, BF16, 2 shards, 3 layers", shape: tinyShape({ nLayers: 3, tied: true }), dtype: "BF16", shards: 2 },
];

for (const backend of await testBackends()) {
  for (const c of cases) {
    test(`[${backend.name}] logits match the float32 reference: ${c.name}`, async () => {
      const dir = tinyModel(c.shape, c.dtype, c.shards);
      const config = loadLlamaConfig(dir);
      const src = SafetensorsModel.open(dir);
      const ref = new ReferenceLlama(config, src);
      const fp = await ForwardPass.load(src, config, backend, { seqLen: 32, batch: 4 });
      src.close();
      const worst = await worstLogitError(fp, ref, TOKENS, TOLERANCE);
      assert.ok(worst > 0, "quantized logits cannot equal the f32 reference exactly");
      if (process.env["LLAMESH_TEST_VERBOSE"]) console.log(`worst relative error ${worst.toFixed(4)}`);
    });
  }

  test(`[${backend.name}] a prompt batch gives the same logits as one token at a time`, async () => {
    const dir = tinyModel(tinyShape());
    const config = loadLlamaConfig(dir);
    const src = SafetensorsModel.open(dir);
    const batched = await ForwardPass.load(src, config, backend, { seqLen: 32, batch: 5 });
    const single = await ForwardPass.load(src, config, backend, { seqLen: 32, batch: 1 });
    src.close();
    // 12 tokens as batches of 5, 5, 2; compare the logits after each batch's last token
    let pos = 0;
    for (const chunk of [TOKENS.slice(0, 5), TOKENS.slice(5, 10), TOKENS.slice(10)]) {
      const a = Float32Array.from(await batched.forward(chunk, pos));
      let b = new Float32Array(0);
      for (const t of chunk) b = Float32Array.from(await single.forward([t], pos++));
      assert.ok(relativeError(a, b) < 1e-5, `after position ${pos - 1}: ${relativeError(a, b)}`);
    }
  });

  test(`[${backend.name}] layers spread over several arenas give identical logits`, async () => {
    const shape = tinyShape({ nLayers: 4 });
    const dir = tinyModel(shape);
    const config = loadLlamaConfig(dir);
    const src = SafetensorsModel.open(dir);
    const a = await ForwardPass.load(src, config, backend, { seqLen: 32, batch: 2 });
    // shrink the arena limit until the layers need at least 3 arenas
    let maxArenaBytes = a.model.arenas[0]!.size;
    while (new ModelSlice(config, fullSlice(config), a.plan, backend, { seqLen: 32, batch: 2, maxArenaBytes }).arenas.length < 3) maxArenaBytes -= 4096;
    const b = await ForwardPass.load(src, config, backend, { seqLen: 32, batch: 2, maxArenaBytes });
    src.close();
    assert.equal(a.model.arenas.length, 1);
    assert.ok(b.model.arenas.length >= 3, `expected several arenas, got ${b.model.arenas.length}`);
    for (let pos = 0; pos < 6; pos++) {
      assert.deepEqual(Array.from(await b.forward([TOKENS[pos]!], pos)), Array.from(await a.forward([TOKENS[pos]!], pos)));
    }
  });

}

test("default context: the trained context, at most 4096 positions (llama.cpp's -c default); more when asked", async () => {
  const { openModel } = await import("../../src/engine/open.js");
  const { createBackend } = await import("../../src/kernels/backend.js");
  const backend = await createBackend({ threads: 1 });
  try {
    for (const [trained, asked, want] of [[64, undefined, 64], [8192, undefined, 4096], [8192, 6000, 6000]] as const) {
      const m = await openModel(tinyModel(tinyShape({ seqLen: trained })), { backend, ...(asked ? { maxSeqLen: asked } : {}) });
      assert.equal(m.seqLen, want, `trained ${trained}, asked ${asked ?? "nothing"}`);
    }
  } finally {
    await backend.close();
  }
});
