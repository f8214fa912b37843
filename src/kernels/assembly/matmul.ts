// Matrix x activations for every tensor type: out[t*rows + r] = dot(row r of w, token t of x), rows
// [r0, r1), x in the type's activation type (ggml's vec_dot_type). Q8_0 has its own tuned kernels
// (q8.ts); the other integer types share two generic loops built on the per-type unpacking of
// unpack.ts (decode: one token, four long row streams; prefill: two rows times a chunk of tokens);
// F32/F16/BF16 have plain f32 loops.
// Load-extends (load8x8_s/u) take their offset as an add, never as a memarg offset: Node 24's
// revectorizer (src/kernels/revec.ts) fuses two with offsets 8 apart into one load from the wrong address.
//
// Scratch (this thread's, scratchBytes long) holds the widened activations: every int8 value as
// int16 (so the inner loops are plain loads and i32x4.dot_i16x8_s) and the block scales as f32.
import {
  T_BF16, T_F16, T_F32, T_Q4_1, T_Q5_1, T_Q8_0, T_Q4_0, T_Q5_0, T_IQ4_NL,
  T_Q2_K, T_Q3_K, T_Q4_K, T_Q5_K, T_Q6_K, T_Q4_0X4,
  blockBytes, f16ToF32, f16hiToF32Safe, halves4, halves4Safe, isKQuant, storeFourStreams, transposeSum, transposeSumF,
} from "./common";
import { dOffset, hasMin, kScales16, mOffset, subMin, subScale, w16, w8 } from "./unpack";
import { matmulQ8 } from "./q8";
import { decodeQ4KFast, decodeQ5KFast, decodeQ6KFast } from "./kquant-decode";
import { decodeQ4_0Fast, widenQ4_0 } from "./legacy-decode";
import { decodeQ4_0Relaxed, decodeRelaxed, prefillQ4_0x4Rows, prefillRelaxed, widenKRaw, widenQ4_0Raw } from "./relaxed";
import { decodeQ4_0x4, widenQ4_0Bcast } from "./q4x4";
import { dotLowering } from "./relaxed-q8u";

/** Widened Q8_0/Q8_1 block: 32 i16 (64 B), d as f32x4 (16), barrier slack (16), Q8_1 s as f32x4 or sum(q) as i32x4 (16). */
const XS: u32 = 112;
/** Widened Q8_K super-block: 256 i16 (512), d f32x4 (16), slack (16), bsums 16 i16 (32), sums per 32 as 8 i16 (16). */
const KS: u32 = 592;

// ---------------------------------------------------------------------------------------------
// widening one token (decode)

/** nb Q8_0 (one = false) or Q8_1 blocks at x -> XS-byte widened blocks at dst. */
function widen32(x: usize, nb: u32, dst: usize, one: bool): void {
  const bb: usize = one ? 36 : 34;
  const qo: usize = one ? 4 : 2;
  for (let b: u32 = 0; b < nb; b++) {
    const q = x + qo;
    v128.store(dst, v128.load8x8_s(q), 0);
    v128.store(dst, v128.load8x8_s(q + 8), 16);
    v128.store(dst, v128.load8x8_s(q + 16), 32);
    v128.store(dst, v128.load8x8_s(q + 24), 48);
    v128.store(dst, f32x4.splat(f16ToF32(load<u16>(x) as u32)), 64);
    if (one) {
      v128.store(dst, f32x4.splat(f16ToF32(load<u16>(x, 2) as u32)), 96);
    } else {
      const s16 = i16x8.add(i16x8.extadd_pairwise_i8x16_s(v128.load(q)), i16x8.extadd_pairwise_i8x16_s(v128.load(q, 16)));
      const s32 = i32x4.extadd_pairwise_i16x8_s(s16);
      const s2 = i32x4.add(s32, i32x4.shuffle(s32, s32, 2, 3, 0, 1));
      v128.store(dst, i32x4.add(s2, i32x4.shuffle(s2, s2, 1, 0, 3, 2)), 96);
    }
    x += bb; dst += XS;
  }
}

/** nsb Q8_K super-blocks at x -> KS-byte widened super-blocks at dst. */
function widenK(x: usize, nsb: u32, dst: usize): void {
  for (let b: u32 = 0; b < nsb; b++) {
    for (let i: u32 = 0; i < 32; i++) v128.store(dst + (i << 4), v128.load8x8_s(x + 4 + (i << 3)));
    v128.store(dst, f32x4.splat(load<f32>(x)), 512);
    const b0 = v128.load(x, 260), b1 = v128.load(x, 276);
    v128.store(dst, b0, 544);
    v128.store(dst, b1, 560);
    v128.store(dst, i16x8.narrow_i32x4_s(i32x4.extadd_pairwise_i16x8_s(b0), i32x4.extadd_pairwise_i16x8_s(b1)), 576);
    x += 292; dst += KS;
  }
}

// ---------------------------------------------------------------------------------------------
// generic decode (one token)

