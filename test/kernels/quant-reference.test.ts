/**
 * The TypeScript reference for every tensor type against llama.cpp's own ggml (fixtures made by
 * fixtures/gen-ggml-fixtures.c): weight quantizers and activation quantizers bit-identical,
 * dequantization bit-exact on random blocks, dot products equal to ggml's up to f32 rounding.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { TENSOR_TYPES, actTypeOf, rowBytes, typeInfo, tensorTypeOfGgmlId } from "../../src/kernels/formats.js";
import { dequantizeRow, quantizeActRow, quantizeRow, vecDot } from "../../src/kernels/quant/index.js";
import { ggmlFixture } from "./ggml-fixtures.js";

function firstDiff(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return -1;
}

describe("formats", () => {
  test("ids, blocks, activation types", () => {
    assert.equal(typeInfo("Q4_K").blockBytes, 144);
    assert.equal(rowBytes("Q6_K", 512), 420);
    assert.equal(rowBytes("Q8_K", 256), 292);
    assert.throws(() => rowBytes("Q4_K", 100), /256/);
    assert.equal(actTypeOf("Q4_1"), "Q8_1");
    assert.equal(actTypeOf("IQ4_NL"), "Q8_0");
    assert.equal(actTypeOf("Q5_K"), "Q8_K");
    for (const t of TENSOR_TYPES) assert.equal(tensorTypeOfGgmlId(typeInfo(t).ggmlId), t);
    assert.equal(tensorTypeOfGgmlId(15), undefined); // Q8_K is not a weight type
  });
});

for (const type of TENSOR_TYPES) {
  describe(`${type} against ggml`, () => {
    const fx = ggmlFixture(type);
    const { rows, cols } = fx;
    const wrow = rowBytes(type, cols), arow = rowBytes(fx.act, cols);

    test("activation type is ggml's vec_dot_type", () => assert.equal(fx.act, actTypeOf(type)));

    test("quantizeRow is bit-identical to ggml_quantize_chunk", () => {
      const out = new Uint8Array(rows * wrow);
      for (let r = 0; r < rows; r++) quantizeRow(type, fx.input, r * cols, out, r * wrow, cols);
      for (let r = 0; r < rows; r++) {
        const d = firstDiff(out.subarray(r * wrow, (r + 1) * wrow), fx.quant.subarray(r * wrow, (r + 1) * wrow));
        assert.equal(d, -1, `row ${r}: first differing byte ${d} of ${wrow}`);
      }
    });

    test("dequantizeRow is bit-exact with ggml on random blocks", () => {
      const out = new Float32Array(fx.randRows * cols);
      for (let r = 0; r < fx.randRows; r++) dequantizeRow(type, fx.rand, r * wrow, out, r * cols, cols);
      const a = new Uint32Array(out.buffer), e = new Uint32Array(fx.randDequant.buffer, fx.randDequant.byteOffset, out.length);
      for (let i = 0; i < out.length; i++) {
        if (a[i] !== e[i]) assert.fail(`value ${i}: ${out[i]} vs ggml ${fx.randDequant[i]}`);
      }
    });

    test(`activations (${fx.act}) are bit-identical to ggml's CPU backend`, () => {
      const out = new Uint8Array(rows * arow);
      for (let r = 0; r < rows; r++) quantizeActRow(fx.act, fx.input, r * cols, out, r * arow, cols);
      for (let r = 0; r < rows; r++) {
        const a = out.subarray(r * arow, (r + 1) * arow), e = new Uint8Array(fx.actBytes.subarray(r * arow, (r + 1) * arow));
        if (fx.act === "Q8_K") {
          // ggml leaves bsums untouched in an all-zero block (d = 0); ours are 0
          for (let b = 0; b < cols / 256; b++) {
            const o = b * 292;
            if (new DataView(e.buffer).getFloat32(o, true) === 0) e.set(a.subarray(o + 260, o + 292), o + 260);
          }
        }
        const d = firstDiff(a, e);
        assert.equal(d, -1, `row ${r}: first differing byte ${d}`);
      }
    });

    test("vecDot equals ggml's vec_dot up to f32 rounding", () => {
      const w = new Float32Array(cols), xv = new Float32Array(cols);
      const check = (wb: Uint8Array, wr: number, xr: number, expected: number, what: string): void => {
        const got = vecDot(type, cols, wb, wr * wrow, fx.actBytes, xr * arow);
        dequantizeRow(type, wb, wr * wrow, w, 0, cols);
        // activations as values: dequantize through the weight path where the layouts agree
        let mag = 0;
        actValues(fx.act, fx.actBytes, xr * arow, xv, cols);
        for (let i = 0; i < cols; i++) mag += Math.abs(w[i]! * xv[i]!);
        assert.ok(Math.abs(got - expected) <= 2e-6 * mag + 1e-30, `${what}: ${got} vs ggml ${expected} (sum |w x| ${mag})`);
      };
      for (let r = 0; r < rows; r++) check(fx.quant, r, (r + 1) % rows, fx.dot[r]!, `row ${r}`);
      for (let r = 0; r < fx.randRows; r++) check(fx.rand, r, (r + 3) % rows, fx.dotRand[r]!, `random row ${r}`);
    });
  });
}

/** Values of an activation row (for error bounds). */
function actValues(act: string, b: Uint8Array, o: number, out: Float32Array, n: number): void {
  const dv = new DataView(b.buffer, b.byteOffset);
  switch (act) {
    case "Q8_0":
    case "F32":
    case "F16":
    case "BF16":
      dequantizeRow(act, b, o, out, 0, n);
      return;
    case "Q8_1":
      for (let k = 0; k < n / 32; k++) {
        const d = halfAt(b, o + 36 * k);
        for (let j = 0; j < 32; j++) out[32 * k + j] = d * dv.getInt8(o + 36 * k + 4 + j);
      }
      return;
    case "Q8_K":
      for (let k = 0; k < n / 256; k++) {
        const d = dv.getFloat32(o + 292 * k, true);
        for (let j = 0; j < 256; j++) out[256 * k + j] = d * dv.getInt8(o + 292 * k + 4 + j);
      }
  }
}

function halfAt(b: Uint8Array, o: number): number {
  const f = new Float32Array(1);
  dequantizeRow("F16", b, o, f, 0, 1);
  return f[0]!;
}
