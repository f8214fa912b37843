// llamesh kernels in AssemblyScript, compiled to WebAssembly SIMD128 by scripts/build-wasm.mjs.
//
// Rules for this file (see docs/kernels.md):
// - No allocation, no strings, no static data, no globals living in memory: the module imports a
//   shared memory (the Arena) and must touch nothing outside the pointers it is given, because
//   every thread instantiates it on the same memory. Module globals are per instance (per thread).
// - Pointers are byte offsets (u32) into the imported memory.
// - Numerics follow src/kernels/reference.ts. matmulQ8, quantizeQ8, dequantQ8 are bit-exact with it.
// - Thread partitioning is done by the caller: kernels take the sub-range [r0, r1) they own.

// ---------------------------------------------------------------------------------------------
// helpers

const QK: u32 = 32;
const BLOCK: u32 = 34;
/** Bytes per block of widened activations in matmulQ8 scratch: 64 (i16) + 16 (scale) + 16 (slack). */
const XSTRIDE: u32 = 96;

/** f16 bits in the high halves of i32 lanes (low halves ignored) -> f32 lanes; sign kept, inf/nan not handled. */
// @ts-ignore: decorator
@inline function f16hiToF32(v: v128): v128 {
  return f32x4.mul(v128.and(i32x4.shr_s(v, 3), i32x4.splat(0x8fffe000)), f32x4.splat(5.192296858534828e33));
}
// @ts-ignore: decorator
@inline function f16ToF32(h: u32): f32 {
  const f = reinterpret<f32>((h & 0x7fff) << 13) * (5.192296858534828e33 as f32);
  return reinterpret<f32>(reinterpret<u32>(f) | ((h & 0x8000) << 16));
}

/** f32 -> f16 bits, round to nearest even (port of q8.ts f32ToF16). */
function f32ToF16(value: f32): u32 {
  const x = reinterpret<u32>(value);
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) as i32;
  let mant = x & 0x7fffff;
  if (exp == 0xff) return sign | 0x7c00 | (mant != 0 ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = (14 - e) as u32;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid: u32 = 1 << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1) != 0)) half++;
    return sign | half;
  }
  let half = ((e as u32) << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1) != 0)) half++;
  return sign | half;
}

/** Sum of the 4 f32 lanes. */
// @ts-ignore: decorator
@inline function hsum(v: v128): f32 {
  const s = f32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  const t = f32x4.add(s, i32x4.shuffle(s, s, 1, 0, 3, 2));
  return f32x4.extract_lane(t, 0);
}

/** [sum(a), sum(b), sum(c), sum(d)] of four i32x4 vectors. */
// @ts-ignore: decorator
@inline function transposeSum(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(i32x4.shuffle(a, b, 0, 4, 1, 5), i32x4.shuffle(a, b, 2, 6, 3, 7)); // a02 b02 a13 b13
  const cd = i32x4.add(i32x4.shuffle(c, d, 0, 4, 1, 5), i32x4.shuffle(c, d, 2, 6, 3, 7));
  return i32x4.add(i32x4.shuffle(ab, cd, 0, 1, 4, 5), i32x4.shuffle(ab, cd, 2, 3, 6, 7));
}

/** Vector exp (Cephes expf), relative error ~1e-7 over the clamped range. */
// @ts-ignore: decorator
@inline function expx4(x0: v128): v128 {
  let x = f32x4.min(f32x4.max(x0, f32x4.splat(-87.33654475)), f32x4.splat(88.0));
  let fx = f32x4.floor(f32x4.add(f32x4.mul(x, f32x4.splat(1.44269504088896341)), f32x4.splat(0.5)));
  x = f32x4.sub(x, f32x4.mul(fx, f32x4.splat(0.693359375)));
  x = f32x4.sub(x, f32x4.mul(fx, f32x4.splat(-2.12194440e-4)));
  const z = f32x4.mul(x, x);
  let y = f32x4.splat(1.9875691500e-4);
  y = f32x4.add(f32x4.mul(y, x), f32x4.splat(1.3981999507e-3));
  y = f32x4.add(f32x4.mul(y, x), f32x4.splat(8.3334519073e-3));
  y = f32x4.add(f32x4.mul(y, x), f32x4.splat(4.1665795894e-2));
  y = f32x4.add(f32x4.mul(y, x), f32x4.splat(1.6666665459e-1));
  y = f32x4.add(f32x4.mul(y, x), f32x4.splat(5.0000001201e-1));
  y = f32x4.add(f32x4.add(f32x4.mul(y, z), x), f32x4.splat(1.0));
  const n = i32x4.trunc_sat_f32x4_s(fx);
  const pow2n = i32x4.shl(i32x4.add(n, i32x4.splat(127)), 23);
  return f32x4.mul(y, pow2n);
}

