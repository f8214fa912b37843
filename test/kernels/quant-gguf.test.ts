/**
 * The reference quantizers and dequantizers on files llama.cpp's own llama-quantize wrote
 * (../shared/models/gguf-llamacpp, from the F32 stories260K-256 checkpoint): quantizing the F32
 * weights (rows put in GGUF's q/k order) gives every tensor's bytes exactly, and the dequantized
 * tensors are close to the F32 weights they came from.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { readGguf } from "../../src/gguf/reader.js";
import { SafetensorsModel } from "../../src/model/safetensors.js";
import { ggufNameOf, ggufRowOfHfRow } from "../../src/model/gguf-llama.js";
import { dequantizeRow, quantizeRow } from "../../src/kernels/quant/index.js";
import { rowBytes, type TensorType } from "../../src/kernels/formats.js";
import { SHARED_MODELS, skipUnless } from "../helpers/models.js";

const DIR = path.join(SHARED_MODELS, "gguf-llamacpp");
const F32_DIR = path.join(SHARED_MODELS, "stories260K-256");
const FILES = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"];
/** Upper bounds of ||dequantized - f32|| / ||f32|| per type (measured: 0.006, 0.02, 0.04, 0.08, 0.10). */
const MAX_REL_ERR: Partial<Record<TensorType, number>> = { F32: 0, Q8_0: 0.01, Q6_K: 0.03, Q5_K: 0.05, Q4_K: 0.1, Q4_0: 0.12 };
const HEAD_DIM = 32;

const skip = skipUnless(DIR) || skipUnless(F32_DIR);

describe("llama-quantize's files", { skip }, () => {
  for (const q of FILES) {
    test(`${q}: every tensor requantizes to the file's bytes and dequantizes close to F32`, () => {
      const st = SafetensorsModel.open(F32_DIR);
      const file = path.join(DIR, `stories260K-256-${q}.gguf`);
      const gguf = readGguf(file);
      const fd = fs.openSync(file, "r");
      const seen = new Set<string>();
      try {
        for (const hf of st.names) {
          const g = ggufNameOf(hf);
          assert.ok(g, hf);
          const t = gguf.tensors.get(g.name);
          assert.ok(t, `${q}: ${g.name} missing`);
          seen.add(t.type);
          const shape = st.info(hf).shape;
          const rows = shape.length === 1 ? 1 : shape[0]!, cols = shape[shape.length - 1]!;
          assert.deepEqual(t.dims, shape.length === 1 ? [cols] : [cols, rows]);
          const w = new Float32Array(rows * cols);
          st.readRows(hf, 0, rows, w);
          const x = new Float32Array(rows * cols);
          for (let r = 0; r < rows; r++) {
            const gr = g.rope ? ggufRowOfHfRow(r, HEAD_DIM) : r;
            x.set(w.subarray(r * cols, (r + 1) * cols), gr * cols);
          }
          const bytes = new Uint8Array(t.nbytes);
          fs.readSync(fd, bytes, 0, t.nbytes, t.offset);
          const rb = rowBytes(t.type, cols);
          const mine = new Uint8Array(t.nbytes);
          for (let r = 0; r < rows; r++) quantizeRow(t.type, x, r * cols, mine, r * rb, cols);
          const diff = mine.findIndex((v, i) => v !== bytes[i]);
          assert.equal(diff, -1, `${q} ${t.name} (${t.type}): first differing byte ${diff} of ${t.nbytes}`);
          const deq = new Float32Array(rows * cols);
          for (let r = 0; r < rows; r++) dequantizeRow(t.type, bytes, r * rb, deq, r * cols, cols);
          let e = 0, n = 0;
          for (let i = 0; i < deq.length; i++) {
            e += (deq[i]! - x[i]!) ** 2;
            n += x[i]! ** 2;
          }
          const rel = Math.sqrt(e / n);
          const bound = MAX_REL_ERR[t.type];
          assert.ok(bound !== undefined, `no bound for ${t.type}`);
          assert.ok(rel <= bound, `${q} ${t.name} (${t.type}): relative error ${rel} > ${bound}`);
        }
      } finally {
        fs.closeSync(fd);
        st.close();
      }
      // the K-quant mixes really mix types
      if (q.endsWith("_M")) assert.ok(seen.has("Q6_K") && seen.size >= 3, `${q}: types ${[...seen].join(", ")}`);
    });
  }
});
