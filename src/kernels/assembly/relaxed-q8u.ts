// Q8_0 x Q8_0 for several tokens with relaxed dots whose second operand is read as UNSIGNED bytes
// (compiled only into kernels-relaxed.wasm; q8.ts calls it under `if (ASC_FEATURE_RELAXED_SIMD)`).
//
// i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, c) is specified exactly only for b in 0..127. Where
// the engine lowers it to one vpdpbusd (x86 with AVX-VNNI or AVX512-VNNI: V8 does), b is read as
// unsigned bytes with no saturation, so with u = w XOR 0x80 = w + 128 (0..255 for any int8 w):
//     sum x*w = sum x*u - 128 * sum x,
// one dot per 16 weights and token, and 128*sum(x) is once per token and block: the structure of
// relaxed.ts's Q4_0 prefill (whose levels 0..15 are always exact), with no sign trick.
// Other lowerings (pmaddubsw + pmaddwd saturates the pair sums, ARM's sdot reads b as signed) give
// other numbers for b >= 128, so every call first checks the engine's semantics on values that
// tell the three apart (unsignedDotExact, from memory so nothing can be folded) and otherwise
// returns false: the caller then runs the exact kernels. The result is bit-identical with the
// reference wherever this runs: the integer sums are exact, and the float step is the
// reference's, acc += f32(sumi) * f32(dw * dx) per block, in block order.
//
// Layout "lane = row": four rows' levels transposed so lane r of weight vector g holds values
// 4g..4g+3 of row r; each token's four activations of a group are one load32_splat. The four
// rows of a group are a quarter of the call's rows apart (as relaxed.ts's prefill).
import { f16ToF32, halves4 } from "./common";

const BLOCK: u32 = 34;
/** Scratch used by the semantics check (two 16-byte operands, a 16-byte result). */
const PROBE: u32 = 64;

// @ts-ignore: decorator
@inline function rdot(x: v128, w: v128, acc: v128): v128 {
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(x, w, acc);
}

/**
 * True if relaxed dots at p (64 bytes of scratch) read their second operand as unsigned bytes
 * without saturation: 4 x 127 x 255 = 129540 per lane (signed reading: -508; pmaddubsw's
 * saturated pairs: 65534), and 4 x -127 x 255 = -129540.
 */
export function unsignedDotExact(p: usize): bool {
  v128.store(p, i8x16.splat(127));
  v128.store(p, i8x16.splat(-1), 16);
  v128.store(p, i8x16.splat(-127), 32);
  const hi = rdot(v128.load(p), v128.load(p, 16), i32x4.splat(0));
  const lo = rdot(v128.load(p, 32), v128.load(p, 16), i32x4.splat(0));
  v128.store(p, i32x4.sub(hi, lo), 48);
  return load<i32>(p, 48) == 259080 && load<i32>(p, 60) == 259080 && i32x4.extract_lane(hi, 1) == 129540;
}

/** Rows (four; p1..p3 may alias p0) of Q8_0 times nTok tokens: f32x4 accumulators FA[t]. */
// @ts-ignore: decorator
@inline function rows4Q8U(p0: usize, p1: usize, p2: usize, p3: usize, nb: u32, x: usize, nTok: u32, D: usize, FA: usize): void {
  const flip = i8x16.splat(-128);
  const arb = nb * BLOCK;
  for (let b: u32 = 0; b < nb; b++) {
    const dw = halves4(p0, p1, p2, p3, 0);
    let w0: v128, w1: v128, w2: v128, w3: v128, w4: v128, w5: v128, w6: v128, w7: v128;
    {
      const v0 = v128.load(p0, 2), v1 = v128.load(p1, 2), v2 = v128.load(p2, 2), v3 = v128.load(p3, 2);
      const l01 = i32x4.shuffle(v0, v1, 0, 4, 1, 5), h01 = i32x4.shuffle(v0, v1, 2, 6, 3, 7);
      const l23 = i32x4.shuffle(v2, v3, 0, 4, 1, 5), h23 = i32x4.shuffle(v2, v3, 2, 6, 3, 7);
      w0 = v128.xor(i64x2.shuffle(l01, l23, 0, 2), flip);
      w1 = v128.xor(i64x2.shuffle(l01, l23, 1, 3), flip);
      w2 = v128.xor(i64x2.shuffle(h01, h23, 0, 2), flip);
      w3 = v128.xor(i64x2.shuffle(h01, h23, 1, 3), flip);
    }
    {
      const v0 = v128.load(p0, 18), v1 = v128.load(p1, 18), v2 = v128.load(p2, 18), v3 = v128.load(p3, 18);
      const l01 = i32x4.shuffle(v0, v1, 0, 4, 1, 5), h01 = i32x4.shuffle(v0, v1, 2, 6, 3, 7);
      const l23 = i32x4.shuffle(v2, v3, 0, 4, 1, 5), h23 = i32x4.shuffle(v2, v3, 2, 6, 3, 7);
      w4 = v128.xor(i64x2.shuffle(l01, l23, 0, 2), flip);
      w5 = v128.xor(i64x2.shuffle(l01, l23, 1, 3), flip);
      w6 = v128.xor(i64x2.shuffle(h01, h23, 0, 2), flip);
      w7 = v128.xor(i64x2.shuffle(h01, h23, 1, 3), flip);
    }
    let xq = x + b * BLOCK + 2;
    let dp = D + (b << 3);
    let f = FA;
    const fEnd = FA + (nTok << 4);
    while (f < fEnd) {
      let s = rdot(v128.load32_splat(xq, 0), w0, i32x4.splat(0));
      let u = rdot(v128.load32_splat(xq, 16), w4, i32x4.splat(0));
      s = rdot(v128.load32_splat(xq, 4), w1, s);
      u = rdot(v128.load32_splat(xq, 20), w5, u);
      s = rdot(v128.load32_splat(xq, 8), w2, s);
      u = rdot(v128.load32_splat(xq, 24), w6, u);
      s = rdot(v128.load32_splat(xq, 12), w3, s);
      u = rdot(v128.load32_splat(xq, 28), w7, u);
      const sumi = i32x4.sub(i32x4.add(s, u), v128.load32_splat(dp, 4));
      v128.store(f, f32x4.add(v128.load(f), f32x4.mul(f32x4.convert_i32x4_s(sumi), f32x4.mul(dw, v128.load32_splat(dp)))));
      xq += arb; dp += nb << 3; f += 16;
    }
    p0 += BLOCK; p1 += BLOCK; p2 += BLOCK; p3 += BLOCK;
  }
}

