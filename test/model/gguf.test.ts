/**
 * GGUF: round trips HF folder -> GGUF (gguf-writer) -> openGguf on tiny synthetic models (GQA and
 * plain attention, tied and untied, Q8_0 / F16 / F32), the RoPE row permutation, the tokenizer
 * from GGUF metadata against the folder's own, the loader fed by a GGUF against the same weights
 * from safetensors, and bad files.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { ForwardPass } from "../../src/engine/forward.js";
import { expectedTensors, hfNames } from "../../src/engine/weights.js";
import { Arena } from "../../src/kernels/arena.js";
import { Q8_0_BLOCK_BYTES, q8RowBytes, QK8_0 } from "../../src/kernels/q8.js";
import { F16_TO_F32, f32ToF16 } from "../../src/core/numbers.js";
import { ReferenceBackend, ReferenceKernels } from "../../src/kernels/reference.js";
import { loadLlamaConfig, type LlamaConfig } from "../../src/model/config.js";
import { assertLlamesh, tensorInfoAt } from "../helpers/gguf.js";
import { readGguf, shortestF32 } from "../../src/gguf/reader.js";
import { ggufRowOfHfRow, openGguf } from "../../src/model/gguf-llama.js";
import {
  byteLevelTokenizerSpec,
  llamaMetadata,
  quantizeQ8_0,
  writeGguf,
  writeGgufFromSafetensors,
  writeGgufFromTensors,
  type GgufKV,
  type GgufQuant,
} from "../../src/synthetic/gguf-writer.js";
import { SafetensorsModel } from "../../src/model/safetensors.js";
import { syntheticTensors, writeSyntheticModel, type SyntheticShape } from "../../src/synthetic/checkpoint.js";
import { loadTokenizerSync } from "../../src/model/tokenizer.js";
import { LLAMA2_TOKENIZER, skipUnless, STORIES, tempDir, tinyModel, tinyShape } from "../helpers/models.js";

function allNames(c: LlamaConfig): string[] {
  return expectedTensors(c).map(([name]) => name);
}

function rowsCols(shape: number[]): [number, number] {
  return shape.length === 1 ? [1, shape[0]!] : [shape[0]!, shape[1]!];
}

/** Q8_0 bytes of `x` by the reference kernel's weight quantizer (the loader's own). */
function referenceQ8(x: Float32Array): Uint8Array {
  const arena = new Arena(x.length * 4 + q8RowBytes(x.length) + 1024, "test");
  const k = new ReferenceKernels(arena);
  const src = arena.alloc(x.length * 4);
  const dst = arena.alloc(q8RowBytes(x.length));
  arena.f32(src, x.length).set(x);
  k.quantizeWeights("Q8_0", dst, src, x.length);
  return arena.u8(dst, q8RowBytes(x.length)).slice();
}

function dequantQ8(q: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const dv = new DataView(q.buffer, q.byteOffset, q.byteLength);
  for (let b = 0; b < n / QK8_0; b++) {
    const d = F16_TO_F32[dv.getUint16(b * Q8_0_BLOCK_BYTES, true)]!;
    for (let i = 0; i < QK8_0; i++) out[b * QK8_0 + i] = d * dv.getInt8(b * Q8_0_BLOCK_BYTES + 2 + i);
  }
  return out;
}

interface Case {
  name: string;
  shape: SyntheticShape;
}
const CASES: Case[] = [
  { name: "GQA 4/2, untied, hidden 100 (not a multiple of 32)", shape: tinyShape() },
  { name: "plain attention, tied", shape: tinyShape({ nKvHeads: 4, tied: true, hiddenDim: 128 }) },
  { name: "GQA 8/2, head size 16, untied", shape: tinyShape({ dim: 128, nHeads: 8, nKvHeads: 2, hiddenDim: 96, nLayers: 1 }) },
];

