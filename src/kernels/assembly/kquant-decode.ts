// Hand-written decode (one token) loops for the K-quants that matter most for speed: Q4_K, Q5_K
// and Q6_K (llama.cpp's Q4_K_M / Q5_K_M files are Q4_K / Q5_K with some Q6_K tensors). Same
// numerics as the generic loop of matmul.ts (integer super-block sums, then the f32 scales),
// bit-identical with it. Four rows per iteration as four long streams (see decodeRows), one row
// after the other within a super-block, with a store of each row's running sum between them as a
// scheduling barrier (docs/kernels.md).
//
// The activations are the widened Q8_K super-blocks of matmul.ts (KS = 592 bytes: 256 i16, d as
// f32x4 at 512, slack at 528, bsums (16 i16) at 544, sums per 32 (8 i16) at 576).
import { halves4Safe, transposeSum, storeFourStreams } from "./common";
import { q4kScales } from "./unpack";

const KS: u32 = 592;

/** Group g of one Q4_K row (as q5Group without the fifth bit). */
// @ts-ignore: decorator
@inline function q4Group(p: usize, xs: usize, g: u32, sc: usize, bar: usize): v128 {
  const m0f = i8x16.splat(0x0f);
  const q = p + 16 + (g << 5), x = xs + (g << 7);
  const V0 = v128.load(q), V1 = v128.load(q, 16);
  const lo0 = v128.and(V0, m0f), lo1 = v128.and(V1, m0f);
  const pa = i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(lo0), v128.load(x, 0)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(lo0), v128.load(x, 16))),
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(lo1), v128.load(x, 32)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(lo1), v128.load(x, 48))));
  v128.store(bar, pa);
  const hi0 = v128.and(i16x8.shr_u(V0, 4), m0f), hi1 = v128.and(i16x8.shr_u(V1, 4), m0f);
  const pb = i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(hi0), v128.load(x, 64)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(hi0), v128.load(x, 80))),
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(hi1), v128.load(x, 96)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(hi1), v128.load(x, 112))));
  const sel = i8x16.add(i8x16(0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3), i8x16.splat((g << 2) as i8));
  return i32x4.dot_i16x8_s(i16x8.narrow_i32x4_s(pa, pb), i8x16.swizzle(v128.load(sc), sel));
}

/** Four Q4_K rows (p0..p3, may alias) dotted with the widened token xs of nsb super-blocks. */
// @ts-ignore: decorator
@inline function dot4Q4K(p0: usize, p1: usize, p2: usize, p3: usize, xs: usize, nsb: u32): v128 {
  let acc = f32x4.splat(0);
  const tmp = xs + nsb * KS; // 64 bytes: min terms, then 4 x 16: low-nibble sums; 4 x 16: scales
  for (let sb: u32 = 0; sb < nsb; sb++) {
    let s8 = q4kScales(p0 + 4);
    v128.store(tmp, i16x8.extend_low_i8x16_u(s8), 128);
    const xm = v128.load(xs, 576);
    const m0 = i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(s8), xm);
    s8 = q4kScales(p1 + 4);
    v128.store(tmp, i16x8.extend_low_i8x16_u(s8), 144);
    const m1 = i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(s8), xm);
    s8 = q4kScales(p2 + 4);
    v128.store(tmp, i16x8.extend_low_i8x16_u(s8), 160);
    const m2 = i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(s8), xm);
    s8 = q4kScales(p3 + 4);
    v128.store(tmp, i16x8.extend_low_i8x16_u(s8), 176);
    const m3 = i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(s8), xm);
    v128.store(tmp, transposeSum(m0, m1, m2, m3), 0);
    let i0 = i32x4.splat(0), i1 = i32x4.splat(0), i2 = i32x4.splat(0), i3 = i32x4.splat(0);
    for (let g: u32 = 0; g < 4; g++) {
      i0 = i32x4.add(i0, q4Group(p0, xs, g, tmp + 128, tmp + 64));
      v128.store(tmp, i0, 80);
      i1 = i32x4.add(i1, q4Group(p1, xs, g, tmp + 144, tmp + 64));
      v128.store(tmp, i1, 80);
      i2 = i32x4.add(i2, q4Group(p2, xs, g, tmp + 160, tmp + 64));
      v128.store(tmp, i2, 80);
      i3 = i32x4.add(i3, q4Group(p3, xs, g, tmp + 176, tmp + 64));
      v128.store(tmp, i3, 80);
    }
    const isum = f32x4.convert_i32x4_s(transposeSum(i0, i1, i2, i3));
    const mins = f32x4.convert_i32x4_s(v128.load(tmp));
    const dx = v128.load(xs, 512);
    const tt = f32x4.mul(isum, f32x4.mul(halves4Safe(p0, p1, p2, p3, 0), dx));
    acc = f32x4.add(acc, f32x4.sub(tt, f32x4.mul(mins, f32x4.mul(halves4Safe(p0, p1, p2, p3, 2), dx))));
    p0 += 144; p1 += 144; p2 += 144; p3 += 144; xs += KS;
  }
  return acc;
}

