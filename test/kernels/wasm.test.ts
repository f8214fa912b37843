/**
 * WasmBackend (1, 2 and 3 threads, every kernel split over all threads however small) against the
 * TypeScript reference kernels, on random data and odd sizes.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Arena } from "../../src/kernels/arena.js";
import { ATTENTION_ENTRY_BYTES, ATTENTION_ENTRY_WORDS, type Kernels } from "../../src/kernels/kernels.js";
import { ReferenceBackend, ReferenceKernels } from "../../src/kernels/reference.js";
import { WasmBackend, availableBuilds, createBackend } from "../../src/kernels/wasm.js";
import { OP_MATMUL } from "../../src/kernels/pool-worker.js";
import { q8RowBytes } from "../../src/kernels/q8.js";
import type { TensorType } from "../../src/kernels/formats.js";
import { F16_TO_F32 } from "../../src/core/numbers.js";

/** Deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A fresh region allocator over one big arena (pointers are reused between cases). */
class Scratch {
  private top: number;
  constructor(readonly arena: Arena, private readonly base: number) {
    this.top = base;
  }
  reset(): void {
    this.top = this.base;
  }
  alloc(n: number): number {
    const p = Math.ceil(this.top / 64) * 64;
    this.top = p + n;
    assert.ok(this.top <= this.arena.size, "test arena too small");
    return p;
  }
}

function fillF32(a: Arena, p: number, n: number, r: () => number, scale = 1): void {
  const f = a.f32(p, n);
  for (let i = 0; i < n; i++) f[i] = (r() * 2 - 1) * scale;
}

/** Blocks of 32 with varied magnitudes (incl. all-zero and tiny blocks: f16 subnormal scales). */
function fillBlocks(a: Arena, p: number, n: number, r: () => number): void {
  const f = a.f32(p, n);
  for (let b = 0; b < n / 32; b++) {
    const kind = b % 7;
    const mag = kind === 3 ? 0 : kind === 5 ? 1e-6 : kind === 6 ? 300 : Math.exp(r() * 6 - 3);
    for (let i = 0; i < 32; i++) f[b * 32 + i] = (r() * 2 - 1) * mag;
  }
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, rel: number, abs: number, mag?: ArrayLike<number>): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i]!, a = actual[i]!;
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    const m = mag ? mag[i]! : Math.abs(e);
    if (!(Math.abs(a - e) <= abs + rel * m)) {
      assert.fail(`${what}[${i}]: got ${a}, expected ${e} (|diff| ${Math.abs(a - e)}, tolerance ${abs + rel * m})`);
    }
  }
}

const THREADS = [1, 2, 3];
const backends = new Map<number, WasmBackend>();

before(async () => {
  for (const t of THREADS) backends.set(t, await WasmBackend.create(t, { alwaysSplit: true }));
});

after(async () => {
  for (const b of backends.values()) await b.close();
});