// @ts-ignore: decorator
@inline function expf(x: f32): f32 {
  return f32x4.extract_lane(expx4(f32x4.splat(x)), 0);
}

// ---------------------------------------------------------------------------------------------
// Q8_0

/** Quantize nBlocks blocks of 32 f32 at src into Q8_0 at dst. */
export function quantizeQ8(dst: usize, src: usize, nBlocks: u32): void {
  const absMask = i32x4.splat(0x7fffffff);
  for (let b: u32 = 0; b < nBlocks; b++) {
    const s = src + b * 128;
    const o = dst + b * BLOCK;
    const v0 = v128.load(s, 0), v1 = v128.load(s, 16), v2 = v128.load(s, 32), v3 = v128.load(s, 48);
    const v4 = v128.load(s, 64), v5 = v128.load(s, 80), v6 = v128.load(s, 96), v7 = v128.load(s, 112);
    let m = f32x4.max(
      f32x4.max(f32x4.max(v128.and(v0, absMask), v128.and(v1, absMask)), f32x4.max(v128.and(v2, absMask), v128.and(v3, absMask))),
      f32x4.max(f32x4.max(v128.and(v4, absMask), v128.and(v5, absMask)), f32x4.max(v128.and(v6, absMask), v128.and(v7, absMask))));
    m = f32x4.max(m, i32x4.shuffle(m, m, 2, 3, 0, 1));
    m = f32x4.max(m, i32x4.shuffle(m, m, 1, 0, 3, 2));
    const amax = f32x4.extract_lane(m, 0);
    const d: f32 = amax / (127.0 as f32);
    const id: f32 = d != 0 ? (1.0 as f32) / d : 0;
    store<u16>(o, f32ToF16(d) as u16);
    const vid = f32x4.splat(id);
    const q0 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v0, vid)));
    const q1 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v1, vid)));
    const q2 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v2, vid)));
    const q3 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v3, vid)));
    const q4 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v4, vid)));
    const q5 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v5, vid)));
    const q6 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v6, vid)));
    const q7 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v7, vid)));
    const lo = i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3));
    const hi = i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q4, q5), i16x8.narrow_i32x4_s(q6, q7));
    v128.store(o, lo, 2);
    v128.store(o, hi, 18);
  }
}

/** out[i] = d * q[i] for n values (n multiple of 32). */
export function dequantQ8(out: usize, src: usize, n: u32): void {
  const nb = n / QK;
  for (let b: u32 = 0; b < nb; b++) {
    const o = src + b * BLOCK;
    const d = f32x4.splat(f16ToF32(load<u16>(o) as u32));
    const q = v128.load(o, 2);
    const q2 = v128.load(o, 18);
    const dst = out + b * 128;
    const a = i16x8.extend_low_i8x16_s(q), bq = i16x8.extend_high_i8x16_s(q);
    const c = i16x8.extend_low_i8x16_s(q2), e = i16x8.extend_high_i8x16_s(q2);
    v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(a)), d), 0);
    v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(a)), d), 16);
    v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(bq)), d), 32);
    v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(bq)), d), 48);
    v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(c)), d), 64);
    v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(c)), d), 80);
    v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(e)), d), 96);
    v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(e)), d), 112);
  }
}

/**
 * Integer dot of one Q8_0 block of the row at p (its 32 int8, widened to i16 here) with the
 * block's 32 activations as i16 in x0..x3: four i32 lanes whose sum is the block's dot.
 */
// @ts-ignore: decorator
@inline function blockDot(p: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(v128.load8x8_s(p, 2), x0), i32x4.dot_i16x8_s(v128.load8x8_s(p, 10), x1)),
    i32x4.add(i32x4.dot_i16x8_s(v128.load8x8_s(p, 18), x2), i32x4.dot_i16x8_s(v128.load8x8_s(p, 26), x3)));
}

/** The f16 scales of the current blocks of four rows (p0..p3) as f32x4. */
// @ts-ignore: decorator
@inline function rowScales(p0: usize, p1: usize, p2: usize, p3: usize): v128 {
  const hw = (load<u16>(p0) as u64) | ((load<u16>(p1) as u64) << 16) | ((load<u16>(p2) as u64) << 32) | ((load<u16>(p3) as u64) << 48);
  return f16hiToF32(i16x8.shuffle(i32x4.splat(0), i64x2.splat(hw), 0, 8, 1, 9, 2, 10, 3, 11));
}

