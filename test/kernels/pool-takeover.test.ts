/**
 * The pool's takeover of late chunks (pool-worker.ts CHUNK_FREE): with takeoverAfter = 0 the main
 * thread takes over every matmul chunk a worker has not committed the moment it runs out of
 * chunks, so commits and takeovers race on nearly every job. The outputs must equal one thread's
 * bit for bit, and a worker whose chunk was taken over must never write afterwards: each matmul's
 * output is changed in place right after (siluMul), which a late write would undo. Only
 * one-token matmuls run with shadows (wasm.ts dispatchMatmul); the 3- and 9-token ones check that
 * the direct writes stay right next to them.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Arena } from "../../src/kernels/arena.js";
import { actTypeOf, rowBytes, type TensorType } from "../../src/kernels/formats.js";
import { quantizeActRow } from "../../src/kernels/quant/index.js";
import { WasmBackend, type WasmKernels } from "../../src/kernels/wasm.js";
import { randomValues, randomWeights, rng } from "./type-helpers.js";

const TYPES: TensorType[] = ["Q8_0", "Q4_0", "Q4_K", "Q6_K", "F16"];

describe("pool takeover of late chunks", () => {
  let one: WasmBackend;
  const many = new Map<number, WasmBackend>();
  before(async () => {
    one = await WasmBackend.create(1);
    for (const t of [2, 3]) {
      const be = await WasmBackend.create(t, { alwaysSplit: true });
      be.pool.takeoverAfter = 0;
      many.set(t, be);
    }
  });
  after(async () => {
    await one.close();
    for (const be of many.values()) await be.close();
  });

  for (const threads of [2, 3]) {
    test(`${threads} threads: every matmul equals one thread's, bit for bit, and no chunk is written late`, () => {
      const be = many.get(threads)!;
      const a1 = new Arena(48 << 20, "one"), a2 = new Arena(48 << 20, `takeover-${threads}`);
      const k1 = one.bind(a1), k2 = be.bind(a2);
      const r = rng(7 + threads);
      const before = be.pool.takeovers;
      try {
        for (const type of TYPES) {
          const cols = type === "Q4_K" || type === "Q6_K" ? 512 : 256;
          for (const rows of [37, 130, 515]) {
            const w = randomWeights(type, rows, cols, r);
            for (const nTok of [1, 3, 9]) {
              const act = actTypeOf(type);
              const xf = randomValues(cols * nTok, r);
              const xb = new Uint8Array(nTok * rowBytes(act, cols));
              for (let t = 0; t < nTok; t++) quantizeActRow(act, xf, t * cols, xb, t * rowBytes(act, cols), cols);
              const run = (a: Arena, k: WasmKernels): Float32Array => {
                const pw = a.alloc(w.length), px = a.alloc(xb.length), po = a.alloc(rows * nTok * 4), pu = a.alloc(rows * nTok * 4);
                a.u8(pw, w.length).set(w);
                a.u8(px, xb.length).set(xb);
                a.f32(pu, rows * nTok).fill(0.5);
                const res = new Float32Array(rows * nTok * 4);
                for (let rep = 0; rep < 4; rep++) {
                  k.matmul(type, po, pw, px, rows, cols, nTok);
                  res.set(a.f32(po, rows * nTok), rep * rows * nTok);
                  // in place: a late write of the matmul's chunk would put its values back
                  k.siluMul(po, pu, rows * nTok);
                }
                // the last siluMul's result, once every worker had time to write anything late
                const t0 = performance.now();
                while (performance.now() - t0 < 2);
                const last = a.f32(po, rows * nTok);
                return Float32Array.from([...res, ...last]);
              };
              const got = run(a2, k2), want = run(a1, k1);
              assert.deepEqual(got, want, `${type} rows ${rows} nTok ${nTok}`);
              // on a loaded machine the workers may finish every chunk of a pass first (seen with
              // two busy processes on 2 cores): one-token matmuls again, checked the same way,
              // until the main thread has taken one over (a few seconds at most)
              if (type === TYPES[TYPES.length - 1] && rows === 515 && nTok === 9) {
                const n = 515, c = 256, rb = rowBytes("Q8_0", c);
                const at = (a: Arena) => ({ pw: a.alloc(n * rb), px: a.alloc(rb), po: a.alloc(n * 4) });
                const b1 = at(a1), b2 = at(a2);
                const once = (a: Arena, k: WasmKernels, p: ReturnType<typeof at>, w1: Uint8Array, x1: Uint8Array): Float32Array => {
                  a.u8(p.pw, w1.length).set(w1);
                  a.u8(p.px, x1.length).set(x1);
                  k.matmul("Q8_0", p.po, p.pw, p.px, n, c, 1);
                  return Float32Array.from(a.f32(p.po, n));
                };
                const t0 = performance.now();
                while (be.pool.takeovers === before && performance.now() - t0 < 5000) {
                  const w1 = randomWeights("Q8_0", n, c, r), x1 = new Uint8Array(rb);
                  quantizeActRow("Q8_0", randomValues(c, r), 0, x1, 0, c);
                  assert.deepEqual(once(a2, k2, b2, w1, x1), once(a1, k1, b1, w1, x1), "Q8_0 rows 515, one token, until a takeover");
                }
              }
            }
          }
        }
      } finally {
        one.release(a1);
        be.release(a2);
      }
      assert.ok(be.pool.takeovers > before, `the main thread took chunks over (${be.pool.takeovers - before})`);
    });
  }
});
