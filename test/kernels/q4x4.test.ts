/**
 * Q4_0x4, the relaxed build's layout of loaded Q4_0 matrices (formats.ts MatmulType,
 * assembly/q4x4.ts): the reference's interleaving against the layout's definition (each value
 * read back from the bytes where the definition puts it, against dequantizeRow of the Q4_0 row),
 * the WebAssembly repack against the reference's, and the matmuls over the layout (decode and
 * prefill, 1-3 threads) bit for bit against the reference and against Q4_0's own kernels on the
 * rows before repacking.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Arena } from "../../src/kernels/arena.js";
import { ReferenceKernels } from "../../src/kernels/reference.js";
import type { WasmKernels } from "../../src/kernels/wasm.js";
import { rowBytes } from "../../src/kernels/formats.js";
import { dequantizeRow } from "../../src/kernels/quant/index.js";
import { deinterleaveQ4_0x4, interleaveQ4_0x4 } from "../../src/kernels/quant/interleave.js";
import { F16_TO_F32 } from "../../src/core/numbers.js";
import { backendsPerBuild, randomValues, randomWeights, rng } from "./type-helpers.js";

const THREADS = [1, 2, 3];
const { builds: BUILDS, backends } = await backendsPerBuild(THREADS);

describe("Q4_0x4 layout (reference)", () => {
  test("every value sits where the layout's definition puts it", () => {
    const r = rng(71);
    for (const [rows, cols] of [[4, 32], [8, 96], [12, 1056]] as const) {
      const nb = cols / 32, rb = rowBytes("Q4_0", cols);
      const w = randomWeights("Q4_0", rows, cols, r);
      const x4 = new Uint8Array(w.length);
      interleaveQ4_0x4(w, 0, x4, 0, rows, nb);
      const want = new Float32Array(cols);
      for (let row = 0; row < rows; row++) {
        dequantizeRow("Q4_0", w, row * rb, want, 0, cols);
        const g = row >> 2, lane = row & 3;
        for (let b = 0; b < nb; b++) {
          // the definition: 72 bytes per block of the group, four f16 scales, then V_0..V_3 with
          // qs[4k..4k+3] of row `lane` at bytes 4 lane..4 lane+3 of V_k
          const o = g * 4 * rb + b * 72;
          const d = F16_TO_F32[x4[o + 2 * lane]! | (x4[o + 2 * lane + 1]! << 8)]!;
          for (let j = 0; j < 32; j++) {
            const q = j & 15;
            const byte = x4[o + 8 + 16 * (q >> 2) + 4 * lane + (q & 3)]!;
            const level = j < 16 ? byte & 15 : byte >> 4;
            assert.equal(Math.fround(d * (level - 8)), want[b * 32 + j], `${rows}x${cols} row ${row} value ${b * 32 + j}`);
          }
        }
      }
      const back = new Uint8Array(w.length);
      deinterleaveQ4_0x4(x4, 0, back, 0, rows, nb);
      assert.deepEqual(back, w, "deinterleave(interleave(w)) = w");
    }
  });

  test("row counts that are not whole groups of four are refused", () => {
    assert.throws(() => interleaveQ4_0x4(new Uint8Array(6 * 18), 0, new Uint8Array(6 * 18), 0, 6, 1), /6 rows are not whole groups of four/);
  });
});

for (const build of BUILDS) for (const threads of THREADS) {
  describe(`Q4_0x4, wasm ${build} ${threads} thread(s)`, () => {
    let arena: Arena;
    let k: WasmKernels;
    let ref: ReferenceKernels;
    let base: number;
    const r = rng(9100 + threads);
    before(() => {
      arena = new Arena(48 << 20, `q4x4-${threads}`);
      k = backends.get(`${build} ${threads}`)!.bind(arena);
      ref = new ReferenceKernels(arena, k.fusedTypes);
      base = arena.used;
    });
    after(() => backends.get(`${build} ${threads}`)!.idle());

    const alloc = (() => {
      let top = 0;
      return {
        reset: () => { top = base; },
        take: (n: number): number => {
          const p = Math.ceil(top / 64) * 64;
          top = p + n;
          assert.ok(top <= arena.size, "test arena too small");
          return p;
        },
      };
    })();

    test(build === "relaxed" ? "repackWeights makes the reference's Q4_0x4 bytes" : "repackWeights leaves Q4_0 as it is (no kernels for Q4_0x4 in this build)", () => {
      for (const [rows, cols] of [[4, 32], [12, 96], [36, 4096]] as const) {
        alloc.reset();
        const rb = rowBytes("Q4_0", cols);
        const w = randomWeights("Q4_0", rows, cols, r);
        const p = alloc.take(rows * rb);
        arena.u8(p, rows * rb).set(w);
        const got = k.repackWeights("Q4_0", p, rows, cols);
        const want = new Uint8Array(w.length);
        if (build === "relaxed") interleaveQ4_0x4(w, 0, want, 0, rows, cols / 32);
        else want.set(w);
        assert.equal(got, build === "relaxed" ? "Q4_0x4" : "Q4_0");
        assert.deepEqual(arena.u8(p, rows * rb), want, `${rows}x${cols}`);
      }
      alloc.reset();
      const p = alloc.take(6 * 18);
      assert.equal(k.repackWeights("Q4_0", p, 6, 32), "Q4_0", "6 rows: not whole groups, left as Q4_0");
      assert.equal(k.repackWeights("Q8_0", p, 4, 32), "Q8_0");
    });

    if (build !== "relaxed") return;

    const check = (rows: number, cols: number, nTok: number) => {
      alloc.reset();
      const rb = rowBytes("Q4_0", cols), xb = rowBytes("Q8_0", cols);
      const w = alloc.take(rows * rb), w4 = alloc.take(rows * rb), x = alloc.take(nTok * xb), xf = alloc.take(nTok * cols * 4);
      const oRef = alloc.take(rows * nTok * 4), oQ4 = alloc.take(rows * nTok * 4), oX4 = alloc.take(rows * nTok * 4);
      const wBytes = randomWeights("Q4_0", rows, cols, r);
      arena.u8(w, rows * rb).set(wBytes);
      arena.u8(w4, rows * rb).set(wBytes);
      assert.equal(k.repackWeights("Q4_0", w4, rows, cols), "Q4_0x4");
      arena.f32(xf, nTok * cols).set(randomValues(nTok * cols, r));
      ref.quantizeAct("Q8_0", x, xf, nTok * cols);
      ref.matmul("Q4_0x4", oRef, w4, x, rows, cols, nTok);
      arena.f32(oQ4, rows * nTok).fill(NaN);
      arena.f32(oX4, rows * nTok).fill(NaN);
      k.matmul("Q4_0", oQ4, w, x, rows, cols, nTok);
      k.matmul("Q4_0x4", oX4, w4, x, rows, cols, nTok);
      const want = arena.f32(oRef, rows * nTok), q4 = arena.f32(oQ4, rows * nTok), got = arena.f32(oX4, rows * nTok);
      for (let i = 0; i < rows * nTok; i++) {
        const at = `${rows}x${cols} nTok ${nTok}: out[t ${Math.floor(i / rows)}, row ${i % rows}]`;
        if (!Object.is(got[i], want[i])) assert.fail(`${at} = ${got[i]}, reference ${want[i]}`);
        if (!Object.is(got[i], q4[i])) assert.fail(`${at} = ${got[i]}, Q4_0 kernels on the rows before repacking ${q4[i]}`);
      }
    };

    test("one token (two groups per pass, odd group counts): bit-identical with the reference and Q4_0", () => {
      for (const rows of [4, 8, 12, 20, 36, 100, 260]) {
        for (const cols of [32, 96, 1056]) check(rows, cols, 1);
      }
      check(64, 4096, 1);
      check(12, 11008, 1);
    });

    test("2..9, 17 and 40 tokens (lane = row prefill, slabs, chunks of tokens): bit-identical", () => {
      for (const rows of [4, 12, 36]) {
        for (const cols of [32, 288]) for (let nTok = 2; nTok <= 9; nTok++) check(rows, cols, nTok);
      }
      check(8, 2048, 17);
      check(12, 96, 40);
      check(4, 70016, 5);
    });

    test("a reference reading Q4_0x4 agrees with one reading the rows before repacking", () => {
      alloc.reset();
      const rows = 12, cols = 96, nTok = 3;
      const rb = rowBytes("Q4_0", cols), xb = rowBytes("Q8_0", cols);
      const wBytes = randomWeights("Q4_0", rows, cols, r);
      const w = alloc.take(rows * rb), w4 = alloc.take(rows * rb), x = alloc.take(nTok * xb), xf = alloc.take(nTok * cols * 4);
      const o1 = alloc.take(rows * nTok * 4), o2 = alloc.take(rows * nTok * 4);
      arena.u8(w, rows * rb).set(wBytes);
      const x4 = new Uint8Array(wBytes.length);
      interleaveQ4_0x4(wBytes, 0, x4, 0, rows, cols / 32);
      arena.u8(w4, rows * rb).set(x4);
      arena.f32(xf, nTok * cols).set(randomValues(nTok * cols, r));
      ref.quantizeAct("Q8_0", x, xf, nTok * cols);
      ref.matmul("Q4_0", o1, w, x, rows, cols, nTok);
      ref.matmul("Q4_0x4", o2, w4, x, rows, cols, nTok);
      assert.deepEqual(arena.f32(o2, rows * nTok), arena.f32(o1, rows * nTok));
    });

    test("a Q4_0x4 matmul of rows that are not whole groups of four is refused", () => {
      alloc.reset();
      const p = alloc.take(8 * 18 + 64 * 4);
      assert.throws(() => k.matmul("Q4_0x4", p + 8 * 18, p, p, 6, 32, 1), /matmul Q4_0x4 rows: bad size 6 \(must be a multiple of 4\)/);
    });
  });
}
