// The Q8_0 x Q8_0 matmul (decode: four long row streams over widened activations; prefill: two rows
// times a chunk of tokens), moved unchanged from kernels.ts; and the Q8_0 / Q8_1 / Q8_K activation
// quantizers. See docs/kernels.md for the design and measurements.
// Load-extends (load8x8_s/u) take their offset as an add, never as a memarg offset: Node 24's
// revectorizer (src/kernels/revec.ts) fuses two with offsets 8 apart into one load from the wrong address.
import { f16ToF32, f16hiToF32, f32ToF16, mulAdd, roundI32, ROUND_C, storeEightStreams, storeRoundConsts, transposeSum, storeFourStreams } from "./common";
import { UNSIGNED_PROBE_BYTES, dotLowering } from "./relaxed-q8u";
import { prefillQ8_0UnsignedRows } from "./relaxed";

const QK: u32 = 32;
const BLOCK: u32 = 34;
/** Bytes per block of widened activations in matmulQ8 scratch: 64 (i16) + 16 (scale) + 16 (slack). */
const XSTRIDE: u32 = 96;
/** Fewest tokens for the unsigned-dot kernel (relaxed-q8u.ts: relaxed dots read as unsigned, x86 with VNNI). */
const UNSIGNED_MIN_TOK: u32 = 2;
/** Row streams of the one-token loop: 4 (decodeQ8x4) or 8 (decodeQ8x8). */
const DECODE_STREAMS: u32 = 8;
/** decodeQ8x8's demand-load distance ahead of each stream in bytes (0: no touch). */
const DECODE_TOUCH: usize = 0;
/** Bytes after the widened token: f16hiToF32's mask (0) and scale (16), the touch sink (32). */
const DCONSTS: u32 = 48;

// ---------------------------------------------------------------------------------------------
// Q8_0

/**
 * A Q8_0 block's 32 levels, round(v * vid), at o + 2: trunc_sat(nearest()) where exact (any
 * product), roundI32 otherwise (finite products only; common.ts).
 */
// @ts-ignore: decorator
@inline function storeQ8Lanes(o: usize, v0: v128, v1: v128, v2: v128, v3: v128, v4: v128, v5: v128, v6: v128, v7: v128,
  vid: v128, exact: bool, magic: v128, bits: v128): void {
  const q0 = q8Round(f32x4.mul(v0, vid), exact, magic, bits), q1 = q8Round(f32x4.mul(v1, vid), exact, magic, bits);
  const q2 = q8Round(f32x4.mul(v2, vid), exact, magic, bits), q3 = q8Round(f32x4.mul(v3, vid), exact, magic, bits);
  const q4 = q8Round(f32x4.mul(v4, vid), exact, magic, bits), q5 = q8Round(f32x4.mul(v5, vid), exact, magic, bits);
  const q6 = q8Round(f32x4.mul(v6, vid), exact, magic, bits), q7 = q8Round(f32x4.mul(v7, vid), exact, magic, bits);
  v128.store(o, i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3)), 2);
  v128.store(o, i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q4, q5), i16x8.narrow_i32x4_s(q6, q7)), 18);
}

// @ts-ignore: decorator
@inline export function q8Round(v: v128, exact: bool, magic: v128, bits: v128): v128 {
  return exact ? i32x4.trunc_sat_f32x4_s(f32x4.nearest(v)) : roundI32(v, magic, bits);
}