/**
 * out[t * rows + r] = row r of w . token t of x for r in [r0, r1), t < nTok; false (nothing done)
 * if this engine's relaxed dots are not the unsigned kind or the scratch is too small.
 */
export function matmulQ8Unsigned(out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32): bool {
  const nb = cols >> 5;
  const rb = nb * BLOCK;
  // per token: dx and 128*sum(x) per block (8 bytes), one f32x4 accumulator
  const per: u32 = (nb << 3) + 16;
  if (scratchBytes < per + PROBE || !unsignedDotExact(scratch)) return false;
  const base = scratch + PROBE;
  let chunk: u32 = (scratchBytes - PROBE) / per;
  if (chunk > 64) chunk = 64;
  for (let t0: u32 = 0; t0 < nTok; t0 += chunk) {
    const tc = nTok - t0 < chunk ? nTok - t0 : chunk;
    const D = base, FA = base + tc * (nb << 3);
    for (let j: u32 = 0; j < tc; j++) {
      const xr = x + (t0 + j) * rb;
      for (let b: u32 = 0; b < nb; b++) {
        const xb = xr + b * BLOCK;
        const dp = D + ((j * nb + b) << 3);
        store<f32>(dp, f16ToF32(load<u16>(xb) as u32));
        const s16 = i16x8.add(i16x8.extadd_pairwise_i8x16_s(v128.load(xb, 2)), i16x8.extadd_pairwise_i8x16_s(v128.load(xb, 18)));
        const s32 = i32x4.extadd_pairwise_i16x8_s(s16);
        store<i32>(dp, (i32x4.extract_lane(s32, 0) + i32x4.extract_lane(s32, 1) + i32x4.extract_lane(s32, 2) + i32x4.extract_lane(s32, 3)) << 7, 4);
      }
    }
    // the four rows of a group spaced a quarter of the range apart: four long streams (adjacent
    // rows end every 34-line stream after one group, before the prefetcher has caught up)
    const n = r1 - r0, q = (n + 3) >> 2, qb = q * rb;
    for (let i: u32 = 0; i < q; i++) {
      const p0 = w + (r0 + i) * rb;
      const p1 = q + i < n ? p0 + qb : p0, p2 = q * 2 + i < n ? p0 + 2 * qb : p0, p3 = q * 3 + i < n ? p0 + 3 * qb : p0;
      for (let j: u32 = 0; j < tc; j++) v128.store(FA + (j << 4), f32x4.splat(0));
      rows4Q8U(p0, p1, p2, p3, nb, x + t0 * rb, tc, D, FA);
      for (let j: u32 = 0; j < tc; j++) {
        const v = v128.load(FA + (j << 4));
        const o = out + (((t0 + j) * rows + r0 + i) << 2);
        v128.store32_lane(o, v, 0);
        if (q + i < n) v128.store32_lane(o + (q << 2), v, 1);
        if (q * 2 + i < n) v128.store32_lane(o + (q << 3), v, 2);
        if (q * 3 + i < n) v128.store32_lane(o + q * 12, v, 3);
      }
    }
  }
  return true;
}