for (const c of CASES) {
  for (const quant of ["Q8_0", "F32", "F16"] as GgufQuant[]) {
    test(`round trip ${quant}: ${c.name}`, () => {
      const dir = tinyModel(c.shape);
      const file = path.join(tempDir(), "model.gguf");
      writeGgufFromSafetensors(dir, file, { quant });
      const g = openGguf(file);
      const st = SafetensorsModel.open(dir);
      try {
        const expected = loadLlamaConfig(dir);
        assert.deepEqual(g.config, expected);
        assert.equal(g.source.has(hfNames.classifier), !c.shape.tied);
        assert.deepEqual(g.source.files, [file]);
        for (const name of allNames(expected)) {
          const info = g.source.info(name);
          const shape = st.info(name).shape;
          assert.deepEqual(info.shape, shape, name);
          const [rows, cols] = rowsCols(shape);
          const want = new Float32Array(rows * cols);
          st.readRows(name, 0, rows, want);
          const got = new Float32Array(rows * cols);
          g.source.readRows(name, 0, rows, got);
          const type = shape.length === 1 ? "F32" : quant === "Q8_0" && cols % 32 !== 0 ? "F16" : quant;
          assert.equal(info.dtype, type, name);
          if (type === "F32") {
            assert.deepEqual(got, want, name);
          } else if (type === "F16") {
            assert.deepEqual(got, want.map((v) => F16_TO_F32[f32ToF16(v)]!), name);
          } else {
            // Q8_0: the very bytes our quantizer makes of the safetensors rows
            const q = referenceQ8(want);
            const raw = new Uint8Array(q.length);
            g.source.readRawRows!(name, 0, rows, raw);
            assert.ok(Buffer.from(raw).equals(Buffer.from(q)), `${name}: Q8_0 bytes differ from the loader's quantizer`);
            assert.deepEqual(got, dequantQ8(q, rows * cols), name);
            // within Q8 rounding: half a step (max |x| / 127 of the block), plus the f16 scale's error
            let worst = 0;
            for (let b = 0; b < want.length / QK8_0; b++) {
              const block = want.subarray(b * QK8_0, (b + 1) * QK8_0);
              const step = block.reduce((m, v) => Math.max(m, Math.abs(v)), 0) / 127;
              for (let i = 0; i < QK8_0; i++) {
                const err = Math.abs(got[b * QK8_0 + i]! - block[i]!);
                worst = Math.max(worst, err / step);
                assert.ok(err <= step * (0.5 + 127 / 2048), `${name}[${b * QK8_0 + i}]: error ${err}, step ${step}`);
              }
            }
            assert.ok(worst > 0.3, `${name}: suspiciously exact (worst ${worst} steps)`);
          }
          // any row range, including ones that start and end inside a head
          if (rows > 1) {
            for (const [r0, n] of [[1, 3], [5, 13], [rows - 7, 7], [Math.floor(rows / 2), 1]] as [number, number][]) {
              const part = new Float32Array(n * cols);
              g.source.readRows(name, r0, n, part);
              assert.deepEqual(part, got.subarray(r0 * cols, (r0 + n) * cols), `${name} rows ${r0}+${n}`);
              if (type === "Q8_0") {
                const rb = q8RowBytes(cols);
                const rawPart = new Uint8Array(n * rb);
                g.source.readRawRows!(name, r0, n, rawPart);
                const whole = new Uint8Array(rows * rb);
                g.source.readRawRows!(name, 0, rows, whole);
                assert.ok(Buffer.from(rawPart).equals(Buffer.from(whole.subarray(r0 * rb, (r0 + n) * rb))), `${name} q8 rows ${r0}+${n}`);
              }
            }
          }
        }
      } finally {
        st.close();
        g.source.close();
      }
    });
  }
}