/** Integer dot of one 32-value block (type t, at p) with widened activations x0..x3: i32x4 lanes summing to it. */
// @ts-ignore: decorator
@inline function blockDot(t: u32, p: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  if (t == T_Q5_0 || t == T_Q5_1 || t == T_IQ4_NL) { // (Q4_1: the 8-byte form of w16 is faster: 20.5 vs 17.5 GMAC/s)
    const lo = w8(t, p, false), hi = w8(t, p, true);
    return i32x4.add(
      i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(lo), x0), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(lo), x1)),
      i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(hi), x2), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(hi), x3)));
  }
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(w16(t, p, 0, 0), x0), i32x4.dot_i16x8_s(w16(t, p, 0, 1), x1)),
    i32x4.add(i32x4.dot_i16x8_s(w16(t, p, 0, 2), x2), i32x4.dot_i16x8_s(w16(t, p, 0, 3), x3)));
}

/** As blockDot for 32-value chunk c of a K-quant super-block, sub-block scales applied. */
// @ts-ignore: decorator
@inline function chunkDotK(t: u32, p: usize, c: u32, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  const sa = i16x8.splat(subScale(t, p, c << 1) as i16), sb = i16x8.splat(subScale(t, p, (c << 1) + 1) as i16);
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(i16x8.mul(w16(t, p, c, 0), sa), x0), i32x4.dot_i16x8_s(i16x8.mul(w16(t, p, c, 1), sa), x1)),
    i32x4.add(i32x4.dot_i16x8_s(i16x8.mul(w16(t, p, c, 2), sb), x2), i32x4.dot_i16x8_s(i16x8.mul(w16(t, p, c, 3), sb), x3)));
}

/** Sum over the 16 sub-blocks of min * bsum (the K-quant min term, before the float scales). */
// @ts-ignore: decorator
@inline function minSum(t: u32, p: usize, bs: usize): i32 {
  let s: i32 = 0;
  for (let j: u32 = 0; j < 16; j++) s += subMin(t, p, j) * (load<i16>(bs + (j << 1)) as i32);
  return s;
}

/**
 * Four rows p0..p3 (may alias for a remainder) of a 32-value block type t dotted with the widened
 * token xs of nb blocks: [row0..row3], block by block like the reference:
 * acc += f32(sumi) * f32(d * dx) (+ f32(m * s) for Q4_1/Q5_1).
 * The stores of each row's partial sum into the slack are scheduling barriers (docs/kernels.md).
 */
// @ts-ignore: decorator
@inline function dot4L(t: u32, p0: usize, p1: usize, p2: usize, p3: usize, xs: usize, nb: u32): v128 {
  const bb = blockBytes(t);
  let acc = f32x4.splat(0);
  const end = xs + nb * XS;
  while (xs < end) {
    const x0 = v128.load(xs, 0), x1 = v128.load(xs, 16), x2 = v128.load(xs, 32), x3 = v128.load(xs, 48);
    const s0 = blockDot(t, p0, x0, x1, x2, x3);
    v128.store(xs, s0, 80);
    const s1 = blockDot(t, p1, x0, x1, x2, x3);
    v128.store(xs, s1, 80);
    const s2 = blockDot(t, p2, x0, x1, x2, x3);
    v128.store(xs, s2, 80);
    const s3 = blockDot(t, p3, x0, x1, x2, x3);
    const dots = f32x4.convert_i32x4_s(transposeSum(s0, s1, s2, s3));
    const ds = f32x4.mul(halves4(p0, p1, p2, p3, 0), v128.load(xs, 64));
    if (hasMin(t)) acc = f32x4.add(acc, f32x4.add(f32x4.mul(dots, ds), f32x4.mul(halves4(p0, p1, p2, p3, 2), v128.load(xs, 96))));
    else acc = f32x4.add(acc, f32x4.mul(dots, ds));
    p0 += bb; p1 += bb; p2 += bb; p3 += bb; xs += XS;
  }
  return acc;
}

/**
 * Four rows of a K-quant type t dotted with the widened token xs of nsb super-blocks, per
 * super-block like the reference: acc += f32(d * dx) * f32(isum) (- f32(dmin * dx) * f32(summs)).
 */