for (const threads of THREADS) {
  describe(`wasm kernels, ${threads} thread(s)`, () => {
    let arena: Arena;
    let k: Kernels;
    let ref: ReferenceKernels;
    let s: Scratch;
    const r = rng(1234 + threads);

    before(() => {
      arena = new Arena(48 << 20, `test-${threads}`);
      k = backends.get(threads)!.bind(arena);
      ref = new ReferenceKernels(arena, k.fusedTypes);
      s = new Scratch(arena, arena.used);
    });
    after(() => backends.get(threads)!.idle());

    test("quantizeQ8 is byte-identical (ties, zero and subnormal scales)", () => {
      for (const n of [32, 96, 288, 4128, 32 * 700]) {
        s.reset();
        const src = s.alloc(n * 4), d1 = s.alloc((n / 32) * 34), d2 = s.alloc((n / 32) * 34);
        fillBlocks(arena, src, n, r);
        // a block of exact ties: amax 127 -> d = 1, id = 1, x.5 rounds to even
        const f = arena.f32(src, 32);
        for (let i = 0; i < 32; i++) f[i] = i === 0 ? 127 : (i % 2 ? 1 : -1) * (((i * 5) % 100) + 0.5);
        ref.quantizeQ8(d1, src, n);
        k.quantizeQ8(d2, src, n);
        assert.deepEqual(arena.u8(d2, (n / 32) * 34), arena.u8(d1, (n / 32) * 34), `n=${n}`);
      }
    });

    /** Random Q8_0 weights and inputs; the reference product in o1, this backend's in o2. */
    const bothMatmuls = (rows: number, cols: number, nTok: number) => {
      s.reset();
      const rb = q8RowBytes(cols);
      const wf = s.alloc(rows * cols * 4), w = s.alloc(rows * rb);
      const xf = s.alloc(nTok * cols * 4), x = s.alloc(nTok * rb);
      const o1 = s.alloc(rows * nTok * 4), o2 = s.alloc(rows * nTok * 4);
      fillBlocks(arena, wf, rows * cols, r);
      fillBlocks(arena, xf, nTok * cols, r);
      ref.quantizeQ8(w, wf, rows * cols);
      ref.quantizeQ8(x, xf, nTok * cols);
      ref.matmulQ8(o1, w, x, rows, cols, nTok);
      arena.f32(o2, rows * nTok).fill(NaN);
      k.matmulQ8(o2, w, x, rows, cols, nTok);
      return { rb, w, x, o1, o2 };
    };

    test("matmulQ8 on odd shapes, 1..7 tokens", () => {
      for (const rows of [1, 3, 5, 37, 100]) {
        for (const cols of [32, 96, 288, 4128]) {
          for (const nTok of [1, 3, 7]) {
            const { rb, w, x, o1, o2 } = bothMatmuls(rows, cols, nTok);
            // tolerance: 1e-5 of the sum of |terms| of each output
            const mag = new Float64Array(rows * nTok);
            const i8 = new Int8Array(arena.memory.buffer);
            const dv = new DataView(arena.memory.buffer);
            for (let t = 0; t < nTok; t++) {
              for (let row = 0; row < rows; row++) {
                let m = 0;
                for (let b = 0; b < cols / 32; b++) {
                  const wb = w + row * rb + b * 34, xb = x + t * rb + b * 34;
                  const sc = Math.abs(F16_TO_F32[dv.getUint16(wb, true)]! * F16_TO_F32[dv.getUint16(xb, true)]!);
                  for (let i = 0; i < 32; i++) m += Math.abs(i8[wb + 2 + i]! * i8[xb + 2 + i]!) * sc;
                }
                mag[t * rows + row] = m;
              }
            }
            assertClose(arena.f32(o2, rows * nTok), arena.f32(o1, rows * nTok), `matmul ${rows}x${cols} nTok ${nTok}`, 1e-5, 1e-30, mag);
          }
        }
      }
    });

    test("matmulQ8 prefill is bit-identical to the reference: token pairs, odd tails, several chunks", () => {
      // The prefill path takes two rows and a pair of tokens at a time (two pairs per unrolled
      // iteration, an odd last token alone) over chunks of tokens that fit the scratch: cols 4128
      // takes 30 tokens per chunk, so 33 and 64 tokens also cross chunk boundaries.
      for (const [rows, cols] of [[2, 64], [9, 4128], [6, 288], [64, 96]] as const) {
        for (const nTok of [2, 4, 5, 6, 8, 9, 11, 33, 64]) {
          const { o1, o2 } = bothMatmuls(rows, cols, nTok);
          assert.deepEqual(arena.f32(o2, rows * nTok), arena.f32(o1, rows * nTok), `matmul ${rows}x${cols} nTok ${nTok}`);
        }
      }
      // cols 70016: one token fits the scratch (210 KB widened) but two do not, so prefill falls
      // back to reading the Q8_0 activations directly.
      for (const nTok of [1, 2, 3]) {
        const rows = 3, cols = 70016;
        const { o1, o2 } = bothMatmuls(rows, cols, nTok);
        assert.deepEqual(arena.f32(o2, rows * nTok), arena.f32(o1, rows * nTok), `matmul ${rows}x${cols} nTok ${nTok}`);
      }
    });

    test("rmsnorm (also in place)", () => {
      for (const n of [1, 7, 64, 288, 4096, 5003]) {
        s.reset();
        const x = s.alloc(n * 4), wt = s.alloc(n * 4), o1 = s.alloc(n * 4), o2 = s.alloc(n * 4);
        fillF32(arena, x, n, r, 3);
        fillF32(arena, wt, n, r);
        ref.rmsnorm(o1, x, wt, n, 1e-5);
        k.rmsnorm(o2, x, wt, n, 1e-5);
        assertClose(arena.f32(o2, n), arena.f32(o1, n), `rmsnorm ${n}`, 1e-5, 1e-6);
        k.rmsnorm(x, x, wt, n, 1e-5);
        assertClose(arena.f32(x, n), arena.f32(o1, n), `rmsnorm in place ${n}`, 1e-5, 1e-6);
      }
    });

    test("rope", () => {
      for (const [nHeads, headDim] of [[1, 8], [8, 64], [32, 128], [3, 6], [4, 12]] as const) {
        s.reset();
        const n = nHeads * headDim;
        const v1 = s.alloc(n * 4), v2 = s.alloc(n * 4), cs = s.alloc(headDim * 4);
        fillF32(arena, v1, n, r, 2);
        arena.f32(v2, n).set(arena.f32(v1, n));
        const c = arena.f32(cs, headDim);
        for (let i = 0; i < headDim / 2; i++) {
          const a = r() * 100;
          c[i] = Math.cos(a);
          c[headDim / 2 + i] = Math.sin(a);
        }
        ref.rope(v1, nHeads, headDim, cs);
        k.rope(v2, nHeads, headDim, cs);
        assertClose(arena.f32(v2, n), arena.f32(v1, n), `rope ${nHeads}x${headDim}`, 1e-5, 1e-6);
      }
    });

    test("storeBf16 is bit-identical (ties, NaN, infinities)", () => {
      for (const n of [1, 5, 8, 37, 4096, 70001]) {
        s.reset();
        const src = s.alloc(n * 4), d1 = s.alloc(n * 2), d2 = s.alloc(n * 2);
        fillF32(arena, src, n, r, 1000);
        const u = new Uint32Array(arena.memory.buffer, src, n);
        const specials = [0x7fc00000, 0xffc00001, 0x7f800001, 0x7f800000, 0xff800000, 0x3f808000, 0x3f818000, 0x7f7fffff, 0x80000000, 0x00008000];
        for (let i = 0; i < Math.min(n, specials.length); i++) u[i] = specials[i]!;
        ref.storeBf16(d1, src, n);
        k.storeBf16(d2, src, n);
        assert.deepEqual(arena.u16(d2, n), arena.u16(d1, n), `n=${n}`);
      }
    });

    test("attention (GQA, odd positions)", () => {
      for (const [nHeads, nKvHeads] of [[8, 4], [32, 32], [32, 4]] as const) {
        for (const headDim of [8, 64, 128]) {
          for (const nPos of [1, 13, 300]) {
            if (nHeads * headDim * nPos > 32 * 128 * 300) continue;
            s.reset();
            const kvDim = nKvHeads * headDim;
            const q = s.alloc(nHeads * headDim * 4), kc = s.alloc(nPos * kvDim * 2), vc = s.alloc(nPos * kvDim * 2);
            const kf = s.alloc(nPos * kvDim * 4);
            const sc1 = s.alloc(nHeads * nPos * 4), sc2 = s.alloc(nHeads * nPos * 4);
            const o1 = s.alloc(nHeads * headDim * 4), o2 = s.alloc(nHeads * headDim * 4);
            fillF32(arena, q, nHeads * headDim, r, 2);
            fillF32(arena, kf, nPos * kvDim, r, 2);
            ref.storeBf16(kc, kf, nPos * kvDim);
            fillF32(arena, kf, nPos * kvDim, r, 3);
            ref.storeBf16(vc, kf, nPos * kvDim);
            ref.attention(o1, q, kc, vc, sc1, nHeads, nKvHeads, headDim, nPos);
            k.attention(o2, q, kc, vc, sc2, nHeads, nKvHeads, headDim, nPos);
            assertClose(arena.f32(o2, nHeads * headDim), arena.f32(o1, nHeads * headDim),
              `attention ${nHeads}/${nKvHeads} hd ${headDim} pos ${nPos}`, 2e-5, 2e-6);
          }
        }
      }
    });

    test("attentionSteps: a step's tokens at once equal attention() token by token", () => {
      for (const [nHeads, nKvHeads, headDim, nTok] of [[8, 4, 64, 5], [32, 4, 64, 8], [6, 2, 8, 1], [4, 4, 16, 11]] as const) {
        s.reset();
        const kvDim = nKvHeads * headDim, maxPos = 40;
        const kc = s.alloc(maxPos * kvDim * 2), vc = s.alloc(maxPos * kvDim * 2), kf = s.alloc(maxPos * kvDim * 4);
        fillF32(arena, kf, maxPos * kvDim, r, 2);
        ref.storeBf16(kc, kf, maxPos * kvDim);
        fillF32(arena, kf, maxPos * kvDim, r, 3);
        ref.storeBf16(vc, kf, maxPos * kvDim);
        const per = nHeads * maxPos * 4;
        const scratch = s.alloc(per * 3), sc1 = s.alloc(per);
        const table = s.alloc(nTok * ATTENTION_ENTRY_BYTES);
        const tokens = Array.from({ length: nTok }, (_, t) => {
          const q = s.alloc(nHeads * headDim * 4), o = s.alloc(nHeads * headDim * 4), oRef = s.alloc(nHeads * headDim * 4), oOne = s.alloc(nHeads * headDim * 4);
          fillF32(arena, q, nHeads * headDim, r, 2);
          // uneven positions, and two tokens reading another slot's rows (an offset cache)
          const nPos = 1 + ((t * 7) % 30), off = t % 3 === 2 ? 5 * kvDim * 2 : 0;
          return { q, o, oRef, oOne, nPos, kc: kc + off, vc: vc + off };
        });
        const e = arena.u32(table, nTok * ATTENTION_ENTRY_WORDS);
        tokens.forEach((x, t) => e.set([x.o, x.q, x.kc, x.vc, x.nPos], t * ATTENTION_ENTRY_WORDS));
        k.attentionSteps(table, nTok, scratch, per, nHeads, nKvHeads, headDim);
        for (const x of tokens) {
          // q is rounded to bf16 in place by the first call: the ones after see the same values
          k.attention(x.oOne, x.q, x.kc, x.vc, sc1, nHeads, nKvHeads, headDim, x.nPos);
          ref.attention(x.oRef, x.q, x.kc, x.vc, sc1, nHeads, nKvHeads, headDim, x.nPos);
          const n = nHeads * headDim;
          assert.deepEqual(arena.f32(x.o, n), arena.f32(x.oOne, n), `attentionSteps ${nHeads}/${nKvHeads} hd ${headDim}, ${nTok} tokens: pos ${x.nPos}`);
          assertClose(arena.f32(x.o, n), arena.f32(x.oRef, n), `attentionSteps vs reference, pos ${x.nPos}`, 2e-5, 2e-6);
        }
      }
      s.reset();
      const t0 = s.alloc(ATTENTION_ENTRY_BYTES), sc = s.alloc(1024);
      arena.u32(t0, ATTENTION_ENTRY_WORDS).set([s.alloc(256), s.alloc(256), s.alloc(256), s.alloc(256), 100]);
      assert.throws(() => k.attentionSteps(t0, 1, sc, 300, 4, 2, 16), /attentionSteps: token 0: 100 positions need 1600 bytes of scratch per thread/);
    });

    test("siluMul", () => {
      for (const n of [1, 3, 37, 4096, 11008, 20001]) {
        s.reset();
        const g1 = s.alloc(n * 4), g2 = s.alloc(n * 4), up = s.alloc(n * 4);
        fillF32(arena, g1, n, r, 20);
        const g = arena.f32(g1, n);
        const extremes = [0, -0, 100, -100, 88.5, -88.5, 1e-30, -1e-8];
        for (let i = 0; i < Math.min(n, extremes.length); i++) g[i] = extremes[i]!;
        fillF32(arena, up, n, r, 2);
        arena.f32(g2, n).set(g);
        ref.siluMul(g1, up, n);
        k.siluMul(g2, up, n);
        assertClose(arena.f32(g2, n), arena.f32(g1, n), `siluMul ${n}`, 1e-5, 1e-6);
      }
    });
  });
}

