/**
 * The Q8_0 matmul for one token (q8.ts's decode) and several tokens (q8.ts's prefill; in the
 * relaxed build assembly/relaxed-q8u.ts where relaxed dots read unsigned bytes (x86 with VNNI;
 * elsewhere its check fails and the exact kernels run) against the TypeScript reference, bit for
 * bit: odd row counts (4-row groups with aliased tails), every token count 2..16, chunks of
 * tokens, blocks holding -128 (w XOR 0x80 = 0, the unsigned operand's low end), all-negative and
 * all-zero blocks, rows too long for the scratch, on 1-3 threads, both builds.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Arena } from "../../src/kernels/arena.js";
import { ReferenceKernels } from "../../src/kernels/reference.js";
import type { WasmKernels } from "../../src/kernels/wasm.js";
import { q8RowBytes } from "../../src/kernels/q8.js";
import { f32ToF16 } from "../../src/core/numbers.js";
import { backendsPerBuild, randomValues, rng } from "./type-helpers.js";

const THREADS = [1, 2, 3];
const { builds: BUILDS, backends } = await backendsPerBuild(THREADS);

/**
 * Q8_0 weight rows whose blocks cycle through: random levels in -128..127 (so about one block in
 * eight has a -128), a -128 in lane 0 / in the last value, all -128, all negative, all zero
 * levels; f16 scales of varied magnitudes (subnormal too) and signs.
 */
function weights(rows: number, cols: number, r: () => number): Uint8Array {
  const rb = q8RowBytes(cols);
  const out = new Uint8Array(rows * rb);
  for (let row = 0; row < rows; row++) {
    for (let b = 0; b < cols / 32; b++) {
      const o = row * rb + b * 34;
      const h = f32ToF16((r() < 0.5 ? -1 : 1) * Math.exp(-3 - r() * 11));
      out[o] = h & 0xff;
      out[o + 1] = h >> 8;
      const kind = (row * 7 + b) % 9;
      for (let i = 0; i < 32; i++) {
        let v = Math.floor(r() * 256) - 128;
        if (kind === 1 && i === 0) v = -128;
        if (kind === 2 && i === 31) v = -128;
        if (kind === 3) v = -128;
        if (kind === 4) v = -1 - Math.floor(r() * 127);
        if (kind === 5) v = 0;
        if (kind === 6) v = r() < 0.5 ? -127 : 127;
        out[o + 2 + i] = v & 0xff;
      }
    }
  }
  return out;
}

for (const build of BUILDS) for (const threads of THREADS) {
  describe(`Q8_0 matmul, several tokens, wasm ${build} ${threads} thread(s) vs reference`, () => {
    let arena: Arena;
    let k: WasmKernels;
    let ref: ReferenceKernels;
    let base: number;
    const r = rng(4242 + threads);
    before(() => {
      arena = new Arena(48 << 20, `relaxed-q8-${threads}`);
      k = backends.get(`${build} ${threads}`)!.bind(arena);
      ref = new ReferenceKernels(arena, k.fusedTypes);
      base = arena.used;
    });
    after(() => backends.get(`${build} ${threads}`)!.idle());

    const check = (rows: number, cols: number, nTok: number, quantizedActs: boolean) => {
      let top = base;
      const alloc = (n: number): number => {
        const p = Math.ceil(top / 64) * 64;
        top = p + n;
        assert.ok(top <= arena.size, "test arena too small");
        return p;
      };
      const rb = q8RowBytes(cols);
      const w = alloc(rows * rb), x = alloc(nTok * rb), xf = alloc(nTok * cols * 4);
      const o1 = alloc(rows * nTok * 4), o2 = alloc(rows * nTok * 4);
      arena.u8(w, rows * rb).set(weights(rows, cols, r));
      if (quantizedActs) {
        arena.f32(xf, nTok * cols).set(randomValues(nTok * cols, r));
        ref.quantizeAct("Q8_0", x, xf, nTok * cols);
      } else {
        // any int8 activations, -128 included (the kernel's x ^ m is exact for every byte)
        arena.u8(x, nTok * rb).set(weights(nTok, cols, r));
      }
      ref.matmul("Q8_0", o1, w, x, rows, cols, nTok);
      arena.f32(o2, rows * nTok).fill(NaN);
      k.matmul("Q8_0", o2, w, x, rows, cols, nTok);
      const got = arena.f32(o2, rows * nTok), want = arena.f32(o1, rows * nTok);
      for (let i = 0; i < rows * nTok; i++) {
        if (!Object.is(got[i], want[i])) {
          assert.fail(`${rows}x${cols} nTok ${nTok}: out[t ${Math.floor(i / rows)}, row ${i % rows}] = ${got[i]}, reference ${want[i]}`);
        }
      }
    };

    test("odd rows, 2..9 tokens, -128 and all-negative blocks: bit-identical", () => {
      for (const rows of [1, 3, 5, 7, 13, 37]) {
        for (const cols of [32, 96, 1056]) {
          for (let nTok = 2; nTok <= 9; nTok++) check(rows, cols, nTok, (rows + nTok) % 2 === 0);
        }
      }
    });

    test("10..16 tokens, 4-row tails: bit-identical", () => {
      for (const rows of [1, 4, 6, 8, 9, 13]) {
        for (let nTok = 10; nTok <= 16; nTok++) check(rows, 96, nTok, (rows + nTok) % 2 === 0);
      }
    });

    test("chunks of tokens (17, 33, 40) and a 2048-column row: bit-identical", () => {
      for (const nTok of [17, 33, 40]) check(9, 288, nTok, true);
      check(11, 2048, 8, true);
      check(6, 5632, 12, false);
    });

    test("one token (decode: eight row streams per chunk, every tail of 1..7 rows): bit-identical", () => {
      // q8.ts's decodeQ8x8 spaces eight streams q = ceil(n/8) rows apart in each chunk of rows;
      // the row counts cover n < 8 (aliased streams), multiples of 8 and each remainder.
      for (const rows of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 31, 33, 63, 65, 100, 257]) {
        for (const cols of [32, 96, 1056]) check(rows, cols, 1, (rows + cols / 32) % 2 === 0);
      }
      check(40, 2048, 1, true);
      check(23, 5632, 1, false);
    });

    test("one token, long rows: widened up to the scratch, direct reads past it: bit-identical", () => {
      // 70016 columns: the widened token (210 KB) and the loop's constants fit the 384 KB
      // scratch; 131072: the widened token is exactly the scratch, no room for the constants, so
      // the rows are read against the Q8_0 activations directly (directRows)
      check(5, 70016, 1, true);
      check(3, 131072, 1, false);
    });

    test("long rows (too long for the scratch of the several-token paths): still bit-identical", () => {
      // q8.ts's prefill widens two tokens in 2 * nb * 96, more than the 384 KB scratch at 70016
      // or 89600 columns (directRows then); relaxed-q8u.ts goes over such rows in slabs
      for (const nTok of [4, 5]) check(3, 70016, nTok, true);
      for (const nTok of [4, 5]) check(2, 89600, nTok, true);
    });
  });
}