// @ts-ignore: decorator
@inline function dot4K(t: u32, p0: usize, p1: usize, p2: usize, p3: usize, xs: usize, nsb: u32): v128 {
  const bb = blockBytes(t);
  const dOff = dOffset(t), mOff = mOffset(t);
  let acc = f32x4.splat(0);
  for (let sb: u32 = 0; sb < nsb; sb++) {
    let i0 = i32x4.splat(0), i1 = i32x4.splat(0), i2 = i32x4.splat(0), i3 = i32x4.splat(0);
    for (let c: u32 = 0; c < 8; c++) {
      const xc = xs + (c << 6);
      const x0 = v128.load(xc, 0), x1 = v128.load(xc, 16), x2 = v128.load(xc, 32), x3 = v128.load(xc, 48);
      i0 = i32x4.add(i0, chunkDotK(t, p0, c, x0, x1, x2, x3));
      v128.store(xs, i0, 528);
      i1 = i32x4.add(i1, chunkDotK(t, p1, c, x0, x1, x2, x3));
      v128.store(xs, i1, 528);
      i2 = i32x4.add(i2, chunkDotK(t, p2, c, x0, x1, x2, x3));
      v128.store(xs, i2, 528);
      i3 = i32x4.add(i3, chunkDotK(t, p3, c, x0, x1, x2, x3));
    }
    const isum = f32x4.convert_i32x4_s(transposeSum(i0, i1, i2, i3));
    const dx = v128.load(xs, 512);
    const tt = f32x4.mul(isum, f32x4.mul(halves4Safe(p0, p1, p2, p3, dOff), dx));
    if (hasMin(t)) {
      const bs = xs + 544;
      let m = i32x4.splat(minSum(t, p0, bs));
      m = i32x4.replace_lane(m, 1, minSum(t, p1, bs));
      m = i32x4.replace_lane(m, 2, minSum(t, p2, bs));
      m = i32x4.replace_lane(m, 3, minSum(t, p3, bs));
      acc = f32x4.add(acc, f32x4.sub(tt, f32x4.mul(f32x4.convert_i32x4_s(m), f32x4.mul(halves4Safe(p0, p1, p2, p3, mOff), dx))));
    } else {
      acc = f32x4.add(acc, tt);
    }
    p0 += bb; p1 += bb; p2 += bb; p3 += bb; xs += KS;
  }
  return acc;
}

/**
 * Rows [r0, r1) of an integer type t times one widened token xs (nb blocks or super-blocks per
 * row of rb bytes), as four long sequential streams r0+i, r0+q+i, r0+2q+i, r0+3q+i (q = ceil(n/4)).
 */
// @ts-ignore: decorator
@inline function decodeRows(t: u32, out: usize, w: usize, xs: usize, nb: u32, rb: u32, r0: u32, r1: u32): void {
  const n = r1 - r0;
  const q: u32 = (n + 3) >> 2;
  for (let i: u32 = 0; i < q; i++) {
    const ra = r0 + i;
    const p0 = w + ra * rb;
    const v1 = q + i < n, v2 = (q << 1) + i < n, v3 = q * 3 + i < n;
    const p1 = v1 ? p0 + q * rb : p0;
    const p2 = v2 ? p0 + ((q * rb) << 1) : p0;
    const p3 = v3 ? p0 + q * rb * 3 : p0;
    const acc = isKQuant(t) ? dot4K(t, p0, p1, p2, p3, xs, nb) : dot4L(t, p0, p1, p2, p3, xs, nb);
    storeFourStreams(out, ra, q, acc, v1, v2, v3);
  }
}

function decodeQ4_1(out: usize, w: usize, xs: usize, nb: u32, rb: u32, r0: u32, r1: u32): void { decodeRows(T_Q4_1, out, w, xs, nb, rb, r0, r1); }
function decodeQ5_0(out: usize, w: usize, xs: usize, nb: u32, rb: u32, r0: u32, r1: u32): void { decodeRows(T_Q5_0, out, w, xs, nb, rb, r0, r1); }
function decodeQ5_1(out: usize, w: usize, xs: usize, nb: u32, rb: u32, r0: u32, r1: u32): void { decodeRows(T_Q5_1, out, w, xs, nb, rb, r0, r1); }
function decodeIQ4_NL(out: usize, w: usize, xs: usize, nb: u32, rb: u32, r0: u32, r1: u32): void { decodeRows(T_IQ4_NL, out, w, xs, nb, rb, r0, r1); }
function decodeQ2_K(out: usize, w: usize, xs: usize, nb: u32, rb: u32, r0: u32, r1: u32): void { decodeRows(T_Q2_K, out, w, xs, nb, rb, r0, r1); }
function decodeQ3_K(out: usize, w: usize, xs: usize, nb: u32, rb: u32, r0: u32, r1: u32): void { decodeRows(T_Q3_K, out, w, xs, nb, rb, r0, r1); }

function decode(t: u32, out: usize, w: usize, xs: usize, nb: u32, rb: u32, r0: u32, r1: u32): void {
  switch (t) {
    case T_Q4_0: decodeQ4_0Fast(out, w, xs, nb, rb, r0, r1); break;
    case T_Q4_1: decodeQ4_1(out, w, xs, nb, rb, r0, r1); break;
    case T_Q5_0: decodeQ5_0(out, w, xs, nb, rb, r0, r1); break;
    case T_Q5_1: decodeQ5_1(out, w, xs, nb, rb, r0, r1); break;
    case T_IQ4_NL: decodeIQ4_NL(out, w, xs, nb, rb, r0, r1); break;
    case T_Q2_K: decodeQ2_K(out, w, xs, nb, rb, r0, r1); break;
    case T_Q3_K: decodeQ3_K(out, w, xs, nb, rb, r0, r1); break;
    case T_Q4_K: decodeQ4KFast(out, w, xs, nb, rb, r0, r1); break;
    case T_Q5_K: decodeQ5KFast(out, w, xs, nb, rb, r0, r1); break;
    case T_Q6_K: decodeQ6KFast(out, w, xs, nb, rb, r0, r1); break;
  }
}