/** Rows [r0, r1) of Q4_K weights w (rb bytes per row, nsb super-blocks) times the widened token xs. */
export function decodeQ4KFast(out: usize, w: usize, xs: usize, nsb: u32, rb: u32, r0: u32, r1: u32): void {
  const n = r1 - r0;
  const q: u32 = (n + 3) >> 2;
  for (let i: u32 = 0; i < q; i++) {
    const ra = r0 + i;
    const p0 = w + ra * rb;
    const v1 = q + i < n, v2 = (q << 1) + i < n, v3 = q * 3 + i < n;
    const p1 = v1 ? p0 + q * rb : p0;
    const p2 = v2 ? p0 + ((q * rb) << 1) : p0;
    const p3 = v3 ? p0 + q * rb * 3 : p0;
    const acc = dot4Q4K(p0, p1, p2, p3, xs, nsb);
    storeFourStreams(out, ra, q, acc, v1, v2, v3);
  }
}

// ---------------------------------------------------------------------------------------------
// Q6_K

/**
 * Sub-blocks 8n + 2j + h (j = 0..3) of one Q6_K row (block at p) with the activations of half n:
 * each sub-block's sum of two dots (16 values) fits i16 per lane (4 x 63 x 127), so pairs are
 * narrowed and multiplied by their int8 scales with one dot_i16x8_s. Values are the unsigned
 * levels (0..63); the -32 is applied per super-block. u, v: the row's scales 8n..8n+3 and
 * 8n+4..8n+7 as i16 pairs per i32 lane, so each pair's scale vector is one pshufd (h is a
 * constant after inlining). The masks come from memory (C: 0x0f bytes, then 0x30): V8 rebuilds a
 * v128 constant at every use (three instructions; a load folds into the and), which was a quarter
 * of this loop's instructions.
 */
// @ts-ignore: decorator
@inline function q6Quarter(p: usize, xs: usize, n: u32, h: u32, u: v128, v: v128, C: usize, bar: usize): v128 {
  // the quarter's 64 values: l = 16h .. 16h+15 of the four 32-value rows j of half n, built as
  // bytes 16 at a time (i16x8 shifts are fine on byte data: every result is masked to its bits)
  const l0: usize = h << 4;
  const A = v128.load(p + (n << 6) + l0), B = v128.load(p + (n << 6) + 32 + l0), H = v128.load(p + 128 + (n << 5) + l0);
  const q1 = v128.or(v128.and(A, v128.load(C, 0)), v128.and(i16x8.shl(H, 4), v128.load(C, 16)));
  const q2 = v128.or(v128.and(B, v128.load(C, 0)), v128.and(i16x8.shl(H, 2), v128.load(C, 16)));
  const q3 = v128.or(v128.and(i16x8.shr_u(A, 4), v128.load(C, 0)), v128.and(H, v128.load(C, 16)));
  const q4 = v128.or(v128.and(i16x8.shr_u(B, 4), v128.load(C, 0)), v128.and(i16x8.shr_u(H, 2), v128.load(C, 16)));
  const xo = xs + (n << 8) + (l0 << 1);
  const p0 = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(q1), v128.load(xo, 0)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(q1), v128.load(xo, 16)));
  v128.store(bar, p0);
  const p1 = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(q2), v128.load(xo, 64)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(q2), v128.load(xo, 80)));
  v128.store(bar, p1);
  const p2 = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(q3), v128.load(xo, 128)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(q3), v128.load(xo, 144)));
  v128.store(bar, p2);
  const p3 = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(q4), v128.load(xo, 192)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(q4), v128.load(xo, 208)));
  // pair 0: scales 8n+h, 8n+2+h; pair 1: 8n+4+h, 8n+6+h
  const s01 = h == 0 ? i32x4.shuffle(u, u, 0, 0, 2, 2) : i32x4.shuffle(u, u, 1, 1, 3, 3);
  const s23 = h == 0 ? i32x4.shuffle(v, v, 0, 0, 2, 2) : i32x4.shuffle(v, v, 1, 1, 3, 3);
  return i32x4.add(i32x4.dot_i16x8_s(i16x8.narrow_i32x4_s(p0, p1), s01), i32x4.dot_i16x8_s(i16x8.narrow_i32x4_s(p2, p3), s23));
}

