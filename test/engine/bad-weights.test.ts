/**
 * Bad weights are one-line errors naming the tensor, its type and what was expected, never a
 * crash or garbage: a type llamesh does not read, rows that are not whole blocks of their type, a
 * tensor cut short, NaN or infinite weights (from a folder and in a GGUF's own blocks). Absurd
 * sizes (2^53 layers in config.json, a GGUF block count of 2^32-1, a million layers) are refused
 * before anything is allocated: within a second and 200 MB, measured in a child process.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel } from "../../src/engine/open.js";
import { LlameshError } from "../../src/core/errors.js";
import { openGguf } from "../../src/model/gguf-llama.js";
import { syntheticTensors } from "../../src/synthetic/checkpoint.js";
import { writeGgufFromTensors, writeGgufFromSafetensors } from "../../src/synthetic/gguf-writer.js";
import { writeSafetensors } from "../../src/synthetic/checkpoint.js";
import { assertLlamesh, tensorInfoAt } from "../helpers/gguf.js";
import { tempDir, tinyModel, tinyShape } from "../helpers/models.js";

const backend = await createBackend({ threads: 1 });

function ggufOf(quant: "Q8_0" | "F32"): string {
  const shape = tinyShape({ nLayers: 1, hiddenDim: 128 });
  const f = path.join(tempDir(), `m-${quant}.gguf`);
  writeGgufFromTensors(f, shape, syntheticTensors(shape, 5), { quant });
  return f;
}

function edited(src: string, name: string, edit: (b: Buffer) => void): string {
  const b = Buffer.from(fs.readFileSync(src));
  edit(b);
  const f = path.join(tempDir(), name);
  fs.writeFileSync(f, b);
  return f;
}

test("a tensor type llamesh does not read, rows that are not whole blocks, a tensor cut short: one line naming tensor and type", () => {
  const good = ggufOf("Q8_0");
  const iq2 = edited(good, "iq2.gguf", (b) => b.writeUInt32LE(16, tensorInfoAt(b, "blk.0.attn_q.weight").typeAt));
  assertLlamesh(() => openGguf(iq2), iq2, "tensor blk.0.attn_q.weight has type IQ2_XXS, which llamesh does not read", "expected one of F32, F16, BF16, Q8_0");
  // Q4_K needs rows of 256 values: this 64-wide matrix cannot be one
  const q4k = edited(good, "q4k.gguf", (b) => b.writeUInt32LE(12, tensorInfoAt(b, "blk.0.attn_q.weight").typeAt));
  assertLlamesh(() => openGguf(q4k), q4k, "tensor blk.0.attn_q.weight is Q4_K with rows of 64 values", "256-value blocks");
  const size = fs.statSync(good).size;
  const cut = path.join(tempDir(), "cut.gguf");
  fs.writeFileSync(cut, fs.readFileSync(good).subarray(0, size - 3000));
  assert.throws(() => openGguf(cut), (e: unknown) => e instanceof LlameshError && /tensor \S+ \((Q8_0|F32) \[[\d, ]+\], \d+ bytes\) data .* lies outside the file/.test(e.message) && !e.message.includes("\n"));
});

test("NaN or infinite weights are reported at load naming the tensor: from a folder and in a GGUF's own blocks", async () => {
  const shape = tinyShape({ nLayers: 1, hiddenDim: 128 });
  const tensors = syntheticTensors(shape, 3);
  // a folder whose gate_proj holds an infinity in row 7
  const dir = tinyModel(shape);
  const gate = tensors.find((t) => t.name === "model.layers.0.mlp.gate_proj.weight")!;
  const fill = gate.fill;
  gate.fill = (out) => {
    fill(out);
    out[7 * shape.dim + 3] = Infinity;
  };
  writeSafetensors(path.join(dir, "model.safetensors"), tensors, "F32");
  await assert.rejects(() => openModel(dir, { backend, maxSeqLen: 16 }),
    (e: unknown) => e instanceof LlameshError && /model\.safetensors: tensor model\.layers\.0\.mlp\.gate_proj\.weight holds NaN or infinite values \(row 7\)/.test(e.message));
  // and a norm with a NaN
  const dir2 = tinyModel(shape);
  const t2 = syntheticTensors(shape, 3);
  const norm = t2.find((t) => t.name === "model.layers.0.post_attention_layernorm.weight")!;
  const nf = norm.fill;
  norm.fill = (out) => {
    nf(out);
    out[5] = NaN;
  };
  writeSafetensors(path.join(dir2, "model.safetensors"), t2, "F32");
  await assert.rejects(() => openModel(dir2, { backend, maxSeqLen: 16 }), (e: unknown) => e instanceof LlameshError && /post_attention_layernorm\.weight holds NaN/.test(e.message));
  // a GGUF Q8_0 block whose f16 scale is infinite (0x7c00): found without dequantizing
  const clean = path.join(tempDir(), "clean.gguf");
  writeGgufFromSafetensors(tinyModel(shape), clean, { quant: "Q8_0" });
  const g = openGguf(clean);
  const t = g.source.ggufTensor("model.layers.0.self_attn.v_proj.weight");
  g.source.close();
  const bad = edited(clean, "inf-scale.gguf", (b) => b.writeUInt16LE(0x7c00, t.offset + 34 * 2 * 5)); // row 5, block 0 (64 columns: 2 blocks a row)
  await assert.rejects(() => openModel(bad, { backend, maxSeqLen: 16 }),
    (e: unknown) => e instanceof LlameshError && /tensor model\.layers\.0\.self_attn\.v_proj\.weight holds NaN or infinite values \(row 5\)/.test(e.message));
});

/** Open `model` in a child process; its error line, wall time and peak memory. */
function refusal(model: string): { message: string; ms: number; maxRssMb: number } {
  const script = `
    const { openModel } = await import(${JSON.stringify(path.resolve("dist/src/engine/open.js"))});
    const { ReferenceBackend } = await import(${JSON.stringify(path.resolve("dist/src/kernels/reference.js"))});
    const t0 = performance.now();
    let message = "loaded";
    try { await openModel(${JSON.stringify(model)}, { backend: new ReferenceBackend() }); } catch (e) { message = e.message; }
    console.log(JSON.stringify({ message, ms: performance.now() - t0, maxRssMb: process.resourceUsage().maxRSS / 1024 }));`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 60_000 });
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as { message: string; ms: number; maxRssMb: number };
}