/**
 * Four rows (pointers p0..p3, which may alias for a remainder) dotted with one quantized vector xp
 * of nb blocks; returns [row0, row1, row2, row3] as f32x4, summed block by block exactly like the
 * reference (integer block dot, f32 scale product, f32 accumulate in block order).
 */
// @ts-ignore: decorator
@inline function dot4(p0: usize, p1: usize, p2: usize, p3: usize, xp: usize, nb: u32): v128 {
  let acc = f32x4.splat(0);
  for (let b: u32 = 0; b < nb; b++) {
    const x0 = v128.load8x8_s(xp, 2), x1 = v128.load8x8_s(xp, 10), x2 = v128.load8x8_s(xp, 18), x3 = v128.load8x8_s(xp, 26);
    const s0 = blockDot(p0, x0, x1, x2, x3);
    const s1 = blockDot(p1, x0, x1, x2, x3);
    const s2 = blockDot(p2, x0, x1, x2, x3);
    const s3 = blockDot(p3, x0, x1, x2, x3);
    const dots = f32x4.convert_i32x4_s(transposeSum(s0, s1, s2, s3));
    const scale = f32x4.mul(rowScales(p0, p1, p2, p3), f32x4.splat(f16ToF32(load<u16>(xp) as u32)));
    acc = f32x4.add(acc, f32x4.mul(dots, scale));
    p0 += BLOCK; p1 += BLOCK; p2 += BLOCK; p3 += BLOCK; xp += BLOCK;
  }
  return acc;
}

/**
 * Like dot4, but the vector was pre-widened: per block XSTRIDE bytes at xs = 32 i16 (64 bytes), the
 * f32 scale splatted (16 bytes), and 16 bytes of slack that serve as a store barrier (below).
 * Plain 16-byte loads for the activations, no per-block f16 decode of the activation scale.
 *
 * The v128.store of each row's partial sum into the slack is deliberate: V8 (TurboFan) keeps
 * memory accesses in program order but sinks pure arithmetic to its uses, so without a store
 * between rows it issues all 16 weight loads first and spills half of them (measured: 12.5 ->
 * 16 GMAC/s in cache with the barriers).
 */
// @ts-ignore: decorator
@inline function dot4w(p0: usize, p1: usize, p2: usize, p3: usize, xs: usize, nb: u32): v128 {
  let acc = f32x4.splat(0);
  const xsEnd = xs + nb * XSTRIDE;
  while (xs < xsEnd) {
    const x0 = v128.load(xs, 0), x1 = v128.load(xs, 16), x2 = v128.load(xs, 32), x3 = v128.load(xs, 48);
    const s0 = blockDot(p0, x0, x1, x2, x3);
    v128.store(xs, s0, 80);
    const s1 = blockDot(p1, x0, x1, x2, x3);
    v128.store(xs, s1, 80);
    const s2 = blockDot(p2, x0, x1, x2, x3);
    v128.store(xs, s2, 80);
    const s3 = blockDot(p3, x0, x1, x2, x3);
    const dots = f32x4.convert_i32x4_s(transposeSum(s0, s1, s2, s3));
    const scale = f32x4.mul(rowScales(p0, p1, p2, p3), v128.load(xs, 64));
    acc = f32x4.add(acc, f32x4.mul(dots, scale));
    p0 += BLOCK; p1 += BLOCK; p2 += BLOCK; p3 += BLOCK; xs += XSTRIDE;
  }
  return acc;
}

/** One pair of tokens (xp, xp + XSTRIDE) for the two rows of dot2xT: acc at ap += dots * scales. */
// @ts-ignore: decorator
@inline function pair2x2(wa0: v128, wa1: v128, wa2: v128, wa3: v128, wb0: v128, wb1: v128, wb2: v128, wb3: v128,
  ws: usize, xp: usize, ap: usize, tmp: usize): void {
  let x0 = v128.load(xp, 0), x1 = v128.load(xp, 16), x2 = v128.load(xp, 32), x3 = v128.load(xp, 48);
  let c0 = i32x4.dot_i16x8_s(wa0, x0), c1 = i32x4.dot_i16x8_s(wb0, x0);
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa1, x1)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb1, x1));
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa2, x2)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb2, x2));
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa3, x3)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb3, x3));
  const ha = i32x4.add(i32x4.shuffle(c0, c1, 0, 4, 1, 5), i32x4.shuffle(c0, c1, 2, 6, 3, 7));
  v128.store(tmp, ha);
  x0 = v128.load(xp, 96); x1 = v128.load(xp, 112); x2 = v128.load(xp, 128); x3 = v128.load(xp, 144);
  c0 = i32x4.dot_i16x8_s(wa0, x0); c1 = i32x4.dot_i16x8_s(wb0, x0);
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa1, x1)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb1, x1));
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa2, x2)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb2, x2));
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa3, x3)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb3, x3));
  const hb = i32x4.add(i32x4.shuffle(c0, c1, 0, 4, 1, 5), i32x4.shuffle(c0, c1, 2, 6, 3, 7));
  const dots = f32x4.convert_i32x4_s(i32x4.add(i32x4.shuffle(ha, hb, 0, 1, 4, 5), i32x4.shuffle(ha, hb, 2, 3, 6, 7)));
  v128.store(ap, f32x4.add(v128.load(ap), f32x4.mul(dots, f32x4.mul(v128.load(ws), v128.load(xp, 64)))));
}