/**
 * One row's Q6_K scales of a super-block as i16 pairs (see q6Quarter) to sv (4 vectors: u, v of
 * n = 0, then of n = 1); returns the start of its integer sum, -32 * sum(scale * bsum).
 */
// @ts-ignore: decorator
@inline export function q6Scales(p: usize, b0: v128, b1: v128, sv: usize): v128 {
  const s = v128.load(p, 192);
  const lo = i16x8.extend_low_i8x16_s(s), hi = i16x8.extend_high_i8x16_s(s);
  v128.store(sv, i16x8.shuffle(lo, lo, 0, 8, 1, 9, 2, 10, 3, 11), 0);
  v128.store(sv, i16x8.shuffle(lo, lo, 4, 12, 5, 13, 6, 14, 7, 15), 16);
  v128.store(sv, i16x8.shuffle(hi, hi, 0, 8, 1, 9, 2, 10, 3, 11), 32);
  v128.store(sv, i16x8.shuffle(hi, hi, 4, 12, 5, 13, 6, 14, 7, 15), 48);
  return i32x4.sub(i32x4.splat(0), i32x4.shl(i32x4.add(i32x4.dot_i16x8_s(lo, b0), i32x4.dot_i16x8_s(hi, b1)), 5));
}

/** Four Q6_K rows (may alias) with the widened token xs of nsb super-blocks: acc += f32(d * dx) * f32(isum). */
// @ts-ignore: decorator
@inline function dot4Q6K(p0: usize, p1: usize, p2: usize, p3: usize, xs: usize, nsb: u32): v128 {
  let acc = f32x4.splat(0);
  // after the token: 4 rows x 64 bytes of scale pairs, the masks (C), a barrier slot and the running sums' slot
  const SV = xs + nsb * KS, C = SV + 256, bar = SV + 288, run = SV + 304;
  v128.store(C, i8x16.splat(0x0f), 0);
  v128.store(C, i8x16.splat(0x30), 16);
  for (let sb: u32 = 0; sb < nsb; sb++) {
    const b0 = v128.load(xs, 544), b1 = v128.load(xs, 560);
    let i0 = q6Scales(p0, b0, b1, SV), i1 = q6Scales(p1, b0, b1, SV + 64);
    let i2 = q6Scales(p2, b0, b1, SV + 128), i3 = q6Scales(p3, b0, b1, SV + 192);
    for (let n: u32 = 0; n < 2; n++) { // n only moves addresses; h (the shuffles) is a literal
      const o: usize = n << 5;
      i0 = i32x4.add(i0, q6Quarter(p0, xs, n, 0, v128.load(SV + o, 0), v128.load(SV + o, 16), C, bar));
      v128.store(run, i0);
      i1 = i32x4.add(i1, q6Quarter(p1, xs, n, 0, v128.load(SV + o, 64), v128.load(SV + o, 80), C, bar));
      v128.store(run, i1);
      i2 = i32x4.add(i2, q6Quarter(p2, xs, n, 0, v128.load(SV + o, 128), v128.load(SV + o, 144), C, bar));
      v128.store(run, i2);
      i3 = i32x4.add(i3, q6Quarter(p3, xs, n, 0, v128.load(SV + o, 192), v128.load(SV + o, 208), C, bar));
      v128.store(run, i3);
      i0 = i32x4.add(i0, q6Quarter(p0, xs, n, 1, v128.load(SV + o, 0), v128.load(SV + o, 16), C, bar));
      v128.store(run, i0);
      i1 = i32x4.add(i1, q6Quarter(p1, xs, n, 1, v128.load(SV + o, 64), v128.load(SV + o, 80), C, bar));
      v128.store(run, i1);
      i2 = i32x4.add(i2, q6Quarter(p2, xs, n, 1, v128.load(SV + o, 128), v128.load(SV + o, 144), C, bar));
      v128.store(run, i2);
      i3 = i32x4.add(i3, q6Quarter(p3, xs, n, 1, v128.load(SV + o, 192), v128.load(SV + o, 208), C, bar));
      v128.store(run, i3);
    }
    const isum = f32x4.convert_i32x4_s(transposeSum(i0, i1, i2, i3));
    acc = f32x4.add(acc, f32x4.mul(isum, f32x4.mul(halves4Safe(p0, p1, p2, p3, 208), v128.load(xs, 512))));
    p0 += 210; p1 += 210; p2 += 210; p3 += 210; xs += KS;
  }
  return acc;
}