test("q_proj / k_proj rows are stored interleaved (llama.cpp) and read back in HF order", () => {
  const shape = tinyShape();
  const dir = tinyModel(shape);
  const file = path.join(tempDir(), "model.gguf");
  writeGgufFromSafetensors(dir, file, { quant: "F32" });
  const c = loadLlamaConfig(dir);
  const hd = c.headDim; // 16
  // HF row i -> GGUF row 2i, HF row hd/2 + i -> GGUF row 2i + 1, within each head
  assert.equal(ggufRowOfHfRow(0, hd), 0);
  assert.equal(ggufRowOfHfRow(1, hd), 2);
  assert.equal(ggufRowOfHfRow(hd / 2, hd), 1);
  assert.equal(ggufRowOfHfRow(hd / 2 + 3, hd), 7);
  assert.equal(ggufRowOfHfRow(hd + 1, hd), hd + 2);
  const st = SafetensorsModel.open(dir);
  const g = readGguf(file);
  const fd = fs.openSync(file, "r");
  try {
    for (const [hfName, ggName] of [
      [hfNames.layer(1).wq, "blk.1.attn_q.weight"],
      [hfNames.layer(1).wk, "blk.1.attn_k.weight"],
    ] as const) {
      const t = g.tensors.get(ggName)!;
      const cols = t.dims[0]!;
      const rows = t.dims[1]!;
      const hf = new Float32Array(rows * cols);
      st.readRows(hfName, 0, rows, hf);
      // the file itself, row by row: the llama.cpp converter's permute
      const raw = Buffer.alloc(t.nbytes);
      fs.readSync(fd, raw, 0, t.nbytes, t.offset);
      const fileRows = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
      for (let h = 0; h < rows / hd; h++) {
        for (let i = 0; i < hd / 2; i++) {
          const even = fileRows.subarray((h * hd + 2 * i) * cols, (h * hd + 2 * i + 1) * cols);
          const odd = fileRows.subarray((h * hd + 2 * i + 1) * cols, (h * hd + 2 * i + 2) * cols);
          assert.deepEqual(even, hf.subarray((h * hd + i) * cols, (h * hd + i + 1) * cols));
          assert.deepEqual(odd, hf.subarray((h * hd + hd / 2 + i) * cols, (h * hd + hd / 2 + i + 1) * cols));
        }
      }
      // a row that moves: HF row 1 sits at GGUF row 2, and readRows(1) gives HF row 1
      assert.notDeepEqual(fileRows.subarray(cols, 2 * cols), hf.subarray(cols, 2 * cols));
      const src = openGguf(file).source;
      const row1 = new Float32Array(cols);
      src.readRows(hfName, 1, 1, row1);
      assert.deepEqual(row1, hf.subarray(cols, 2 * cols));
      src.close();
    }
  } finally {
    fs.closeSync(fd);
    st.close();
  }
});

test("writeGgufFromTensors (synthetic, streamed) writes the same file as writeGgufFromSafetensors", () => {
  for (const shape of [tinyShape(), tinyShape({ tied: true, nKvHeads: 4 })]) {
    const dir = tinyModel(shape, "F32", 1, 11);
    const a = path.join(tempDir(), "a.gguf");
    const b = path.join(tempDir(), "b.gguf");
    writeGgufFromSafetensors(dir, a, { quant: "Q8_0", name: "x" });
    writeGgufFromTensors(b, shape, syntheticTensors(shape, 11, 0.08), { quant: "Q8_0", name: "x" });
    assert.ok(fs.readFileSync(a).equals(fs.readFileSync(b)), "files differ");
  }
});

