/**
 * WasmBackend's kernels of every tensor type (1, 2 and 3 threads, every kernel split over all
 * threads however small) against the TypeScript reference: activation and weight quantizers
 * byte-identical, matmul (decode and prompt paths) equal up to f32 reassociation, on odd row
 * counts, several column counts and 1..40 tokens.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Arena } from "../../src/kernels/arena.js";
import { ACT_TYPES, TENSOR_TYPES, actTypeOf, rowBytes, typeInfo, type TensorType } from "../../src/kernels/formats.js";
import { dequantizeRow } from "../../src/kernels/quant/index.js";
import { ReferenceKernels } from "../../src/kernels/reference.js";
import type { WasmKernels } from "../../src/kernels/wasm.js";
import { actValues, backendsPerBuild, randomValues, randomWeights, rng } from "./type-helpers.js";
import { ggmlFixture } from "./ggml-fixtures.js";

const THREADS = [1, 2, 3];
const { builds: BUILDS, backends } = await backendsPerBuild(THREADS);

/** Columns to test per block size. */
function colsFor(type: TensorType): number[] {
  const bv = typeInfo(type).blockValues;
  // Q4_0 2560: with 64 tokens its relaxed prefill's expanded activations (160 bytes per block and
  // token) do not fit the scratch for all 80 blocks, so the columns run in slabs
  if (type === "Q4_0") return [32, 96, 288, 1056, 2560];
  return bv === 256 ? [256, 768, 1280] : bv === 32 ? [32, 96, 288, 1056] : [7, 64, 172, 520];
}

for (const build of BUILDS) for (const threads of THREADS) {
  const key = `${build} ${threads}`;
  describe(`every type, wasm ${build} ${threads} thread(s) vs reference`, () => {
    let arena: Arena;
    let k: WasmKernels;
    let ref: ReferenceKernels;
    let base: number;
    const r = rng(99 + threads);
    before(() => {
      arena = new Arena(32 << 20, `types-${threads}`);
      k = backends.get(key)!.bind(arena);
      ref = new ReferenceKernels(arena, k.fusedTypes);
      base = arena.used;
    });
    after(() => backends.get(key)!.idle());
    let top = 0;
    const alloc = (n: number): number => {
      const p = Math.ceil(top / 64) * 64;
      top = p + n;
      assert.ok(top <= arena.size, "test arena too small");
      return p;
    };

    test("quantizeAct: every activation type byte-identical", () => {
      for (const act of ACT_TYPES) {
        const bv = typeInfo(act).blockValues;
        for (const n of bv === 1 ? [1, 7, 64, 1000, 20000] : [bv, 3 * bv, 40 * bv, 21 * 1024]) {
          top = base;
          const src = alloc(n * 4), d1 = alloc(rowBytes(act, n)), d2 = alloc(rowBytes(act, n));
          const v = randomValues(n, r);
          if (n >= 64) { // exact ties at amax 127 (id = 1): x.5 rounds to even
            v[0] = 127;
            for (let i = 1; i < 32; i++) v[i] = (i % 2 ? 1 : -1) * (((i * 5) % 100) + 0.5);
          }
          if (bv > 1 && n >= 3 * bv) {
            // the quantizers' exact path (their fast rounding is exact for finite products only):
            // a block with an infinity, and for Q8_0 one so small that 127 / amax overflows (Q8_1's
            // and Q8_K's sums differ from the reference's there, and every type's NaN: see
            // docs/roadmap.md)
            if (act === "Q8_0") for (let i = bv; i < 2 * bv; i++) v[i] = (i % 3 - 1) * 1e-39;
            v[2 * bv + 5] = -Infinity;
          }
          arena.f32(src, n).set(v);
          ref.quantizeAct(act, d1, src, n);
          arena.u8(d2, rowBytes(act, n)).fill(0xa5);
          k.quantizeAct(act, d2, src, n);
          assert.deepEqual(arena.u8(d2, rowBytes(act, n)), arena.u8(d1, rowBytes(act, n)), `${act} n=${n}`);
        }
      }
    });

    test("quantizeWeights: every type byte-identical with the reference (and ggml's fixtures)", () => {
      for (const type of TENSOR_TYPES) {
        const fx = ggmlFixture(type);
        const n = fx.rows * fx.cols;
        top = base;
        const src = alloc(n * 4), dst = alloc(rowBytes(type, n));
        arena.f32(src, n).set(fx.input);
        k.quantizeWeights(type, dst, src, n);
        assert.deepEqual(arena.u8(dst, rowBytes(type, n)), fx.quant, `${type}: ggml's bytes`);
        const m = 8 * 1024;
        const src2 = alloc(m * 4), d1 = alloc(rowBytes(type, m)), d2 = alloc(rowBytes(type, m));
        arena.f32(src2, m).set(randomValues(m, r));
        ref.quantizeWeights(type, d1, src2, m);
        k.quantizeWeights(type, d2, src2, m);
        assert.deepEqual(arena.u8(d2, rowBytes(type, m)), arena.u8(d1, rowBytes(type, m)), `${type}: random values`);
      }
    });

    for (const type of TENSOR_TYPES) {
      test(`matmul ${type}: odd rows, ${colsFor(type).join("/")} columns, 1..70 tokens`, () => {
        const act = actTypeOf(type);
        for (const cols of colsFor(type)) {
          for (const [rows, nTok] of [[1, 1], [3, 2], [7, 1], [13, 3], [37, 1], [67, 1], [130, 1], [5, 9], [33, 17], [9, 40], [6, 70]] as const) {
            top = base;
            const wb = rowBytes(type, cols), xb = rowBytes(act, cols);
            const w = alloc(rows * wb), xf = alloc(nTok * cols * 4), x = alloc(nTok * xb);
            const o1 = alloc(rows * nTok * 4), o2 = alloc(rows * nTok * 4);
            const wbytes = randomWeights(type, rows, cols, r);
            arena.u8(w, rows * wb).set(wbytes);
            arena.f32(xf, nTok * cols).set(randomValues(nTok * cols, r));
            ref.quantizeAct(act, x, xf, nTok * cols);
            ref.matmul(type, o1, w, x, rows, cols, nTok);
            arena.f32(o2, rows * nTok).fill(NaN);
            k.matmul(type, o2, w, x, rows, cols, nTok);
            const got = arena.f32(o2, rows * nTok), want = arena.f32(o1, rows * nTok);
            const xbytes = arena.u8(x, nTok * xb).slice();
            const wv = new Float32Array(cols);
            let exact = 0;
            for (let t = 0; t < nTok; t++) {
              const xv = actValues(act, xbytes, t * xb, cols);
              for (let row = 0; row < rows; row++) {
                const i = t * rows + row;
                if (Object.is(got[i], want[i])) { exact++; continue; }
                dequantizeRow(type, wbytes, row * wb, wv, 0, cols);
                let mag = 0;
                for (let c = 0; c < cols; c++) mag += Math.abs(wv[c]! * xv[c]!);
                const tol = 1e-6 * mag + 1e-30;
                if (!(Math.abs(got[i]! - want[i]!) <= tol)) {
                  assert.fail(`${type} rows ${rows} cols ${cols} nTok ${nTok}: out[t ${t}, row ${row}] = ${got[i]}, reference ${want[i]} (tolerance ${tol})`);
                }
              }
            }
            // the integer types accumulate exactly like the reference
            if (typeInfo(type).blockValues > 1) assert.equal(exact, rows * nTok, `${type} ${rows}x${cols} x${nTok}: ${exact} of ${rows * nTok} bit-identical`);
          }
        }
      });
    }
  });
}