/** The last, unpaired token (xp) for the two rows of dot2xT: lanes 0, 1 of the acc at ap (2, 3 get junk). */
// @ts-ignore: decorator
@inline function one2x1(wa0: v128, wa1: v128, wa2: v128, wa3: v128, wb0: v128, wb1: v128, wb2: v128, wb3: v128,
  ws: usize, xp: usize, ap: usize): void {
  const x0 = v128.load(xp, 0), x1 = v128.load(xp, 16), x2 = v128.load(xp, 32), x3 = v128.load(xp, 48);
  let c0 = i32x4.dot_i16x8_s(wa0, x0), c1 = i32x4.dot_i16x8_s(wb0, x0);
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa1, x1)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb1, x1));
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa2, x2)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb2, x2));
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa3, x3)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb3, x3));
  const ha = i32x4.add(i32x4.shuffle(c0, c1, 0, 4, 1, 5), i32x4.shuffle(c0, c1, 2, 6, 3, 7));
  const dots = f32x4.convert_i32x4_s(i32x4.add(ha, i32x4.shuffle(ha, ha, 2, 3, 0, 1)));
  v128.store(ap, f32x4.add(v128.load(ap), f32x4.mul(dots, f32x4.mul(v128.load(ws), v128.load(xp, 64)))));
}

/**
 * Prefill inner kernel: two rows (pa, pb) times all tc tokens of a chunk, block by block. The two
 * rows' block (8 vectors of i16) is widened into registers once and reused for every token; the
 * activations are block-major in the scratch (block b of token t at xs + (b*tc + t)*XSTRIDE), so
 * the token loop walks contiguous memory. Accumulators live at acc: one f32x4
 * [rowA tok t, rowB tok t, rowA tok t+1, rowB tok t+1] per pair of tokens (tc rounded up to even;
 * the caller duplicated the last token's activations if tc is odd). `tmp` is 32 bytes of scratch.
 *
 * Same numerics as dot4w: integer block dot, f32(wd * xd), f32 accumulate in block order.
 * The store of the first token's half-reduced dots is a scheduling barrier (see dot4w): it keeps
 * V8 from loading the second token's activations before the first token's dots are done (eight
 * weight vectors stay in registers, so only four activation vectors fit at a time).
 */
// @ts-ignore: decorator
@inline function dot2xT(pa: usize, pb: usize, xs: usize, tc: u32, nb: u32, acc: usize, tmp: usize): void {
  const pairBytes: u32 = XSTRIDE << 1;
  const pairEnd = acc + ((tc >> 1) << 4);
  const odd = (tc & 1) != 0;
  let xp = xs;
  for (let b: u32 = 0; b < nb; b++) {
    const wa0 = v128.load8x8_s(pa, 2), wa1 = v128.load8x8_s(pa, 10), wa2 = v128.load8x8_s(pa, 18), wa3 = v128.load8x8_s(pa, 26);
    const wb0 = v128.load8x8_s(pb, 2), wb1 = v128.load8x8_s(pb, 10), wb2 = v128.load8x8_s(pb, 18), wb3 = v128.load8x8_s(pb, 26);
    const hw = (load<u16>(pa) as u64) | ((load<u16>(pb) as u64) << 16);
    v128.store(tmp, f16hiToF32(i16x8.shuffle(i32x4.splat(0), i64x2.splat(hw | (hw << 32)), 0, 8, 1, 9, 2, 10, 3, 11)), 16);
    let ap = acc;
    const ws = tmp + 16;
    while (ap + 32 <= pairEnd) {
      pair2x2(wa0, wa1, wa2, wa3, wb0, wb1, wb2, wb3, ws, xp, ap, tmp);
      pair2x2(wa0, wa1, wa2, wa3, wb0, wb1, wb2, wb3, ws, xp + pairBytes, ap + 16, tmp);
      xp += pairBytes << 1; ap += 32;
    }
    if (ap < pairEnd) {
      pair2x2(wa0, wa1, wa2, wa3, wb0, wb1, wb2, wb3, ws, xp, ap, tmp);
      xp += pairBytes; ap += 16;
    }
    if (odd) {
      one2x1(wa0, wa1, wa2, wa3, wb0, wb1, wb2, wb3, ws, xp, ap);
      xp += pairBytes;
    }
    pa += BLOCK; pb += BLOCK;
  }
}