// ---------------------------------------------------------------------------------------------
// generic prefill (several tokens)

/**
 * Integer dots of rows A (weights wa0..3, i16) and B (wb0..3) with tokens j (at xp) and j+1 (at
 * xp + 64): [A j, B j, A j+1, B j+1]. The store of the first token's half-reduced dots is a
 * scheduling barrier (docs/kernels.md, dot2xT).
 */
// @ts-ignore: decorator
@inline function dots2x2(wa0: v128, wa1: v128, wa2: v128, wa3: v128, wb0: v128, wb1: v128, wb2: v128, wb3: v128,
  xp: usize, tmp: usize): v128 {
  let x0 = v128.load(xp, 0), x1 = v128.load(xp, 16), x2 = v128.load(xp, 32), x3 = v128.load(xp, 48);
  let c0 = i32x4.dot_i16x8_s(wa0, x0), c1 = i32x4.dot_i16x8_s(wb0, x0);
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa1, x1)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb1, x1));
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa2, x2)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb2, x2));
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa3, x3)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb3, x3));
  const ha = i32x4.add(i32x4.shuffle(c0, c1, 0, 4, 1, 5), i32x4.shuffle(c0, c1, 2, 6, 3, 7));
  v128.store(tmp, ha);
  x0 = v128.load(xp, 64); x1 = v128.load(xp, 80); x2 = v128.load(xp, 96); x3 = v128.load(xp, 112);
  c0 = i32x4.dot_i16x8_s(wa0, x0); c1 = i32x4.dot_i16x8_s(wb0, x0);
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa1, x1)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb1, x1));
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa2, x2)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb2, x2));
  c0 = i32x4.add(c0, i32x4.dot_i16x8_s(wa3, x3)); c1 = i32x4.add(c1, i32x4.dot_i16x8_s(wb3, x3));
  const hb = i32x4.add(i32x4.shuffle(c0, c1, 0, 4, 1, 5), i32x4.shuffle(c0, c1, 2, 6, 3, 7));
  return i32x4.add(i32x4.shuffle(ha, hb, 0, 1, 4, 5), i32x4.shuffle(ha, hb, 2, 3, 6, 7));
}

/** np token pairs, 32-value blocks: facc[p] += f32(dots) * (dAB * dpair) (+ mAB * spair). Two pairs per iteration. */
// @ts-ignore: decorator
@inline function pairsFloat(wa0: v128, wa1: v128, wa2: v128, wa3: v128, wb0: v128, wb1: v128, wb2: v128, wb3: v128,
  xp: usize, meta: usize, facc: usize, np: u32, dAB: v128, mAB: v128, withMin: bool, tmp: usize): void {
  const end = facc + (np << 4);
  while (facc < end) {
    let v = f32x4.mul(f32x4.convert_i32x4_s(dots2x2(wa0, wa1, wa2, wa3, wb0, wb1, wb2, wb3, xp, tmp)), f32x4.mul(dAB, v128.load(meta)));
    if (withMin) v = f32x4.add(v, f32x4.mul(mAB, v128.load(meta, 16)));
    v128.store(facc, f32x4.add(v128.load(facc), v));
    if (facc + 16 >= end) break;
    v = f32x4.mul(f32x4.convert_i32x4_s(dots2x2(wa0, wa1, wa2, wa3, wb0, wb1, wb2, wb3, xp + 128, tmp)), f32x4.mul(dAB, v128.load(meta, 32)));
    if (withMin) v = f32x4.add(v, f32x4.mul(mAB, v128.load(meta, 48)));
    v128.store(facc, f32x4.add(v128.load(facc, 16), v), 16);
    facc += 32; xp += 256; meta += 64;
  }
}

/** np token pairs, one 32-value chunk of a super-block: iacc[p] += dots. Two pairs per iteration. */
// @ts-ignore: decorator
@inline function pairsInt(wa0: v128, wa1: v128, wa2: v128, wa3: v128, wb0: v128, wb1: v128, wb2: v128, wb3: v128,
  xp: usize, iacc: usize, np: u32, tmp: usize): void {
  const end = iacc + (np << 4);
  while (iacc < end) {
    v128.store(iacc, i32x4.add(v128.load(iacc), dots2x2(wa0, wa1, wa2, wa3, wb0, wb1, wb2, wb3, xp, tmp)));
    if (iacc + 16 >= end) break;
    v128.store(iacc, i32x4.add(v128.load(iacc, 16), dots2x2(wa0, wa1, wa2, wa3, wb0, wb1, wb2, wb3, xp + 128, tmp)), 16);
    iacc += 32; xp += 256;
  }
}