/** Quantize nBlocks blocks of 32 f32 at src into Q8_0 at dst (llama.cpp's x86 quantize_row_q8_0, or legacy). */
export function quantActQ8_0(dst: usize, src: usize, nBlocks: u32, legacy: bool): void {
  storeRoundConsts();
  const magic = v128.load(ROUND_C), bits = v128.load(ROUND_C, 16), absMask = v128.load(ROUND_C, 32);
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
    // llama.cpp's x86 quantize_row_q8_0: the multiplier is 127/amax, not 1/d (legacy: 1/d, the
    // engine's quantizeQ8 until it uses quantizeAct and quantizeWeights)
    const d: f32 = amax / (127.0 as f32);
    const id: f32 = legacy ? (d != 0 ? (1.0 as f32) / d : 0) : amax != 0 ? (127.0 as f32) / amax : 0;
    store<u16>(o, f32ToF16(d) as u16);
    const vid = f32x4.splat(id);
    // the exact conversion where a product may be infinite or NaN (a non-finite value, or amax so
    // small that 127 / amax overflows): roundI32 is exact only for finite products
    if (amax < Infinity && id < Infinity) storeQ8Lanes(o, v0, v1, v2, v3, v4, v5, v6, v7, vid, false, magic, bits);
    else storeQ8Lanes(o, v0, v1, v2, v3, v4, v5, v6, v7, vid, true, magic, bits);
  }
}

/**
 * Integer dot of one Q8_0 block of the row at p (its 32 int8, widened to i16 here) with the
 * block's 32 activations as i16 in x0..x3: four i32 lanes whose sum is the block's dot.
 */
// @ts-ignore: decorator
@inline function blockDot(p: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(v128.load8x8_s(p + 2), x0), i32x4.dot_i16x8_s(v128.load8x8_s(p + 10), x1)),
    i32x4.add(i32x4.dot_i16x8_s(v128.load8x8_s(p + 18), x2), i32x4.dot_i16x8_s(v128.load8x8_s(p + 26), x3)));
}

/** The f16 scales of the current blocks of four rows (p0..p3) as f32x4. */
// @ts-ignore: decorator
@inline function rowScales(p0: usize, p1: usize, p2: usize, p3: usize): v128 {
  const hw = (load<u16>(p0) as u64) | ((load<u16>(p1) as u64) << 16) | ((load<u16>(p2) as u64) << 32) | ((load<u16>(p3) as u64) << 48);
  return f16hiToF32(i16x8.shuffle(i32x4.splat(0), i64x2.splat(hw), 0, 8, 1, 9, 2, 10, 3, 11));
}

/**
 * rowScales with f16hiToF32's two constants loaded from C (after the widened token): V8 (x64)
 * re-materializes a v128.const at every use inside a loop (3 uops), a load it keeps or reloads.
 */
// @ts-ignore: decorator
@inline function rowScalesC(p0: usize, p1: usize, p2: usize, p3: usize, C: usize): v128 {
  const hw = (load<u16>(p0) as u64) | ((load<u16>(p1) as u64) << 16) | ((load<u16>(p2) as u64) << 32) | ((load<u16>(p3) as u64) << 48);
  const h = i16x8.shuffle(i32x4.splat(0), i64x2.splat(hw), 0, 8, 1, 9, 2, 10, 3, 11);
  return f32x4.mul(v128.and(i32x4.shr_s(h, 3), v128.load(C, 0)), v128.load(C, 16));
}

/**
 * Four rows (pointers p0..p3, which may alias for a remainder) dotted with one quantized vector xp
 * of nb blocks; returns [row0, row1, row2, row3] as f32x4, summed block by block exactly like the
 * reference (integer block dot, f32 scale product, f32 accumulate in block order).
 */