// @ts-ignore: decorator
@inline function store4(o: usize, acc: v128, left: u32): void {
  if (left >= 4) {
    v128.store(o, acc);
  } else {
    v128.store32_lane(o, acc, 0);
    if (left > 1) v128.store32_lane(o, acc, 1, 4);
    if (left > 2) v128.store32_lane(o, acc, 2, 8);
  }
}

/** Bytes of scratch one token needs in matmulQ8 for `cols` (i16 values + f32 block scales). */
// @ts-ignore: decorator
@inline function widenBytes(nb: u32): u32 {
  return nb * XSTRIDE;
}

/**
 * out[t * rows + r] = row r of w . token t of x, for r in [r0, r1), t < nTok.
 *
 * With scratch (this thread's own, scratchBytes long): the activations of a chunk of tokens are
 * widened to i16 once, then rows are done four at a time, each group of four rows (a few KB, cache
 * resident) reused for every token of the chunk, so weights stream from DRAM once per chunk.
 * Without scratch (or if one token does not fit), activations are read from the Q8_0 blocks directly.
 */
export function matmulQ8(out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32): void {
  const nb = cols / QK;
  const rb = nb * BLOCK;
  const per = widenBytes(nb);
  // With scratch: one token needs per bytes; prefill needs room for two plus accumulators.
  const fits = nTok > 1 ? (per << 1) + 48 <= scratchBytes : per <= scratchBytes;
  if (scratch == 0 || !fits || nTok == 0) {
    let r = r0;
    while (r < r1) {
      const left = r1 - r;
      const p0 = w + r * rb;
      const p1 = left > 1 ? p0 + rb : p0;
      const p2 = left > 2 ? p0 + 2 * rb : p0;
      const p3 = left > 3 ? p0 + 3 * rb : p0;
      for (let t: u32 = 0; t < nTok; t++) {
        store4(out + ((t * rows + r) << 2), dot4(p0, p1, p2, p3, x + t * rb, nb), left);
      }
      r += left >= 4 ? 4 : left;
    }
    return;
  }
  if (nTok > 1) {
    matmulQ8Prefill(out, w, x, rows, nb, nTok, r0, r1, scratch, scratchBytes);
    return;
  }
  // One token: widen it, then four long sequential streams: rows r0+i, r0+q+i, r0+2q+i, r0+3q+i
  // (q = ceil(n/4)), so each stream runs on into the next row and the hardware prefetchers never
  // restart.
  {
    let p = x;
    let q = scratch;
    for (let b: u32 = 0; b < nb; b++) {
      v128.store(q, v128.load8x8_s(p, 2), 0);
      v128.store(q, v128.load8x8_s(p, 10), 16);
      v128.store(q, v128.load8x8_s(p, 18), 32);
      v128.store(q, v128.load8x8_s(p, 26), 48);
      v128.store(q, f32x4.splat(f16ToF32(load<u16>(p) as u32)), 64);
      p += BLOCK; q += XSTRIDE;
    }
  }
  const n = r1 - r0;
  const q: u32 = (n + 3) >> 2;
  for (let i: u32 = 0; i < q; i++) {
    const ra = r0 + i;
    const p0 = w + ra * rb;
    const v1 = q + i < n, v2 = (q << 1) + i < n, v3 = q * 3 + i < n;
    const p1 = v1 ? p0 + q * rb : p0;
    const p2 = v2 ? p0 + ((q * rb) << 1) : p0;
    const p3 = v3 ? p0 + q * rb * 3 : p0;
    const acc = dot4w(p0, p1, p2, p3, scratch, nb);
    const o = out + (ra << 2);
    v128.store32_lane(o, acc, 0);
    if (v1) v128.store32_lane(o + (q << 2), acc, 1);
    if (v2) v128.store32_lane(o + (q << 3), acc, 2);
    if (v3) v128.store32_lane(o + q * 12, acc, 3);
  }
}

/**
 * matmulQ8 with nTok > 1 and scratch: chunks of tokens are widened block-major into the scratch
 * (even token count per chunk; an odd last token is widened twice), then for each pair of rows
 * (two long sequential streams: r0+i and r0+h+i, h = ceil(n/2)) dot2xT runs over all tokens of
 * the chunk, so the rows' weights are read once per chunk. The end of the scratch holds the
 * accumulators (16 bytes per token pair) and 32 bytes for dot2xT.
 */