/** Per-token bytes of the prefill scratch for `cols` of type t (see prefillGeneric). */
// @ts-ignore: decorator
@inline function prefillBytesPerToken(t: u32, cols: u32): u32 {
  const nch = cols >> 5;
  return isKQuant(t) ? (nch << 6) + (cols >> 8) * 40 + 32 : (nch << 6) + nch * 16 + 32;
}

/**
 * Integer types with nTok > 1: chunks of tokens are widened chunk-major into scratch (32 values
 * as i16 per (32-value chunk, token), 64 bytes), with per (block, token pair) metadata; then for
 * each pair of rows (two long streams r0+i and r0+h+i) every block's weights are unpacked once
 * into eight i16 vectors and used for all tokens of the chunk (dots2x2). 32-value blocks
 * accumulate in f32 per block; K-quants accumulate int32 over the super-block, then apply the
 * float scales and the min term. Same numerics as the decode loops (and the reference).
 *
 * Scratch layout for a chunk of tce (even) tokens, np = tce/2 pairs, nch = cols/32 chunks:
 * values [0, nch*tce*64); metadata nblk*np*32 (32-value blocks: [dx_j, dx_j, dx_j1, dx_j1] and the
 * same for s) or nsb*np*80 (K: d pair, bsums of token j, of token j+1); f32 and i32 accumulators
 * (np*16 each); eight weight vectors (128); a 32-byte barrier slot.
 * Returns false (having done nothing) if two tokens do not fit.
 */