/** Rows [r0, r1) of Q6_K weights w (rb bytes per row, nsb super-blocks) times the widened token xs. */
export function decodeQ6KFast(out: usize, w: usize, xs: usize, nsb: u32, rb: u32, r0: u32, r1: u32): void {
  const n = r1 - r0;
  const q: u32 = (n + 3) >> 2;
  for (let i: u32 = 0; i < q; i++) {
    const ra = r0 + i;
    const p0 = w + ra * rb;
    const v1 = q + i < n, v2 = (q << 1) + i < n, v3 = q * 3 + i < n;
    const p1 = v1 ? p0 + q * rb : p0;
    const p2 = v2 ? p0 + ((q * rb) << 1) : p0;
    const p3 = v3 ? p0 + q * rb * 3 : p0;
    const acc = dot4Q6K(p0, p1, p2, p3, xs, nsb);
    storeFourStreams(out, ra, q, acc, v1, v2, v3);
  }
}

// ---------------------------------------------------------------------------------------------
// Q5_K: Q4_K plus a fifth bit per value from qh (bit 2g for the low nibbles of group g, 2g+1 for
// the high ones); same loop as dot4Q4K.

/**
 * Bit b of each qh byte of H as bit 4 (Q5_K's fifth bit of 16 levels), moved there by shl 4 - b or
 * shr b - 4 (a left shift by 4 of i16 lanes would lose the high byte's bits 4..7; i16x8 shifts are
 * fine on byte data, the result is masked to its bit); m10: 0x10 bytes.
 */
// @ts-ignore: decorator
@inline export function q5Bit(H: v128, b: u32, m10: v128): v128 {
  const up: u32 = b < 4 ? 4 - b : 0, dn: u32 = b > 4 ? b - 4 : 0;
  return v128.and(i16x8.shr_u(i16x8.shl(H, up), dn), m10);
}

/**
 * 16 Q5_K levels (0..31): the nibbles of V (its high nibbles if high) with q5Bit's bit b of H;
 * m0f: 0x0f bytes, m10: 0x10 bytes. b is a literal after inlining.
 */
// @ts-ignore: decorator
@inline function q5Levels(V: v128, H: v128, high: bool, b: u32, m0f: v128, m10: v128): v128 {
  return v128.or(v128.and(high ? i16x8.shr_u(V, 4) : V, m0f), q5Bit(H, b, m10));
}