function matmulQ8Prefill(out: usize, w: usize, x: usize, rows: u32, nb: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32): void {
  const rb = nb * BLOCK;
  const per = widenBytes(nb);
  // chunk: even number of tokens with chunk * per + chunk/2 * 16 + 32 <= scratchBytes
  let chunk: u32 = ((scratchBytes - 32) / (per + 8)) & ~1;
  if (chunk < 2) chunk = 2; // caller guarantees 2 * per + 48 <= scratchBytes
  const n = r1 - r0;
  const h: u32 = (n + 1) >> 1;
  for (let t0: u32 = 0; t0 < nTok; t0 += chunk) {
    const tc = nTok - t0 < chunk ? nTok - t0 : chunk;
    const tce = (tc + 1) & ~1;
    const acc = scratch + tce * per;
    const tmp = acc + (tce << 3);
    // widen tokens t0 .. t0+tc-1, block-major (token tc duplicates token tc-1 when tc is odd)
    for (let j: u32 = 0; j < tce; j++) {
      let p = x + (t0 + (j < tc ? j : tc - 1)) * rb;
      let qd = scratch + j * XSTRIDE;
      const stride = tce * XSTRIDE;
      // the pair's activation scales [x_j, x_j, x_j+1, x_j+1] go into the even token's slot at 64
      const sOff: usize = (j & 1) * (XSTRIDE - 8);
      for (let b: u32 = 0; b < nb; b++) {
        v128.store(qd, v128.load8x8_s(p, 2), 0);
        v128.store(qd, v128.load8x8_s(p, 10), 16);
        v128.store(qd, v128.load8x8_s(p, 18), 32);
        v128.store(qd, v128.load8x8_s(p, 26), 48);
        v128.store64_lane(qd - sOff, f32x4.splat(f16ToF32(load<u16>(p) as u32)), 0, 64);
        p += BLOCK; qd += stride;
      }
    }
    for (let i: u32 = 0; i < h; i++) {
      const ra = r0 + i;
      const pa = w + ra * rb;
      const vb = h + i < n;
      const pb = vb ? pa + h * rb : pa;
      for (let a = acc; a < tmp; a += 16) v128.store(a, f32x4.splat(0));
      dot2xT(pa, pb, scratch, tc, nb, acc, tmp);
      for (let j: u32 = 0; j < tc; j++) {
        const v = v128.load(acc + ((j >> 1) << 4));
        const o = out + (((t0 + j) * rows + ra) << 2);
        if ((j & 1) == 0) {
          v128.store32_lane(o, v, 0);
          if (vb) v128.store32_lane(o + (h << 2), v, 1);
        } else {
          v128.store32_lane(o, v, 2);
          if (vb) v128.store32_lane(o + (h << 2), v, 3);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// elementwise

/** out = x / sqrt(mean(x^2) + eps) * weight (sum of squares in f64 like the reference). */
export function rmsnorm(out: usize, x: usize, weight: usize, n: u32, eps: f64): void {
  let a = f64x2.splat(0), b = f64x2.splat(0);
  let i: u32 = 0;
  for (; i + 4 <= n; i += 4) {
    const v = v128.load(x + (i << 2));
    const lo = f64x2.promote_low_f32x4(v);
    const hi = f64x2.promote_low_f32x4(i32x4.shuffle(v, v, 2, 3, 0, 1));
    a = f64x2.add(a, f64x2.mul(lo, lo));
    b = f64x2.add(b, f64x2.mul(hi, hi));
  }
  let ss = f64x2.extract_lane(a, 0) + f64x2.extract_lane(a, 1) + f64x2.extract_lane(b, 0) + f64x2.extract_lane(b, 1);
  for (; i < n; i++) {
    const v = load<f32>(x + (i << 2)) as f64;
    ss += v * v;
  }
  const scale = (1.0 / Math.sqrt(ss / (n as f64) + eps)) as f32;
  const vs = f32x4.splat(scale);
  i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = i << 2;
    v128.store(out + off, f32x4.mul(f32x4.mul(v128.load(x + off), vs), v128.load(weight + off)));
  }
  for (; i < n; i++) {
    const off = i << 2;
    store<f32>(out + off, load<f32>(x + off) * scale * load<f32>(weight + off));
  }
}

/** Rotate-half RoPE on heads [h0, h1). */
export function rope(vec: usize, h0: u32, h1: u32, headDim: u32, cosSin: usize): void {
  const half = headDim >> 1;
  for (let h = h0; h < h1; h++) {
    const base = vec + ((h * headDim) << 2);
    let i: u32 = 0;
    for (; i + 4 <= half; i += 4) {
      const pa = base + (i << 2), pb = pa + (half << 2);
      const a = v128.load(pa), b = v128.load(pb);
      const c = v128.load(cosSin + (i << 2)), s = v128.load(cosSin + ((half + i) << 2));
      v128.store(pa, f32x4.sub(f32x4.mul(a, c), f32x4.mul(b, s)));
      v128.store(pb, f32x4.add(f32x4.mul(b, c), f32x4.mul(a, s)));
    }
    for (; i < half; i++) {
      const pa = base + (i << 2), pb = pa + (half << 2);
      const a = load<f32>(pa), b = load<f32>(pb);
      const c = load<f32>(cosSin + (i << 2)), s = load<f32>(cosSin + ((half + i) << 2));
      store<f32>(pa, a * c - b * s);
      store<f32>(pb, b * c + a * s);
    }
  }
}

// @ts-ignore: decorator
@inline function bf16x4(v: v128): v128 {
  const nanMask = i32x4.gt_u(v128.and(v, i32x4.splat(0x7fffffff)), i32x4.splat(0x7f800000));
  const rounded = i32x4.shr_u(i32x4.add(i32x4.add(v, i32x4.splat(0x7fff)), v128.and(i32x4.shr_u(v, 16), i32x4.splat(1))), 16);
  const nan = v128.or(i32x4.shr_u(v, 16), i32x4.splat(0x40));
  return v128.and(v128.bitselect(nan, rounded, nanMask), i32x4.splat(0xffff));
}

/** dst (bf16) = round-to-nearest-even(src f32), n values. */
export function storeBf16(dst: usize, src: usize, n: u32): void {
  let i: u32 = 0;
  for (; i + 8 <= n; i += 8) {
    const a = bf16x4(v128.load(src + (i << 2)));
    const b = bf16x4(v128.load(src + (i << 2), 16));
    v128.store(dst + (i << 1), i16x8.narrow_i32x4_u(a, b));
  }
  for (; i < n; i++) {
    const v = bf16x4(f32x4.splat(load<f32>(src + (i << 2))));
    store<u16>(dst + (i << 1), i32x4.extract_lane(v, 0) as u16);
  }
}

/** gate[i] = silu(gate[i]) * up[i]. */
export function siluMul(gate: usize, up: usize, n: u32): void {
  const one = f32x4.splat(1);
  let i: u32 = 0;
  for (; i + 4 <= n; i += 4) {
    const off = i << 2;
    const g = v128.load(gate + off);
    const e = expx4(f32x4.neg(g));
    v128.store(gate + off, f32x4.mul(f32x4.div(g, f32x4.add(one, e)), v128.load(up + off)));
  }
  for (; i < n; i++) {
    const off = i << 2;
    const g = load<f32>(gate + off);
    store<f32>(gate + off, (g / (1 + expf(-g))) * load<f32>(up + off));
  }
}

/** dst[i] += src[i]. */
export function add(dst: usize, src: usize, n: u32): void {
  let i: u32 = 0;
  for (; i + 4 <= n; i += 4) {
    const off = i << 2;
    v128.store(dst + off, f32x4.add(v128.load(dst + off), v128.load(src + off)));
  }
  for (; i < n; i++) {
    const off = i << 2;
    store<f32>(dst + off, load<f32>(dst + off) + load<f32>(src + off));
  }
}

// ---------------------------------------------------------------------------------------------
// attention

/** Dot of nI f32 at q with nI bf16 at k. */
// @ts-ignore: decorator
@inline function dotBf16(q: usize, k: usize, n: u32): f32 {
  const zero = i32x4.splat(0);
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
  let i: u32 = 0;
  for (; i + 8 <= n; i += 8) {
    const kv = v128.load(k + (i << 1));
    const lo = i16x8.shuffle(zero, kv, 0, 8, 1, 9, 2, 10, 3, 11);
    const hi = i16x8.shuffle(zero, kv, 4, 12, 5, 13, 6, 14, 7, 15);
    a0 = f32x4.add(a0, f32x4.mul(v128.load(q + (i << 2)), lo));
    a1 = f32x4.add(a1, f32x4.mul(v128.load(q + (i << 2), 16), hi));
  }
  let s = hsum(f32x4.add(a0, a1));
  for (; i < n; i++) s += load<f32>(q + (i << 2)) * reinterpret<f32>((load<u16>(k + (i << 1)) as u32) << 16);
  return s;
}

/**
 * Causal GQA attention for query heads [h0, h1); see kernels.ts. scratch holds nHeads*nPos f32
 * (head h uses scratch + h*nPos*4).
 */
export function attention(out: usize, q: usize, kCache: usize, vCache: usize, scratch: usize,
  nHeads: u32, nKvHeads: u32, headDim: u32, nPos: u32, h0: u32, h1: u32): void {
  const kvDim = nKvHeads * headDim;
  const group = nHeads / nKvHeads;
  const scale: f32 = (1.0 / Math.sqrt(headDim as f64)) as f32;
  const rowBytes = kvDim << 1;
  const zero = i32x4.splat(0);
  for (let h = h0; h < h1; h++) {
    const kvh = h / group;
    const qo = q + ((h * headDim) << 2);
    const att = scratch + ((h * nPos) << 2);
    const headOff = (kvh * headDim) << 1;
    // scores
    let max: f32 = -Infinity;
    let kp = kCache + headOff;
    for (let p: u32 = 0; p < nPos; p++) {
      const s = dotBf16(qo, kp, headDim) * scale;
      store<f32>(att + (p << 2), s);
      max = s > max ? s : max;
      kp += rowBytes;
    }
    // softmax numerators
    const vmax = f32x4.splat(max);
    let vsum = f32x4.splat(0);
    let p: u32 = 0;
    for (; p + 4 <= nPos; p += 4) {
      const e = expx4(f32x4.sub(v128.load(att + (p << 2)), vmax));
      v128.store(att + (p << 2), e);
      vsum = f32x4.add(vsum, e);
    }
    let sum = hsum(vsum);
    for (; p < nPos; p++) {
      const e = expf(load<f32>(att + (p << 2)) - max);
      store<f32>(att + (p << 2), e);
      sum += e;
    }
    const inv = f32x4.splat((1.0 as f32) / sum);
    // weighted sum of values, 16 dims at a time (4 accumulators) over all positions
    const oo = out + ((h * headDim) << 2);
    let i: u32 = 0;
    for (; i + 16 <= headDim; i += 16) {
      let o0 = f32x4.splat(0), o1 = f32x4.splat(0), o2 = f32x4.splat(0), o3 = f32x4.splat(0);
      let vp = vCache + headOff + (i << 1);
      for (let pp: u32 = 0; pp < nPos; pp++) {
        const a = v128.load32_splat(att + (pp << 2));
        const v0 = v128.load(vp), v1 = v128.load(vp, 16);
        o0 = f32x4.add(o0, f32x4.mul(a, i16x8.shuffle(zero, v0, 0, 8, 1, 9, 2, 10, 3, 11)));
        o1 = f32x4.add(o1, f32x4.mul(a, i16x8.shuffle(zero, v0, 4, 12, 5, 13, 6, 14, 7, 15)));
        o2 = f32x4.add(o2, f32x4.mul(a, i16x8.shuffle(zero, v1, 0, 8, 1, 9, 2, 10, 3, 11)));
        o3 = f32x4.add(o3, f32x4.mul(a, i16x8.shuffle(zero, v1, 4, 12, 5, 13, 6, 14, 7, 15)));
        vp += rowBytes;
      }
      const d = oo + (i << 2);
      v128.store(d, f32x4.mul(o0, inv), 0);
      v128.store(d, f32x4.mul(o1, inv), 16);
      v128.store(d, f32x4.mul(o2, inv), 32);
      v128.store(d, f32x4.mul(o3, inv), 48);
    }
    for (; i < headDim; i++) {
      let o: f32 = 0;
      let vp = vCache + headOff + (i << 1);
      for (let pp: u32 = 0; pp < nPos; pp++) {
        o += load<f32>(att + (pp << 2)) * reinterpret<f32>((load<u16>(vp) as u32) << 16);
        vp += rowBytes;
      }
      store<f32>(oo + (i << 2), o * f32x4.extract_lane(inv, 0));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// benchmarking

/** Reads `bytes` (multiple of 64) at p; returns a checksum so the loads are not optimized away. */
export function memRead(p: usize, bytes: u32): i32 {
  let a = i32x4.splat(0), b = i32x4.splat(0), c = i32x4.splat(0), d = i32x4.splat(0);
  const end = p + bytes;
  while (p < end) {
    a = i32x4.add(a, v128.load(p, 0));
    b = i32x4.add(b, v128.load(p, 16));
    c = i32x4.add(c, v128.load(p, 32));
    d = i32x4.add(d, v128.load(p, 48));
    p += 64;
  }
  const s = i32x4.add(i32x4.add(a, b), i32x4.add(c, d));
  return i32x4.extract_lane(s, 0) + i32x4.extract_lane(s, 1) + i32x4.extract_lane(s, 2) + i32x4.extract_lane(s, 3);
}