test("absurd sizes are refused before anything is allocated: within 1 s and 200 MB", async () => {
  for (const layers of [2 ** 53, 1e6]) {
    const dir = tinyModel(tinyShape({ nLayers: 1 }));
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    cfg["num_hidden_layers"] = layers;
    fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(cfg));
    const r = refusal(dir);
    assert.match(r.message, /config\.json: "num_hidden_layers" is \d+(e\+\d+)?, beyond any model llamesh can run \(at most 1024\)/);
    assert.ok(r.ms < 1000 && r.maxRssMb < 200, `config ${layers}: ${r.ms.toFixed(0)} ms, ${r.maxRssMb.toFixed(0)} MB`);
  }
  for (const count of [2 ** 32 - 1, 1e6]) {
    const f = edited(ggufOf("F32"), `blocks-${count}.gguf`, (b) => {
      // llama.block_count is a u32 metadata value: overwrite it in place
      const key = Buffer.from("llama.block_count");
      const at = b.indexOf(key) + key.length + 4; // after the key and its u32 value type
      b.writeUInt32LE(count, at);
    });
    const r = refusal(f);
    assert.match(r.message, /metadata llama\.block_count is \d+, beyond any model llamesh can run \(at most 1024\)/);
    assert.ok(r.ms < 1000 && r.maxRssMb < 200, `GGUF ${count}: ${r.ms.toFixed(0)} ms, ${r.maxRssMb.toFixed(0)} MB`);
  }
  await backend.close();
});
