// Hand-written decode (one token) loop for Q4_0 (with Q8_0 activations), the most common 32-value
// 4-bit type. Same numerics as the generic loop of matmul.ts and bit-identical with it.
//
// Activations: Q8_0 blocks widened by widenQ4_0 (below).
// Load-extends (load8x8_s/u) take their offset as an add, never as a memarg offset: Node 24's
// revectorizer (src/kernels/revec.ts) fuses two with offsets 8 apart into one load from the wrong address.
import { f16ToF32, halves4, transposeSum, storeFourStreams } from "./common";

const XS: u32 = 112;

/**
 * Q8_0 activations widened for Q4_0 (XS = 112 bytes per block): values 0..15 as i16 (32 bytes),
 * then xD = x[16+k] - 16 * x[k] for k < 16 (32 bytes; |xD| <= 2159), d as f32x4 at 64, slack at 80,
 * sum(q) as i32x4 at 96. With a weight byte q = lo + 16 hi widened to i16 as it is,
 * q * x[k] + hi * xD[k] = lo * x[k] + hi * x[16+k]: the low nibble needs no mask.
 */
export function widenQ4_0(x: usize, nb: u32, dst: usize): void {
  for (let b: u32 = 0; b < nb; b++) {
    const a0 = v128.load8x8_s(x + 2), a1 = v128.load8x8_s(x + 10), b0 = v128.load8x8_s(x + 18), b1 = v128.load8x8_s(x + 26);
    v128.store(dst, a0, 0);
    v128.store(dst, a1, 16);
    v128.store(dst, i16x8.sub(b0, i16x8.shl(a0, 4)), 32);
    v128.store(dst, i16x8.sub(b1, i16x8.shl(a1, 4)), 48);
    v128.store(dst, f32x4.splat(f16ToF32(load<u16>(x) as u32)), 64);
    const s16 = i16x8.add(i16x8.add(a0, a1), i16x8.add(b0, b1));
    const s32 = i32x4.extadd_pairwise_i16x8_s(s16);
    const s2 = i32x4.add(s32, i32x4.shuffle(s32, s32, 2, 3, 0, 1));
    v128.store(dst, i32x4.add(s2, i32x4.shuffle(s2, s2, 1, 0, 3, 2)), 96);
    x += 34; dst += XS;
  }
}

/**
 * Integer dot of the unsigned nibbles of one Q4_0 block (at p) with x0, x1 (values 0..15) and the
 * differences d0, d1 (see widenQ4_0): two 8-byte loads widened to i16, one shift each. The -8
 * offset is applied afterwards for four rows at once (8 * sum(x), from the widened block).
 */
// @ts-ignore: decorator
@inline function nibDot(p: usize, x0: v128, x1: v128, d0: v128, d1: v128): v128 {
  const a = v128.load8x8_u(p + 2), b = v128.load8x8_u(p + 10);
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(a, x0), i32x4.dot_i16x8_s(b, x1)),
    i32x4.add(i32x4.dot_i16x8_s(i16x8.shr_u(a, 4), d0), i32x4.dot_i16x8_s(i16x8.shr_u(b, 4), d1)));
}

/** Four Q4_0 rows (may alias) with the widened token xs of nb blocks: acc += f32(sumi) * f32(d * dx). */
// @ts-ignore: decorator
@inline function dot4Q4_0(p0: usize, p1: usize, p2: usize, p3: usize, xs: usize, nb: u32): v128 {
  let acc = f32x4.splat(0);
  const end = xs + nb * XS;
  while (xs < end) {
    const x0 = v128.load(xs, 0), x1 = v128.load(xs, 16), x2 = v128.load(xs, 32), x3 = v128.load(xs, 48);
    const s0 = nibDot(p0, x0, x1, x2, x3);
    v128.store(xs, s0, 80);
    const s1 = nibDot(p1, x0, x1, x2, x3);
    v128.store(xs, s1, 80);
    const s2 = nibDot(p2, x0, x1, x2, x3);
    v128.store(xs, s2, 80);
    const s3 = nibDot(p3, x0, x1, x2, x3);
    const sumi = i32x4.sub(transposeSum(s0, s1, s2, s3), i32x4.shl(v128.load(xs, 96), 3));
    const ds = f32x4.mul(halves4(p0, p1, p2, p3, 0), v128.load(xs, 64));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(sumi), ds));
    p0 += 18; p1 += 18; p2 += 18; p3 += 18; xs += XS;
  }
  return acc;
}

/** Rows [r0, r1) of Q4_0 weights w (rb bytes per row, nb blocks) times the widened token xs. */
export function decodeQ4_0Fast(out: usize, w: usize, xs: usize, nb: u32, rb: u32, r0: u32, r1: u32): void {
  const n = r1 - r0;
  const q: u32 = (n + 3) >> 2;
  for (let i: u32 = 0; i < q; i++) {
    const ra = r0 + i;
    const p0 = w + ra * rb;
    const v1 = q + i < n, v2 = (q << 1) + i < n, v3 = q * 3 + i < n;
    const p1 = v1 ? p0 + q * rb : p0;
    const p2 = v2 ? p0 + ((q * rb) << 1) : p0;
    const p3 = v3 ? p0 + q * rb * 3 : p0;
    const acc = dot4Q4_0(p0, p1, p2, p3, xs, nb);
    storeFourStreams(out, ra, q, acc, v1, v2, v3);
  }
}