// @ts-ignore: decorator
@inline function dot4(p0: usize, p1: usize, p2: usize, p3: usize, xp: usize, nb: u32, fused: bool): v128 {
  let acc = f32x4.splat(0);
  for (let b: u32 = 0; b < nb; b++) {
    const x0 = v128.load8x8_s(xp + 2), x1 = v128.load8x8_s(xp + 10), x2 = v128.load8x8_s(xp + 18), x3 = v128.load8x8_s(xp + 26);
    const s0 = blockDot(p0, x0, x1, x2, x3);
    const s1 = blockDot(p1, x0, x1, x2, x3);
    const s2 = blockDot(p2, x0, x1, x2, x3);
    const s3 = blockDot(p3, x0, x1, x2, x3);
    const dots = f32x4.convert_i32x4_s(transposeSum(s0, s1, s2, s3));
    const scale = f32x4.mul(rowScales(p0, p1, p2, p3), f32x4.splat(f16ToF32(load<u16>(xp) as u32)));
    acc = mulAdd(acc, dots, scale, fused);
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
@inline function dot4w(p0: usize, p1: usize, p2: usize, p3: usize, xs: usize, nb: u32, C: usize): v128 {
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
    const scale = f32x4.mul(rowScalesC(p0, p1, p2, p3, C), v128.load(xs, 64));
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
    const wa0 = v128.load8x8_s(pa + 2), wa1 = v128.load8x8_s(pa + 10), wa2 = v128.load8x8_s(pa + 18), wa3 = v128.load8x8_s(pa + 26);
    const wb0 = v128.load8x8_s(pb + 2), wb1 = v128.load8x8_s(pb + 10), wb2 = v128.load8x8_s(pb + 18), wb3 = v128.load8x8_s(pb + 26);
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
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32, reuse: bool): void {
  const nb = cols / QK;
  const rb = nb * BLOCK;
  const per = widenBytes(nb);
  // fusedTypes (below): where the unsigned several-token kernel runs (it accumulates with
  // relaxed_madd), every path here accumulates the same way, so a row gets the same bits in a step
  // of one token or eight. Decided before anything overwrites the scratch; without scratch (the
  // engine always passes some) it cannot be checked and the sums round twice.
  let fused = false;
  if (ASC_FEATURE_RELAXED_SIMD) {
    fused = scratch != 0 && scratchBytes >= UNSIGNED_PROBE_BYTES && dotLowering(scratch) == 0;
    if (fused && nTok >= UNSIGNED_MIN_TOK && prefillQ8_0UnsignedRows(out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes, reuse)) return;
  }
  // With scratch: one token needs per bytes; prefill needs room for two plus accumulators.
  const fits = nTok > 1 ? (per << 1) + 48 <= scratchBytes : per <= scratchBytes;
  if (scratch == 0 || !fits || nTok == 0 || (fused && nTok > 1)) {
    directRows(out, w, x, rows, nb, rb, nTok, r0, r1, fused);
    return;
  }
  if (nTok > 1) {
    matmulQ8Prefill(out, w, x, rows, nb, nTok, r0, r1, scratch, scratchBytes);
    return;
  }
  // One token: widen it (plus the loop's constants), then DECODE_STREAMS long sequential
  // streams (see decodeQ8). Without room for the constants: dot4 straight from the Q8_0 blocks.
  if (per + DCONSTS > scratchBytes) {
    directRows(out, w, x, rows, nb, rb, 1, r0, r1, fused);
    return;
  }
  {
    let p = x;
    let q = scratch;
    for (let b: u32 = 0; b < nb; b++) {
      v128.store(q, v128.load8x8_s(p + 2), 0);
      v128.store(q, v128.load8x8_s(p + 10), 16);
      v128.store(q, v128.load8x8_s(p + 18), 32);
      v128.store(q, v128.load8x8_s(p + 26), 48);
      v128.store(q, f32x4.splat(f16ToF32(load<u16>(p) as u32)), 64);
      p += BLOCK; q += XSTRIDE;
    }
    v128.store(q, i32x4.splat(0x8fffe000), 0);
    v128.store(q, f32x4.splat(5.192296858534828e33), 16);
  }
  if (fused) decodeQ8x8(out, w, scratch, nb, rb, r0, r1, true); // (decodeQ8x4 rounds twice)
  else if (DECODE_STREAMS == 8) decodeQ8x8(out, w, scratch, nb, rb, r0, r1, false);
  else decodeQ8x4(out, w, scratch, nb, rb, r0, r1);
}

/** Without widening (no scratch, or too little): four adjacent rows at a time, dot4 per token (fused: see matmulQ8). */
function directRows(out: usize, w: usize, x: usize, rows: u32, nb: u32, rb: u32, nTok: u32, r0: u32, r1: u32, fused: bool): void {
  let r = r0;
  while (r < r1) {
    const left = r1 - r;
    const p0 = w + r * rb;
    const p1 = left > 1 ? p0 + rb : p0;
    const p2 = left > 2 ? p0 + 2 * rb : p0;
    const p3 = left > 3 ? p0 + 3 * rb : p0;
    for (let t: u32 = 0; t < nTok; t++) {
      store4(out + ((t * rows + r) << 2), dot4(p0, p1, p2, p3, x + t * rb, nb, fused), left);
    }
    r += left >= 4 ? 4 : left;
  }
}

/**
 * Four long sequential streams: rows r0+i, r0+q+i, r0+2q+i, r0+3q+i (q = ceil(n/4)), so each
 * stream runs on into the next row and the hardware prefetchers never restart.
 */
function decodeQ8x4(out: usize, w: usize, xs0: usize, nb: u32, rb: u32, r0: u32, r1: u32): void {
  const n = r1 - r0;
  const q: u32 = (n + 3) >> 2;
  const C = xs0 + nb * XSTRIDE;
  for (let i: u32 = 0; i < q; i++) {
    const ra = r0 + i;
    const p0 = w + ra * rb;
    const v1 = q + i < n, v2 = (q << 1) + i < n, v3 = q * 3 + i < n;
    const p1 = v1 ? p0 + q * rb : p0;
    const p2 = v2 ? p0 + ((q * rb) << 1) : p0;
    const p3 = v3 ? p0 + q * rb * 3 : p0;
    const acc = dot4w(p0, p1, p2, p3, xs0, nb, C);
    storeFourStreams(out, ra, q, acc, v1, v2, v3);
  }
}

/**
 * Eight long sequential streams (rows r0+i+kq, k = 0..7, q = ceil(n/8)) as two sets of four per
 * block, sharing the block's activation loads: more misses in flight per thread than four
 * streams (relaxed.ts's decodeQ4_0Relaxed: 33 -> 41 GMAC/s from DRAM). Per row the same numerics
 * as dot4w. With DECODE_TOUCH, one byte of each stream DECODE_TOUCH bytes ahead is loaded per
 * block (clamped to the chunk's last byte) and xor-ed into a sink stored after the constants.
 */
// @ts-ignore: decorator
@inline function decodeQ8x8(out: usize, w: usize, xs0: usize, nb: u32, rb: u32, r0: u32, r1: u32, fused: bool): void {
  const n = r1 - r0;
  const q: u32 = (n + 7) >> 3;
  const C = xs0 + nb * XSTRIDE;
  const qb = q * rb;
  const lim = w + r1 * rb - 1;
  let sink: u32 = 0;
  for (let i: u32 = 0; i < q; i++) {
    const ra = r0 + i;
    const pa = w + ra * rb;
    let p0 = pa;
    let p1 = q + i < n ? pa + qb : pa, p2 = q * 2 + i < n ? pa + 2 * qb : pa, p3 = q * 3 + i < n ? pa + 3 * qb : pa;
    let p4 = q * 4 + i < n ? pa + 4 * qb : pa, p5 = q * 5 + i < n ? pa + 5 * qb : pa;
    let p6 = q * 6 + i < n ? pa + 6 * qb : pa, p7 = q * 7 + i < n ? pa + 7 * qb : pa;
    let accA = f32x4.splat(0), accB = f32x4.splat(0);
    let xs = xs0;
    while (xs < C) {
      const x0 = v128.load(xs, 0), x1 = v128.load(xs, 16), x2 = v128.load(xs, 32), x3 = v128.load(xs, 48);
      const dx = v128.load(xs, 64);
      const s0 = blockDot(p0, x0, x1, x2, x3);
      v128.store(xs, s0, 80);
      const s1 = blockDot(p1, x0, x1, x2, x3);
      v128.store(xs, s1, 80);
      const s2 = blockDot(p2, x0, x1, x2, x3);
      v128.store(xs, s2, 80);
      const s3 = blockDot(p3, x0, x1, x2, x3);
      accA = mulAdd(accA, f32x4.convert_i32x4_s(transposeSum(s0, s1, s2, s3)), f32x4.mul(rowScalesC(p0, p1, p2, p3, C), dx), fused);
      v128.store(xs, accA, 80);
      const s4 = blockDot(p4, x0, x1, x2, x3);
      v128.store(xs, s4, 80);
      const s5 = blockDot(p5, x0, x1, x2, x3);
      v128.store(xs, s5, 80);
      const s6 = blockDot(p6, x0, x1, x2, x3);
      v128.store(xs, s6, 80);
      const s7 = blockDot(p7, x0, x1, x2, x3);
      accB = mulAdd(accB, f32x4.convert_i32x4_s(transposeSum(s4, s5, s6, s7)), f32x4.mul(rowScalesC(p4, p5, p6, p7, C), dx), fused);
      if (DECODE_TOUCH != 0) {
        sink ^= touch1(p0, lim) ^ touch1(p1, lim) ^ touch1(p2, lim) ^ touch1(p3, lim);
        sink ^= touch1(p4, lim) ^ touch1(p5, lim) ^ touch1(p6, lim) ^ touch1(p7, lim);
      }
      p0 += BLOCK; p1 += BLOCK; p2 += BLOCK; p3 += BLOCK; p4 += BLOCK; p5 += BLOCK; p6 += BLOCK; p7 += BLOCK; xs += XSTRIDE;
    }
    storeEightStreams(out, ra, q, i, n, accA, accB);
  }
  if (DECODE_TOUCH != 0) store<u32>(C, sink, 32);
}

/** One byte of the stream at p, DECODE_TOUCH bytes ahead (at most lim). */
// @ts-ignore: decorator
@inline function touch1(p: usize, lim: usize): u32 {
  const a = p + DECODE_TOUCH;
  return load<u8>(a < lim ? a : lim) as u32;
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
        v128.store(qd, v128.load8x8_s(p + 2), 0);
        v128.store(qd, v128.load8x8_s(p + 10), 16);
        v128.store(qd, v128.load8x8_s(p + 18), 32);
        v128.store(qd, v128.load8x8_s(p + 26), 48);
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

/**
 * fusedTypes: the weight types whose matmuls round once per block on this engine (acc + sumi *
 * scale as one fused multiply-add), as a mask: 1 = Q8_0, 2 = Q4_0. Both need the relaxed build and
 * a fused relaxed_madd (x86 with FMA, ARM); Q8_0 also the unsigned several-token kernel (its
 * one-token paths then accumulate alike, see matmulQ8), Q4_0 nothing more (its relaxed prefill and
 * decode always run there). The TypeScript reference follows (kernels/reference.ts fusedTypes).
 * (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 needs 25 bits: one rounding keeps the last, two lose it.
 * p: 64 bytes of scratch.
 */
export function fusedTypes(p: usize): u32 {
  if (!ASC_FEATURE_RELAXED_SIMD) return 0;
  v128.store(p, f32x4.splat(1.000244140625), 0); // 1 + 2^-12
  v128.store(p, f32x4.splat(-1.00048828125), 16); // -(1 + 2^-11)
  const r = mulAdd(v128.load(p, 16), v128.load(p), v128.load(p), true); // 2^-24 fused, 0 otherwise
  if (f32x4.extract_lane(r, 0) == 0) return 0;
  return dotLowering(p) == 0 ? 3 : 2;
}
