/**
 * fmaF32, the reference's f32 fused multiply-add (quant/common.ts), against cases worked out by
 * hand where a multiply and an add round differently from one fused rounding, including the one
 * a naive f64 evaluation gets wrong (double rounding); and the WebAssembly Q8_0 and Q4_0 matmuls'
 * accumulation: fused where their fusedTypes say so, matching the reference of that kind bit for bit.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { fmaF32 } from "../../src/kernels/quant/common.js";
import { Arena } from "../../src/kernels/arena.js";
import { ReferenceKernels } from "../../src/kernels/reference.js";
import { createBackend } from "../../src/kernels/backend.js";
import { q8RowBytes } from "../../src/kernels/q8.js";
import { rowBytes } from "../../src/kernels/formats.js";

const f = Math.fround;

test("fmaF32 rounds once: the cases a multiply then an add, and an f64 evaluation, get wrong", () => {
  // (1 + 2^-12)^2 - (1 + 2^-11) = 2^-24 exactly; unfused, the square rounds to 1 + 2^-11 and gives 0
  const a = 1 + 2 ** -12;
  assert.equal(fmaF32(a, a, -(1 + 2 ** -11)), 2 ** -24);
  assert.equal(f(f(a * a) - (1 + 2 ** -11)), 0);
  // double rounding: (1 + 2^-23) * 2^-24 (1 - 2^-23) + (1 + 2^-23) = 1 + 3 * 2^-24 - 2^-70, just below
  // the midpoint of 1 + 2^-23 and 1 + 2^-22; f64 rounds it onto the midpoint, whose tie goes to the even 1 + 2^-22
  const x = 1 + 2 ** -23, y = 2 ** -24 * (1 - 2 ** -23);
  assert.equal(f(x), x);
  assert.equal(f(y), y);
  assert.equal(f(x * y + x), 1 + 2 ** -22, "the naive evaluation double-rounds");
  assert.equal(fmaF32(x, y, x), 1 + 2 ** -23);
  assert.equal(fmaF32(-x, y, -x), -(1 + 2 ** -23));
  // a true tie stays a tie: ties to even
  assert.equal(fmaF32(2 ** -24, 1, 1), 1);
  assert.equal(fmaF32(3 * 2 ** -24, 1, 1), 1 + 2 ** -22);
  // exact results and the ordinary case
  assert.equal(fmaF32(3, 5, 7), 22);
  assert.equal(fmaF32(f(0.1), f(0.2), f(0.3)), f(f(0.1) * f(0.2) + f(0.3)));
  assert.equal(fmaF32(Infinity, 1, 1), Infinity);
  assert.ok(Number.isNaN(fmaF32(Infinity, 0, 1)));
});

test("the WebAssembly Q8_0 and Q4_0 matmuls accumulate as their fusedTypes say (one token and eight)", async () => {
  const be = await createBackend({ threads: 1 });
  try {
    const arena = new Arena(8 << 20, "fma");
    const k = be.bind(arena);
    for (const type of ["Q8_0", "Q4_0"] as const) {
      const rows = 64, cols = 2048, nTok = 8, rb = rowBytes(type, cols), xb = q8RowBytes(cols);
      const w = arena.alloc(rows * rb), x = arena.alloc(nTok * xb), o = arena.alloc(rows * nTok * 4);
      const fused = arena.alloc(rows * nTok * 4), plain = arena.alloc(rows * nTok * 4);
      let s = 99;
      const rnd = (): number => ((s = (s * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
      const bb = type === "Q8_0" ? 34 : 18;
      for (const [p, bytes, block] of [[w, rows * rb, bb], [x, nTok * xb, 34]] as const) {
        const u = arena.u8(p, bytes);
        for (let i = 0; i < u.length; i++) u[i] = rnd();
        // f16 scales near 0.01; int8 levels in -127..127
        for (let b = 0; b < u.length; b += block) {
          u[b] = 0x1e; u[b + 1] = 0x21 + (b % 7);
          if (block === 34) for (let j = 2; j < 34; j++) if (u[b + j] === 0x80) u[b + j] = 0x81;
        }
      }
      new ReferenceKernels(arena, [type]).matmul(type, fused, w, x, rows, cols, nTok);
      new ReferenceKernels(arena, []).matmul(type, plain, w, x, rows, cols, nTok);
      const differ = arena.f32(fused, rows * nTok).some((v, i) => v !== arena.f32(plain, rows * nTok)[i]);
      assert.ok(differ, `${type}: the data must tell one rounding from two`);
      const isFused = k.fusedTypes.includes(type);
      for (const n of [1, nTok]) {
        k.matmul(type, o, w, x, rows, cols, n);
        assert.deepEqual(arena.f32(o, rows * n), arena.f32(isFused ? fused : plain, rows * n), `${type}, ${n} token(s), fused ${isFused}`);
      }
    }
  } finally {
    await be.close();
  }
});