/**
 * Group g (sub-blocks 2g, 2g+1: the 32 bytes qs[32g..]) of one Q5_K row at p with the widened
 * activations xs: levels assembled 16 bytes at a time (low nibble | qh bit 2g << 4, high nibble |
 * qh bit 2g+1 << 4; i16x8 shifts on byte data, every result masked to its bits), widened, dotted;
 * each sub-block's per-lane sums fit i16 (4 x 2 x 31 x 127), so the pair is narrowed and scaled
 * by one dot_i16x8_s with its two scales: uv holds the row's scales 4(g >> 1) .. 4(g >> 1) + 3 as
 * i16 pairs per i32 lane, so the pair's vector is one pshufd (g is a literal at every call). The
 * masks come from memory (C: 0x0f bytes, then 0x10), as in q6Quarter.
 */
// @ts-ignore: decorator
@inline function q5Group(p: usize, xs: usize, g: u32, uv: v128, C: usize, bar: usize): v128 {
  const q = p + 48 + (g << 5), x = xs + (g << 7);
  const V0 = v128.load(q), V1 = v128.load(q, 16);
  const H0 = v128.load(p, 16), H1 = v128.load(p, 32);
  const lo0 = q5Levels(V0, H0, false, g << 1, v128.load(C, 0), v128.load(C, 16));
  const lo1 = q5Levels(V1, H1, false, g << 1, v128.load(C, 0), v128.load(C, 16));
  const pa = i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(lo0), v128.load(x, 0)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(lo0), v128.load(x, 16))),
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(lo1), v128.load(x, 32)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(lo1), v128.load(x, 48))));
  v128.store(bar, pa);
  const hi0 = q5Levels(V0, H0, true, (g << 1) + 1, v128.load(C, 0), v128.load(C, 16));
  const hi1 = q5Levels(V1, H1, true, (g << 1) + 1, v128.load(C, 0), v128.load(C, 16));
  const pb = i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(hi0), v128.load(x, 64)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(hi0), v128.load(x, 80))),
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(hi1), v128.load(x, 96)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(hi1), v128.load(x, 112))));
  const sc = (g & 1) == 0 ? i32x4.shuffle(uv, uv, 0, 0, 1, 1) : i32x4.shuffle(uv, uv, 2, 2, 3, 3);
  return i32x4.dot_i16x8_s(i16x8.narrow_i32x4_s(pa, pb), sc);
}

/**
 * A Q4_K / Q5_K row's unpacked super-block scales s8 ([sc0..7, m0..7], unpack.ts q4kScales): the
 * sub-block scales as i16 pairs per i32 lane to sv (2 vectors: sc0..3, sc4..7), so that a group's
 * scale vector is one pshufd; returns the min term (i32x4 lanes summing to sum(m_j * the sum of x
 * over sub-block j), xm: the token's sums per 32 values).
 */
// @ts-ignore: decorator
@inline export function kScalePairs(s8: v128, xm: v128, sv: usize): v128 {
  const S = i16x8.extend_low_i8x16_u(s8);
  v128.store(sv, i16x8.shuffle(S, S, 0, 8, 1, 9, 2, 10, 3, 11), 0);
  v128.store(sv, i16x8.shuffle(S, S, 4, 12, 5, 13, 6, 14, 7, 15), 16);
  return i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(s8), xm);
}

/** One Q5_K row's super-block scales (kScalePairs). */
// @ts-ignore: decorator
@inline function q5RowScales(p: usize, xm: v128, sv: usize): v128 {
  return kScalePairs(q4kScales(p + 4), xm, sv);
}