test("the loader fed by a GGUF computes the same logits as fed by the safetensors folder", async () => {
  // every matrix Q8_0-able (hidden 128): the GGUF's Q8_0 rows are the loader's own quantization
  const shape = tinyShape({ hiddenDim: 128 });
  const dir = tinyModel(shape);
  const backend = new ReferenceBackend();
  const config = loadLlamaConfig(dir);
  const st = SafetensorsModel.open(dir);
  // a GGUF's matrices keep their types; the folder is loaded in the same type
  const refs = { Q8_0: await ForwardPass.load(st, config, backend, { seqLen: 16, batch: 4, quant: "Q8_0" }), F32: await ForwardPass.load(st, config, backend, { seqLen: 16, batch: 4, quant: "F32" }) };
  st.close();
  for (const quant of ["Q8_0", "F32"] as const) {
    const ref = refs[quant];
    const file = path.join(tempDir(), `m-${quant}.gguf`);
    writeGgufFromSafetensors(dir, file, { quant });
    const g = openGguf(file);
    const fp = await ForwardPass.load(g.source, g.config, backend, { seqLen: 16, batch: 4 });
    g.source.close();
    const tokens = [1, 300, 261, 42, 7, 330];
    for (const [pos, t] of tokens.entries()) {
      const want = Float32Array.from(await ref.forward([t], pos));
      const got = Float32Array.from(await fp.forward([t], pos));
      assert.deepEqual(got, want, `${quant}: logits at position ${pos}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

const TEXTS = [
  "Hello world",
  "Once upon a time, there was a little girl named Lily.",
  " leading space and  two  spaces",
  "line one\nline two\ttab",
  "héllo wörld, naïve café — 日本語 🦙",
  "<s>literal special</s> tokens",
  "",
];

function compareTokenizers(dir: string, file: string): void {
  const folder = loadTokenizerSync(dir);
  const { tokenizer } = openGguf(file);
  assert.equal(tokenizer.source, "gguf");
  assert.equal(tokenizer.bosId, folder.bosId);
  assert.deepEqual(tokenizer.eosIds, folder.eosIds.slice(0, 1));
  for (const text of TEXTS) {
    assert.deepEqual(tokenizer.encode(text, true), folder.encode(text, true), JSON.stringify(text));
    const ids = tokenizer.encode(text, false);
    assert.equal(Buffer.concat(ids.map((id) => tokenizer.tokenBytes(id))).toString("utf8").replace(/<s>|<\/s>/g, ""),
      Buffer.concat(ids.map((id) => folder.tokenBytes(id))).toString("utf8").replace(/<s>|<\/s>/g, ""));
  }
}

test("tokenizer from GGUF metadata: the synthetic byte-level vocabulary (tokenizer.json only)", () => {
  const dir = tinyModel(tinyShape());
  const file = path.join(tempDir(), "model.gguf");
  writeGgufFromSafetensors(dir, file, { quant: "Q8_0" });
  compareTokenizers(dir, file);
  const { metadata } = openGguf(file);
  assert.equal(metadata.get("tokenizer.ggml.model"), "llama");
  assert.equal(metadata.get("general.architecture"), "llama");
  assert.ok(metadata.get("tokenizer.ggml.token_type") instanceof Int32Array);
  assert.ok(metadata.get("tokenizer.ggml.scores") instanceof Float32Array);
});

test("stories260K: GGUF config, tensors and tokenizer match the folder", { skip: skipUnless(STORIES) }, () => {
  const file = path.join(tempDir(), "stories.gguf");
  writeGgufFromSafetensors(STORIES, file, { quant: "Q8_0" });
  const g = openGguf(file);
  assert.deepEqual(g.config, loadLlamaConfig(STORIES));
  assert.equal(g.source.info(hfNames.layer(0).down).dtype, "F16"); // 172 columns: no Q8_0
  assert.equal(g.source.info(hfNames.layer(0).wq).dtype, "Q8_0");
  g.source.close();
  compareTokenizers(STORIES, file);
});

test("Llama 2 tokenizer (32000 pieces from tokenizer.model) through GGUF metadata", { skip: skipUnless(LLAMA2_TOKENIZER) }, () => {
  const shape = tinyShape({ vocabSize: 32000, tied: true, nLayers: 1 });
  const dir = path.join(tempDir(), "model");
  writeSyntheticModel(dir, shape, { seed: 3, dtype: "F32", tokenizerFrom: LLAMA2_TOKENIZER, weightStd: 0.08 });
  const file = path.join(tempDir(), "llama2.gguf");
  writeGgufFromSafetensors(dir, file, { quant: "Q8_0" });
  compareTokenizers(dir, file);
});

test("a vocabulary smaller than the embedding is padded with unused pieces; a larger one is refused", () => {
  const shape = tinyShape({ vocabSize: 400 });
  const file = path.join(tempDir(), "padded.gguf");
  writeGgufFromTensors(file, shape, syntheticTensors(shape, 1), { quant: "F32" });
  const g = openGguf(file);
  const tokens = g.metadata.get("tokenizer.ggml.tokens") as string[];
  assert.equal(tokens.length, 400);
  assert.equal(tokens[399], "[PAD399]");
  assert.equal(g.tokenizer.vocabSize, 400);
  g.source.close();
  const small = tinyShape({ vocabSize: 300 });
  const config = { ...loadLlamaConfig(tinyModel(tinyShape())), vocabSize: 300 };
  assert.equal(small.vocabSize, 300);
  assertLlamesh(() => llamaMetadata(config, byteLevelTokenizerSpec(), "F32"), "354 pieces", "300");
});

// ---------------------------------------------------------------------------------------------
// Bad files
// ---------------------------------------------------------------------------------------------

let goodFile: string | null = null;
/** A small valid GGUF to corrupt. */
function good(): string {
  if (goodFile === null) {
    const shape = tinyShape({ nLayers: 1 });
    goodFile = path.join(tempDir(), "good.gguf");
    writeGgufFromTensors(goodFile, shape, syntheticTensors(shape, 5), { quant: "F32" });
  }
  return goodFile;
}

function corrupt(name: string, edit: (b: Buffer) => Buffer): string {
  const f = path.join(tempDir(), name);
  fs.writeFileSync(f, edit(Buffer.from(fs.readFileSync(good()))));
  return f;
}

test("bad GGUF files give one-line LlameshErrors naming the file", () => {
  const ok = openGguf(good());
  ok.source.close();

  const missing = path.join(tempDir(), "nope.gguf");
  assertLlamesh(() => openGguf(missing), missing, "not found");

  const magic = corrupt("magic.gguf", (b) => (b.write("GGML", 0, "latin1"), b));
  assertLlamesh(() => openGguf(magic), magic, "not a GGUF file", "47 47 4d 4c");

  const text = path.join(tempDir(), "text.gguf");
  fs.writeFileSync(text, "hi");
  assertLlamesh(() => openGguf(text), text, "too short");

  for (const v of [1, 4, 0x03000000]) {
    const f = corrupt(`v${v}.gguf`, (b) => (b.writeUInt32LE(v, 4), b));
    assertLlamesh(() => openGguf(f), f, `GGUF version ${v} is not supported`);
  }
  const v2 = corrupt("v2.gguf", (b) => (b.writeUInt32LE(2, 4), b));
  openGguf(v2).source.close(); // version 2 has the same layout

  const inHeader = corrupt("short-header.gguf", (b) => b.subarray(0, 200));
  assertLlamesh(() => openGguf(inHeader), inHeader, "truncated");

  const size = fs.statSync(good()).size;
  const inData = corrupt("short-data.gguf", (b) => b.subarray(0, size - 100));
  assertLlamesh(() => openGguf(inData), inData, "outside the file");

  const offset = corrupt("offset.gguf", (b) => {
    const { offsetAt } = tensorInfoAt(b, "output_norm.weight");
    b.writeBigUInt64LE(BigInt(1 << 30), offsetAt);
    return b;
  });
  assertLlamesh(() => openGguf(offset), offset, "output_norm.weight", "outside the file");

  const misaligned = corrupt("misaligned.gguf", (b) => {
    const { offsetAt } = tensorInfoAt(b, "output_norm.weight");
    b.writeBigUInt64LE(b.readBigUInt64LE(offsetAt) + 4n, offsetAt);
    return b;
  });
  assertLlamesh(() => openGguf(misaligned), misaligned, "output_norm.weight", "alignment");

  const q4k = corrupt("q4k.gguf", (b) => (b.writeUInt32LE(12, tensorInfoAt(b, "blk.0.attn_q.weight").typeAt), b));
  assertLlamesh(() => openGguf(q4k), q4k, "blk.0.attn_q.weight", "Q4_K");

  const dims = corrupt("dims.gguf", (b) => {
    const p = b.indexOf(Buffer.from("output_norm.weight")) + "output_norm.weight".length;
    b.writeUInt32LE(9, p);
    return b;
  });
  assertLlamesh(() => openGguf(dims), dims, "output_norm.weight", "9 dimensions");

  const kvCount = corrupt("kvcount.gguf", (b) => (b.writeBigUInt64LE(1n << 40n, 16), b));
  assertLlamesh(() => openGguf(kvCount), kvCount, "metadata entries");

  // a well-formed file of another architecture, and a llama file with another tokenizer
  const meta = (arch: string, tokModel: string): GgufKV[] => [
    { key: "general.architecture", value: { type: "string", value: arch } },
    { key: "tokenizer.ggml.model", value: { type: "string", value: tokModel } },
  ];
  const one = { name: "x", shape: [32], type: "F32" as const, produce: (emit: (r: Float32Array) => void) => emit(new Float32Array(32)) };
  const gpt2 = path.join(tempDir(), "gpt2.gguf");
  writeGguf(gpt2, meta("gpt2", "gpt2"), [one]);
  assertLlamesh(() => openGguf(gpt2), gpt2, `general.architecture is "gpt2"`, `expected "llama"`);
  // the architecture is named first, before any tensor of a type we do not read
  const b = fs.readFileSync(gpt2);
  b.writeUInt32LE(12, tensorInfoAt(b, "x").typeAt);
  fs.writeFileSync(gpt2, b);
  assertLlamesh(() => openGguf(gpt2), gpt2, `general.architecture is "gpt2"`);
  assertLlamesh(() => readGguf(gpt2), gpt2, "tensor x", "Q4_K");

  const llama = corrupt("tok.gguf", (b) => {
    const p = b.indexOf(Buffer.from("tokenizer.ggml.model"));
    const v = p + "tokenizer.ggml.model".length + 4 + 8;
    assert.equal(b.toString("latin1", v, v + 5), "llama");
    b.write("gpt-2", v, "latin1");
    return b;
  });
  assertLlamesh(() => openGguf(llama), llama, "tokenizer.ggml.model", `"gpt-2"`);

  const noArch = path.join(tempDir(), "noarch.gguf");
  writeGguf(noArch, [], [one]);
  assertLlamesh(() => openGguf(noArch), noArch, "general.architecture is missing");
  // the generic reader still reads it
  const raw = readGguf(noArch);
  assert.equal(raw.tensors.get("x")!.nbytes, 128);
  assert.equal(raw.version, 3);
});

test("metadata values of every type round trip; f32 scalars read as their shortest decimal", () => {
  const f = path.join(tempDir(), "kv.gguf");
  writeGguf(f, [
    { key: "a.u32", value: { type: "u32", value: 4000000000 } },
    { key: "a.i32", value: { type: "i32", value: -5 } },
    { key: "a.u64", value: { type: "u64", value: 2 ** 40 } },
    { key: "a.f32", value: { type: "f32", value: 1e-5 } },
    { key: "a.bool", value: { type: "bool", value: true } },
    { key: "a.str", value: { type: "string", value: "héllo" } },
    { key: "a.strs", value: { type: "string[]", value: ["", "x", "▁y"] } },
    { key: "a.f32s", value: { type: "f32[]", value: [0.5, -1] } },
    { key: "a.i32s", value: { type: "i32[]", value: [1, -2, 3] } },
  ], []);
  const g = readGguf(f);
  assert.equal(g.metadata.get("a.u32"), 4000000000);
  assert.equal(g.metadata.get("a.i32"), -5);
  assert.equal(g.metadata.get("a.u64"), 2 ** 40);
  assert.equal(g.metadata.get("a.f32"), 1e-5);
  assert.equal(g.metadata.get("a.bool"), true);
  assert.equal(g.metadata.get("a.str"), "héllo");
  assert.deepEqual(g.metadata.get("a.strs"), ["", "x", "▁y"]);
  assert.deepEqual(g.metadata.get("a.f32s"), Float32Array.of(0.5, -1));
  assert.deepEqual(g.metadata.get("a.i32s"), Int32Array.of(1, -2, 3));
  assert.equal(shortestF32(Math.fround(0.1)), 0.1);
  assert.equal(shortestF32(Math.fround(1e6)), 1e6);
  assert.equal(g.tensors.size, 0);
});

test("quantizeQ8_0 matches the loader's quantizer (ReferenceKernels.quantizeWeights Q8_0) bit for bit, ties and zeros included", () => {
  const x = new Float32Array(32 * 6);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 1.3) * (i % 7);
  x.fill(0, 32, 64); // an all-zero block
  for (let i = 0; i < 32; i++) x[64 + i] = (i - 16) * 0.5; // exact halves after scaling
  x[64] = 127;
  const mine = new Uint8Array(q8RowBytes(x.length));
  quantizeQ8_0(x, mine);
  assert.ok(Buffer.from(mine).equals(Buffer.from(referenceQ8(x))));
});