// @ts-ignore: decorator
@inline function prefillGeneric(t: u32, out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32): bool {
  const K = isKQuant(t);
  const one = t == T_Q4_1 || t == T_Q5_1;
  const withMin = hasMin(t);
  const bb = blockBytes(t);
  const rb: u32 = K ? (cols >> 8) * bb : (cols >> 5) * bb;
  const abb: u32 = K ? 292 : one ? 36 : 34;
  const nblk: u32 = K ? cols >> 8 : cols >> 5;
  const arb: u32 = nblk * abb;
  const nch = cols >> 5;
  const metaPair: u32 = K ? 80 : 32;
  const per = prefillBytesPerToken(t, cols);
  if (scratchBytes < 384 + 2 * per) return false;
  const chunk: u32 = ((scratchBytes - 384) / per) & ~1;
  const n = r1 - r0;
  const h: u32 = (n + 1) >> 1;
  const dOff = dOffset(t), mOff = mOffset(t);
  for (let t0: u32 = 0; t0 < nTok; t0 += chunk) {
    const tc = nTok - t0 < chunk ? nTok - t0 : chunk;
    const tce = (tc + 1) & ~1;
    const np = tce >> 1;
    const V = scratch;
    const M = V + nch * tce * 64;
    const FA = M + nblk * np * metaPair;
    const IA = FA + (np << 4);
    const W = IA + (np << 4);
    const TMP = W + 128;
    const SC = TMP + 32; // rows A and B: 16 scales and 16 mins as i16 each (K-quants)
    // widen tokens t0 .. t0+tc-1 (token tce-1 repeats token tc-1 when tc is odd)
    for (let j: u32 = 0; j < tce; j++) {
      const xr = x + (t0 + (j < tc ? j : tc - 1)) * arb;
      for (let c: u32 = 0; c < nch; c++) {
        const q = K ? xr + (c >> 3) * 292 + 4 + ((c & 7) << 5) : xr + c * abb + (one ? 4 : 2);
        const d = V + (c * tce + j) * 64;
        v128.store(d, v128.load8x8_s(q), 0);
        v128.store(d, v128.load8x8_s(q + 8), 16);
        v128.store(d, v128.load8x8_s(q + 16), 32);
        v128.store(d, v128.load8x8_s(q + 24), 48);
      }
      const half: usize = (j & 1) << 3;
      for (let b: u32 = 0; b < nblk; b++) {
        const xb = xr + b * abb;
        const mp = M + (b * np + (j >> 1)) * metaPair;
        if (K) {
          v128.store64_lane(mp + half, f32x4.splat(load<f32>(xb)), 0);
          v128.store(mp + 16 + (half << 2), v128.load(xb, 260));
          v128.store(mp + 32 + (half << 2), v128.load(xb, 276));
        } else {
          v128.store64_lane(mp + half, f32x4.splat(f16ToF32(load<u16>(xb) as u32)), 0);
          if (one) v128.store64_lane(mp + 16 + half, f32x4.splat(f16ToF32(load<u16>(xb, 2) as u32)), 0);
        }
      }
    }
    for (let i: u32 = 0; i < h; i++) {
      const ra = r0 + i;
      let pa = w + ra * rb;
      const vb = h + i < n;
      let pb = vb ? pa + h * rb : pa;
      for (let a = FA; a < IA; a += 16) v128.store(a, f32x4.splat(0));
      for (let b: u32 = 0; b < nblk; b++) {
        if (!K) {
          const dAB = halves4Safe(pa, pb, pa, pb, 0);
          const mAB = withMin ? halves4Safe(pa, pb, pa, pb, 2) : f32x4.splat(0);
          pairsFloat(w16(t, pa, 0, 0), w16(t, pa, 0, 1), w16(t, pa, 0, 2), w16(t, pa, 0, 3),
            w16(t, pb, 0, 0), w16(t, pb, 0, 1), w16(t, pb, 0, 2), w16(t, pb, 0, 3),
            V + b * tce * 64, M + b * np * 32, FA, np, dAB, mAB, withMin, TMP);
        } else {
          for (let a = IA; a < W; a += 16) v128.store(a, i32x4.splat(0));
          kScales16(t, pa, SC);
          kScales16(t, pb, SC + 64);
          for (let c: u32 = 0; c < 8; c++) {
            const s0: usize = c << 2, s1: usize = s0 + 2;
            const sa0 = v128.load16_splat(SC + s0), sa1 = v128.load16_splat(SC + s1);
            const sb0 = v128.load16_splat(SC + 64 + s0), sb1 = v128.load16_splat(SC + 64 + s1);
            pairsInt(
              i16x8.mul(w16(t, pa, c, 0), sa0), i16x8.mul(w16(t, pa, c, 1), sa0), i16x8.mul(w16(t, pa, c, 2), sa1), i16x8.mul(w16(t, pa, c, 3), sa1),
              i16x8.mul(w16(t, pb, c, 0), sb0), i16x8.mul(w16(t, pb, c, 1), sb0), i16x8.mul(w16(t, pb, c, 2), sb1), i16x8.mul(w16(t, pb, c, 3), sb1),
              V + ((b << 3) + c) * tce * 64, IA, np, TMP);
          }
          const dAB = halves4Safe(pa, pb, pa, pb, dOff);
          const mAB = withMin ? halves4Safe(pa, pb, pa, pb, mOff) : f32x4.splat(0);
          const ma0 = v128.load(SC, 32), ma1 = v128.load(SC, 48), mb0 = v128.load(SC, 96), mb1 = v128.load(SC, 112);
          let mp = M + b * np * 80;
          for (let p: u32 = 0; p < np; p++) {
            const dp = v128.load(mp);
            const f = FA + (p << 4);
            const tt = f32x4.mul(f32x4.convert_i32x4_s(v128.load(IA + (p << 4))), f32x4.mul(dAB, dp));
            if (withMin) {
              const bj0 = v128.load(mp, 16), bj1 = v128.load(mp, 32), bk0 = v128.load(mp, 48), bk1 = v128.load(mp, 64);
              const mins = transposeSum(
                i32x4.add(i32x4.dot_i16x8_s(ma0, bj0), i32x4.dot_i16x8_s(ma1, bj1)),
                i32x4.add(i32x4.dot_i16x8_s(mb0, bj0), i32x4.dot_i16x8_s(mb1, bj1)),
                i32x4.add(i32x4.dot_i16x8_s(ma0, bk0), i32x4.dot_i16x8_s(ma1, bk1)),
                i32x4.add(i32x4.dot_i16x8_s(mb0, bk0), i32x4.dot_i16x8_s(mb1, bk1)));
              v128.store(f, f32x4.add(v128.load(f), f32x4.sub(tt, f32x4.mul(f32x4.convert_i32x4_s(mins), f32x4.mul(mAB, dp)))));
            } else {
              v128.store(f, f32x4.add(v128.load(f), tt));
            }
            mp += 80;
          }
        }
        pa += bb; pb += bb;
      }
      for (let j: u32 = 0; j < tc; j++) {
        const v = v128.load(FA + ((j >> 1) << 4));
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
  return true;
}

function prefill(t: u32, out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32): bool {
  switch (t) {
    case T_Q4_0: return prefillGeneric(T_Q4_0, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes);
    case T_Q4_1: return prefillGeneric(T_Q4_1, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes);
    case T_Q5_0: return prefillGeneric(T_Q5_0, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes);
    case T_Q5_1: return prefillGeneric(T_Q5_1, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes);
    case T_IQ4_NL: return prefillGeneric(T_IQ4_NL, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes);
    case T_Q2_K: return prefillGeneric(T_Q2_K, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes);
    case T_Q3_K: return prefillGeneric(T_Q3_K, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes);
    case T_Q4_K: return prefillGeneric(T_Q4_K, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes);
    case T_Q5_K: return prefillGeneric(T_Q5_K, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes);
    case T_Q6_K: return prefillGeneric(T_Q6_K, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes);
    default: return false;
  }
}

// ---------------------------------------------------------------------------------------------
// F32 / F16 / BF16

/** Eight values at p + i of a float type as two f32x4 (lo returned, hi via hi8). */
// @ts-ignore: decorator
@inline function lo8(t: u32, p: usize, i: u32): v128 {
  if (t == T_F32) return v128.load(p + (i << 2));
  const v = v128.load(p + (i << 1));
  const s = i16x8.shuffle(i32x4.splat(0), v, 0, 8, 1, 9, 2, 10, 3, 11);
  return t == T_F16 ? f16hiToF32Safe(s) : s;
}
// @ts-ignore: decorator
@inline function hi8(t: u32, p: usize, i: u32): v128 {
  if (t == T_F32) return v128.load(p + (i << 2), 16);
  const v = v128.load(p + (i << 1));
  const s = i16x8.shuffle(i32x4.splat(0), v, 4, 12, 5, 13, 6, 14, 7, 15);
  return t == T_F16 ? f16hiToF32Safe(s) : s;
}
// @ts-ignore: decorator
@inline function one(t: u32, p: usize, i: u32): f32 {
  if (t == T_F32) return load<f32>(p + (i << 2));
  const h = load<u16>(p + (i << 1)) as u32;
  return t == T_F16 ? f16ToF32(h) : reinterpret<f32>(h << 16);
}

/** Four rows (p0..p3, may alias) of float type t dotted with cols f32 at xf. */
// @ts-ignore: decorator
@inline function dot4F(t: u32, p0: usize, p1: usize, p2: usize, p3: usize, xf: usize, cols: u32, tmp: usize): v128 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let i: u32 = 0;
  for (; i + 8 <= cols; i += 8) {
    const x0 = v128.load(xf + (i << 2)), x1 = v128.load(xf + (i << 2), 16);
    a0 = f32x4.add(a0, f32x4.add(f32x4.mul(lo8(t, p0, i), x0), f32x4.mul(hi8(t, p0, i), x1)));
    v128.store(tmp, a0);
    a1 = f32x4.add(a1, f32x4.add(f32x4.mul(lo8(t, p1, i), x0), f32x4.mul(hi8(t, p1, i), x1)));
    v128.store(tmp, a1);
    a2 = f32x4.add(a2, f32x4.add(f32x4.mul(lo8(t, p2, i), x0), f32x4.mul(hi8(t, p2, i), x1)));
    v128.store(tmp, a2);
    a3 = f32x4.add(a3, f32x4.add(f32x4.mul(lo8(t, p3, i), x0), f32x4.mul(hi8(t, p3, i), x1)));
  }
  let acc = transposeSumF(a0, a1, a2, a3);
  for (; i < cols; i++) {
    const xv = load<f32>(xf + (i << 2));
    let r = f32x4.splat(0);
    r = f32x4.replace_lane(r, 0, one(t, p0, i) * xv);
    r = f32x4.replace_lane(r, 1, one(t, p1, i) * xv);
    r = f32x4.replace_lane(r, 2, one(t, p2, i) * xv);
    r = f32x4.replace_lane(r, 3, one(t, p3, i) * xv);
    acc = f32x4.add(acc, r);
  }
  return acc;
}

// @ts-ignore: decorator
@inline function matmulFloatT(t: u32, out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize): void {
  const rb: u32 = t == T_F32 ? cols << 2 : cols << 1;
  const tmp = scratch;
  const xf0 = scratch + 64;
  for (let tok: u32 = 0; tok < nTok; tok++) {
    let xf: usize;
    if (t == T_F32) {
      xf = x + tok * (cols << 2);
    } else {
      xf = xf0;
      const xt = x + tok * (cols << 1);
      let i: u32 = 0;
      for (; i + 8 <= cols; i += 8) {
        v128.store(xf + (i << 2), lo8(t, xt, i));
        v128.store(xf + (i << 2), hi8(t, xt, i), 16);
      }
      for (; i < cols; i++) store<f32>(xf + (i << 2), one(t, xt, i));
    }
    let r = r0;
    while (r < r1) {
      const left = r1 - r;
      const p0 = w + r * rb;
      const p1 = left > 1 ? p0 + rb : p0;
      const p2 = left > 2 ? p0 + 2 * rb : p0;
      const p3 = left > 3 ? p0 + 3 * rb : p0;
      const acc = dot4F(t, p0, p1, p2, p3, xf, cols, tmp);
      const o = out + ((tok * rows + r) << 2);
      v128.store32_lane(o, acc, 0);
      if (left > 1) v128.store32_lane(o, acc, 1, 4);
      if (left > 2) v128.store32_lane(o, acc, 2, 8);
      if (left > 3) v128.store32_lane(o, acc, 3, 12);
      r += left >= 4 ? 4 : left;
    }
  }
}

function matmulF32(out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32, r0: u32, r1: u32, scratch: usize): void {
  matmulFloatT(T_F32, out, w, x, rows, cols, nTok, r0, r1, scratch);
}
function matmulF16(out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32, r0: u32, r1: u32, scratch: usize): void {
  matmulFloatT(T_F16, out, w, x, rows, cols, nTok, r0, r1, scratch);
}
function matmulBF16(out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32, r0: u32, r1: u32, scratch: usize): void {
  matmulFloatT(T_BF16, out, w, x, rows, cols, nTok, r0, r1, scratch);
}

// ---------------------------------------------------------------------------------------------
// Q4_0x4

/**
 * Q4_0x4 (q4x4.ts; rows, r0 and r1 multiples of 4): the relaxed build only, whose backend
 * alone repacks (wasm.ts repackWeights). Several tokens by the lane = row prefill, one by the
 * four-group decode; both round as Q4_0's kernels do.
 */
function matmulQ4_0x4(out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32, reuse: bool): void {
  if (ASC_FEATURE_RELAXED_SIMD) {
    const slowDots = dotLowering(scratch) == 2;
    if (nTok >= 2 && prefillQ4_0x4Rows(out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes, reuse, slowDots)) return;
    const nb = cols >> 5;
    for (let tok: u32 = 0; tok < nTok; tok++) {
      if (slowDots) widenQ4_0Bcast(x + tok * nb * 34, nb, scratch);
      else widenQ4_0Raw(x + tok * nb * 34, nb, scratch);
      decodeQ4_0x4(out + tok * rows * 4, w, scratch, nb, r0, r1, slowDots);
    }
    return;
  }
  unreachable();
}

// ---------------------------------------------------------------------------------------------
// entry

/**
 * out[tok*rows + r] = row r of w (type t, ggml id) . token tok of x (t's activation type), for r in
 * [r0, r1), tok < nTok. scratch: this thread's scratchBytes (at least scratchNeed(t, cols) for one
 * token, which the caller guarantees; prefill uses more if it can, else runs token by token).
 * reuse: this thread's previous call was a chunk of the same job (same x, cols, nTok, scratch), so
 * the several-token Q8_0/Q4_0 kernel may keep the activations it expanded into the scratch then.
 */
export function matmul(t: u32, out: usize, w: usize, x: usize, rows: u32, cols: u32, nTok: u32,
  r0: u32, r1: u32, scratch: usize, scratchBytes: u32, reuse: bool): void {
  if (nTok == 0 || r1 <= r0) return;
  switch (t) {
    case T_Q8_0: matmulQ8(out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes, reuse); return;
    case T_F32: matmulF32(out, w, x, rows, cols, nTok, r0, r1, scratch); return;
    case T_F16: matmulF16(out, w, x, rows, cols, nTok, r0, r1, scratch); return;
    case T_BF16: matmulBF16(out, w, x, rows, cols, nTok, r0, r1, scratch); return;
    case T_Q4_0X4: matmulQ4_0x4(out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes, reuse); return;
  }
  // where relaxed dots are pmaddubsw sequences (dotLowering 2): the prefill and decode of Q4_0,
  // Q4_K and Q6_K and the decode of Q5_K with their i16 pair sums; the same bits every way
  let slowDots = false;
  if (ASC_FEATURE_RELAXED_SIMD) slowDots = dotLowering(scratch) == 2;
  if (ASC_FEATURE_RELAXED_SIMD) {
    if (nTok >= 2 && prefillRelaxed(t, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes, reuse, slowDots)) return;
  }
  // below 4 tokens the per-block unpacking of the prefill loop costs more than it saves (relaxed
  // build: Q4_0 then goes token by token, so that it keeps decodeQ4_0Relaxed's rounding)
  let simdPrefill = true;
  if (ASC_FEATURE_RELAXED_SIMD) simdPrefill = t != T_Q4_0;
  if (simdPrefill && nTok >= 4 && prefill(t, out, w, x, rows, cols, nTok, r0, r1, scratch, scratchBytes)) return;
  const K = isKQuant(t);
  const one = t == T_Q4_1 || t == T_Q5_1;
  const nb: u32 = K ? cols >> 8 : cols >> 5;
  const rb: u32 = nb * blockBytes(t);
  const arb: u32 = nb * (K ? 292 : one ? 36 : 34);
  for (let tok: u32 = 0; tok < nTok; tok++) {
    const xt = x + tok * arb;
    if (ASC_FEATURE_RELAXED_SIMD) {
      if (t == T_Q4_K || t == T_Q6_K || (t == T_Q5_K && slowDots)) {
        widenKRaw(xt, nb, scratch);
        decodeRelaxed(t, out + tok * rows * 4, w, scratch, nb, rb, r0, r1, slowDots);
        continue;
      }
      if (t == T_Q4_0) {
        widenQ4_0Raw(xt, nb, scratch);
        decodeQ4_0Relaxed(out + tok * rows * 4, w, scratch, nb, rb, r0, r1, slowDots);
        continue;
      }
    }
    if (K) widenK(xt, nb, scratch);
    else if (t == T_Q4_0) widenQ4_0(xt, nb, scratch);
    else widen32(xt, nb, scratch, one);
    decode(t, out + tok * rows * 4, w, scratch, nb, rb, r0, r1);
  }
}