/** Four Q5_K rows (may alias) with the widened token xs of nsb super-blocks (per super-block like dot4Q4K). */
// @ts-ignore: decorator
@inline function dot4Q5K(p0: usize, p1: usize, p2: usize, p3: usize, xs: usize, nsb: u32): v128 {
  let acc = f32x4.splat(0);
  // after the token: min terms (0), a barrier slot (64), the running sums' slot (80), the masks (C:
  // 96), the four rows' scale pairs (SV: 128, 32 bytes each)
  const tmp = xs + nsb * KS, bar = tmp + 64, run = tmp + 80, C = tmp + 96, SV = tmp + 128;
  v128.store(C, i8x16.splat(0x0f), 0);
  v128.store(C, i8x16.splat(0x10), 16);
  for (let sb: u32 = 0; sb < nsb; sb++) {
    const xm = v128.load(xs, 576);
    v128.store(tmp, transposeSum(q5RowScales(p0, xm, SV), q5RowScales(p1, xm, SV + 32), q5RowScales(p2, xm, SV + 64), q5RowScales(p3, xm, SV + 96)), 0);
    let i0 = q5Group(p0, xs, 0, v128.load(SV, 0), C, bar);
    v128.store(run, i0);
    let i1 = q5Group(p1, xs, 0, v128.load(SV, 32), C, bar);
    v128.store(run, i1);
    let i2 = q5Group(p2, xs, 0, v128.load(SV, 64), C, bar);
    v128.store(run, i2);
    let i3 = q5Group(p3, xs, 0, v128.load(SV, 96), C, bar);
    v128.store(run, i3);
    i0 = i32x4.add(i0, q5Group(p0, xs, 1, v128.load(SV, 0), C, bar));
    v128.store(run, i0);
    i1 = i32x4.add(i1, q5Group(p1, xs, 1, v128.load(SV, 32), C, bar));
    v128.store(run, i1);
    i2 = i32x4.add(i2, q5Group(p2, xs, 1, v128.load(SV, 64), C, bar));
    v128.store(run, i2);
    i3 = i32x4.add(i3, q5Group(p3, xs, 1, v128.load(SV, 96), C, bar));
    v128.store(run, i3);
    i0 = i32x4.add(i0, q5Group(p0, xs, 2, v128.load(SV, 16), C, bar));
    v128.store(run, i0);
    i1 = i32x4.add(i1, q5Group(p1, xs, 2, v128.load(SV, 48), C, bar));
    v128.store(run, i1);
    i2 = i32x4.add(i2, q5Group(p2, xs, 2, v128.load(SV, 80), C, bar));
    v128.store(run, i2);
    i3 = i32x4.add(i3, q5Group(p3, xs, 2, v128.load(SV, 112), C, bar));
    v128.store(run, i3);
    i0 = i32x4.add(i0, q5Group(p0, xs, 3, v128.load(SV, 16), C, bar));
    v128.store(run, i0);
    i1 = i32x4.add(i1, q5Group(p1, xs, 3, v128.load(SV, 48), C, bar));
    v128.store(run, i1);
    i2 = i32x4.add(i2, q5Group(p2, xs, 3, v128.load(SV, 80), C, bar));
    v128.store(run, i2);
    i3 = i32x4.add(i3, q5Group(p3, xs, 3, v128.load(SV, 112), C, bar));
    const isum = f32x4.convert_i32x4_s(transposeSum(i0, i1, i2, i3));
    const mins = f32x4.convert_i32x4_s(v128.load(tmp));
    const dx = v128.load(xs, 512);
    const tt = f32x4.mul(isum, f32x4.mul(halves4Safe(p0, p1, p2, p3, 0), dx));
    acc = f32x4.add(acc, f32x4.sub(tt, f32x4.mul(mins, f32x4.mul(halves4Safe(p0, p1, p2, p3, 2), dx))));
    p0 += 176; p1 += 176; p2 += 176; p3 += 176; xs += KS;
  }
  return acc;
}

/** Rows [r0, r1) of Q5_K weights w (rb bytes per row, nsb super-blocks) times the widened token xs. */
export function decodeQ5KFast(out: usize, w: usize, xs: usize, nsb: u32, rb: u32, r0: u32, r1: u32): void {
  const n = r1 - r0;
  const q: u32 = (n + 3) >> 2;
  for (let i: u32 = 0; i < q; i++) {
    const ra = r0 + i;
    const p0 = w + ra * rb;
    const v1 = q + i < n, v2 = (q << 1) + i < n, v3 = q * 3 + i < n;
    const p1 = v1 ? p0 + q * rb : p0;
    const p2 = v2 ? p0 + ((q * rb) << 1) : p0;
    const p3 = v3 ? p0 + q * rb * 3 : p0;
    const acc = dot4Q5K(p0, p1, p2, p3, xs, nsb);
    storeFourStreams(out, ra, q, acc, v1, v2, v3);
  }
}