describe("wasm backend plumbing", () => {
  test("two arenas bound to the same backend", () => {
    const be = backends.get(2)!;
    const a1 = new Arena(2 << 20, "a1"), a2 = new Arena(3 << 20, "a2");
    const k1 = be.bind(a1), k2 = be.bind(a2);
    const r = rng(7);
    const rows = 37, cols = 288, rb = q8RowBytes(cols);
    const setup = (a: Arena, fusedTypes: readonly TensorType[]) => {
      const wf = a.alloc(rows * cols * 4), w = a.alloc(rows * rb), xf = a.alloc(cols * 4), x = a.alloc(rb);
      const o = a.alloc(rows * 4), oRef = a.alloc(rows * 4);
      fillBlocks(a, wf, rows * cols, r);
      fillBlocks(a, xf, cols, r);
      const ref = new ReferenceKernels(a, fusedTypes);
      ref.quantizeQ8(w, wf, rows * cols);
      ref.quantizeQ8(x, xf, cols);
      ref.matmulQ8(oRef, w, x, rows, cols, 1);
      return { w, x, o, oRef };
    };
    const p1 = setup(a1, k1.fusedTypes), p2 = setup(a2, k2.fusedTypes);
    for (let i = 0; i < 3; i++) {
      k1.matmulQ8(p1.o, p1.w, p1.x, rows, cols, 1);
      k2.matmulQ8(p2.o, p2.w, p2.x, rows, cols, 1);
    }
    assert.deepEqual(a1.f32(p1.o, rows), a1.f32(p1.oRef, rows));
    assert.deepEqual(a2.f32(p2.o, rows), a2.f32(p2.oRef, rows));
    assert.ok(a1.used >= backends.get(2)!.scratchBytes, "bind took its scratch from the arena");
  });

  test("a released arena is forgotten by every thread; the others keep working", () => {
    const be = backends.get(3)!;
    const before = be.boundArenas;
    const a1 = new Arena(4 << 20, "r1"), a2 = new Arena(4 << 20, "r2");
    const k1 = be.bind(a1), k2 = be.bind(a2);
    assert.equal(be.boundArenas, before + 2);
    const rows = 64, cols = 64, rb = q8RowBytes(cols);
    const setup = (a: Arena) => ({ w: a.alloc(rows * rb), x: a.alloc(rb), o: a.alloc(rows * 4) });
    const p1 = setup(a1), p2 = setup(a2);
    k1.matmulQ8(p1.o, p1.w, p1.x, rows, cols, 1);
    be.release(a1);
    assert.equal(be.boundArenas, before + 1);
    assert.throws(() => k1.matmulQ8(p1.o, p1.w, p1.x, rows, cols, 1), /released/);
    k2.matmulQ8(p2.o, p2.w, p2.x, rows, cols, 1); // split over the 3 threads: each still has a2
    be.release(a2);
    be.release(a2); // twice: ignored
    assert.equal(be.boundArenas, before);
  });

  test("an arena without room for the kernels' scratch is a clear error, not a slower path", () => {
    const be = backends.get(2)!;
    const a = new Arena(1 << 20, "full");
    a.alloc(a.size - a.used - 1024); // nearly full
    assert.throws(() => be.bind(a), (e: unknown) => e instanceof RangeError && /arena full: no room for the kernels' scratch/.test(e.message));
    assert.equal(a.used, a.size - 1024, "nothing was taken");
  });

  test("invalid pointers and kernel traps surface as exceptions, and the pool keeps working", () => {
    for (const threads of THREADS) {
      const be = backends.get(threads)!;
      const a = new Arena(4 << 20, "err");
      const k = be.bind(a);
      const x = a.alloc(34 * 4), o = a.alloc(64);
      assert.throws(() => k.matmulQ8(o, a.size - 100, x, 4, 128, 1), (e: unknown) => e instanceof RangeError && /^matmul Q8_0 w: range \[\d+, \d+\) outside arena err/.test(e.message));
      assert.throws(() => k.matmul("Q4_K", o, x, x, 4, 100, 1), (e: unknown) => e instanceof RangeError && e.message === "matmul Q4_K cols: bad size 100 (must be a multiple of 256)");
      assert.throws(() => k.quantizeAct("Q8_K", o, x, 33), (e: unknown) => e instanceof RangeError && e.message === "quantizeAct Q8_K: bad size 33 (must be a multiple of 256)");
      assert.throws(() => k.siluMul(o, -4, 4), RangeError);
      assert.throws(() => k.quantizeQ8(x, o, 33), RangeError);
      // bypass the checks: a wasm trap in a worker (or the main thread) becomes an Error here
      const rows = 64, cols = 128;
      assert.throws(() => be.pool.run(OP_MATMUL, k.arenaId, [8, o, 0x7ff00000, x, rows, cols, 1, 0, 0], threads),
        /out of bounds|unreachable|RuntimeError/i);
      // still usable afterwards
      k.siluMul(o, o, 8);
    }
  });

  test("LLAMESH_WASM forces a build; a bad value names the variable", async () => {
    const saved = process.env.LLAMESH_WASM;
    try {
      process.env.LLAMESH_WASM = "simd128";
      const be = await createBackend({ threads: 1 });
      assert.match(be.name, /^wasm-simd128(\+revec)? /);
      await be.close();
      process.env.LLAMESH_WASM = "avx";
      await assert.rejects(createBackend({ threads: 1 }), /LLAMESH_WASM="avx": expected simd128 or relaxed/);
      process.env.LLAMESH_WASM = "relaxed";
      if ((await availableBuilds()).includes("relaxed")) {
        const r = await createBackend({ threads: 1 });
        assert.match(r.name, /^wasm-relaxed(\+revec)? /);
        await r.close();
      } else {
        await assert.rejects(createBackend({ threads: 1 }), /does not validate relaxed SIMD/);
      }
    } finally {
      if (saved === undefined) delete process.env.LLAMESH_WASM;
      else process.env.LLAMESH_WASM = saved;
    }
  });

  test("createBackend picks wasm, or the reference when forced", async () => {
    const lines: string[] = [];
    const be = await createBackend({ threads: 1, log: (l) => lines.push(l) });
    assert.match(be.name, /wasm-(simd128|relaxed)/);
    await be.close();
    const refBe = await createBackend({ threads: 2, forceReference: true });
    assert.ok(refBe instanceof ReferenceBackend);
    await refBe.close();
  });
});
