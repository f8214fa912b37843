// llamesh kernels in AssemblyScript, compiled to WebAssembly SIMD128 by scripts/build-wasm.mjs.
// This is the module's entry: the elementwise kernels and attention live here; the matmuls of
// every tensor type in matmul.ts (Q8_0 in q8.ts), the quantizers in quant.ts.
//
// Rules for every file (see docs/kernels.md):
// - No allocation, no strings, no static data, no globals living in memory: the module imports a
//   shared memory (the Arena) and must touch nothing outside the pointers it is given, because
//   every thread instantiates it on the same memory. Module globals are per instance (per thread).
//   Constant tables are v128 immediates (v128.const), never data segments.
// - Pointers are byte offsets (u32) into the imported memory.
// - Numerics follow src/kernels/reference.ts (see each kernel for what is bit-exact).
// - Thread partitioning is done by the caller: kernels take the sub-range [r0, r1) they own.
import { hsum } from "./common";

export { matmul } from "./matmul";
export { quantizeAct, quantizeWeights } from "./quant";
export { fusedTypes } from "./q8";
export { repackQ4_0x4 } from "./q4x4";

/**
 * expx4's constants in memory, at EXP_C in the module's reserved head of every arena (arena.ts
 * ARENA_RESERVED; static data would start at memoryBase 1024, and there is none). V8 (TurboFan,
 * x64) re-materializes every v128.const at each use inside a loop (3 uops where the use is one,
 * see relaxed.ts CONSTS): expx4's twelve made siluMul and the softmax mostly constant-building.
 * Loaded from memory they cost a load each at most. Every caller stores them first
 * (storeExpConsts: the same bytes from every thread, so concurrent calls agree).
 */
const EXP_C: usize = 256; // 240 bytes
// @ts-ignore: decorator
@inline function storeExpConsts(): void {
  v128.store(EXP_C, f32x4.splat(-87.33654475), 0);
  v128.store(EXP_C, f32x4.splat(88.0), 16);
  v128.store(EXP_C, f32x4.splat(1.44269504088896341), 32);
  v128.store(EXP_C, f32x4.splat(0.5), 48);
  v128.store(EXP_C, f32x4.splat(0.693359375), 64);
  v128.store(EXP_C, f32x4.splat(-2.12194440e-4), 80);
  v128.store(EXP_C, f32x4.splat(1.9875691500e-4), 96);
  v128.store(EXP_C, f32x4.splat(1.3981999507e-3), 112);
  v128.store(EXP_C, f32x4.splat(8.3334519073e-3), 128);
  v128.store(EXP_C, f32x4.splat(4.1665795894e-2), 144);
  v128.store(EXP_C, f32x4.splat(1.6666665459e-1), 160);
  v128.store(EXP_C, f32x4.splat(5.0000001201e-1), 176);
  v128.store(EXP_C, f32x4.splat(1.0), 192);
  v128.store(EXP_C, f32x4.splat(12582912.0), 208);
  v128.store(EXP_C, i32x4.splat(0x4b400000 - 127), 224);
}

/** e^x per lane (Cephes' expf polynomial), its constants from EXP_C (storeExpConsts first). */
// @ts-ignore: decorator
@inline function expx4(x0: v128): v128 {
  let x = f32x4.min(f32x4.max(x0, v128.load(EXP_C, 0)), v128.load(EXP_C, 16));
  let fx = f32x4.floor(f32x4.add(f32x4.mul(x, v128.load(EXP_C, 32)), v128.load(EXP_C, 48)));
  x = f32x4.sub(x, f32x4.mul(fx, v128.load(EXP_C, 64)));
  x = f32x4.sub(x, f32x4.mul(fx, v128.load(EXP_C, 80)));
  const z = f32x4.mul(x, x);
  let y = v128.load(EXP_C, 96);
  y = f32x4.add(f32x4.mul(y, x), v128.load(EXP_C, 112));
  y = f32x4.add(f32x4.mul(y, x), v128.load(EXP_C, 128));
  y = f32x4.add(f32x4.mul(y, x), v128.load(EXP_C, 144));
  y = f32x4.add(f32x4.mul(y, x), v128.load(EXP_C, 160));
  y = f32x4.add(f32x4.mul(y, x), v128.load(EXP_C, 176));
  y = f32x4.add(f32x4.add(f32x4.mul(y, z), x), v128.load(EXP_C, 192));
  // 2^fx: fx is a whole number in [-88, 88], so fx + 1.5 * 2^23 holds it in its low mantissa bits,
  // and those bits minus the magic's are fx + 127 once the magic's bits less 127 are taken off
  // (two uops where trunc_sat's saturating conversion is about eight; the same value)
  const pow2n = i32x4.shl(i32x4.sub(f32x4.add(fx, v128.load(EXP_C, 208)), v128.load(EXP_C, 224)), 23);
  return f32x4.mul(y, pow2n);
}

// @ts-ignore: decorator
@inline function expf(x: f32): f32 {
  return f32x4.extract_lane(expx4(f32x4.splat(x)), 0);
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
  storeExpConsts();
  const one = v128.load(EXP_C, 192);
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

/** f32 lanes rounded to the nearest bfloat16 (ties to even), as f32. */
// @ts-ignore: decorator
@inline function roundBf16(v: v128): v128 {
  return i32x4.shl(bf16x4(v), 16);
}

/**
 * Causal GQA attention for query heads [h0, h1); see kernels.ts. scratch holds nHeads*nPos f32
 * (head h uses scratch + h*nPos*4). As llama.cpp multiplies a BF16 cache: q is rounded to bf16
 * (in place) before its dots with the keys, the softmax weights to bf16 before they weight the
 * values.
 */
export function attention(out: usize, q: usize, kCache: usize, vCache: usize, scratch: usize,
  nHeads: u32, nKvHeads: u32, headDim: u32, nPos: u32, h0: u32, h1: u32): void {
  const kvDim = nKvHeads * headDim;
  const group = nHeads / nKvHeads;
  const scale: f32 = (1.0 / Math.sqrt(headDim as f64)) as f32;
  const rowBytes = kvDim << 1;
  storeExpConsts();
  // q to bf16 precision (llama.cpp converts it to the cache's type for the dot products)
  for (let h = h0; h < h1; h++) {
    const qo = q + ((h * headDim) << 2);
    let j: u32 = 0;
    for (; j + 4 <= headDim; j += 4) v128.store(qo + (j << 2), roundBf16(v128.load(qo + (j << 2))));
    for (; j < headDim; j++) store<f32>(qo + (j << 2), f32x4.extract_lane(roundBf16(f32x4.splat(load<f32>(qo + (j << 2)))), 0));
  }
  // Heads that share a KV head go four at a time through the scores and two at a time through
  // the values: each key or value row is converted from bf16 once for all of them. Per head, the
  // operations and their order are those of one head alone (the reference's).
  let h = h0;
  while (h < h1) {
    const kvh = h / group;
    const quad = h + 4 <= h1 && (h + 3) / group == kvh;
    const kBase = kCache + ((kvh * headDim) << 1);
    if (quad) scoresQuad(q + ((h * headDim) << 2), kBase, scratch + ((h * nPos) << 2), headDim, nPos, rowBytes, scale);
    else scoresOne(q + ((h * headDim) << 2), kBase, scratch + ((h * nPos) << 2), headDim, nPos, rowBytes, scale);
    h += quad ? 4 : 1;
  }
  for (h = h0; h < h1; h++) softmaxRow(scratch + ((h * nPos) << 2), nPos);
  h = h0;
  while (h < h1) {
    const kvh = h / group;
    const pair = h + 2 <= h1 && (h + 1) / group == kvh;
    const vBase = vCache + ((kvh * headDim) << 1);
    const att = scratch + ((h * nPos) << 2), oo = out + ((h * headDim) << 2);
    if (pair) valuesPair(att, att + (nPos << 2), vBase, oo, oo + (headDim << 2), headDim, nPos, rowBytes);
    else valuesOne(att, vBase, oo, headDim, nPos, rowBytes);
    h += pair ? 2 : 1;
  }
}

/** One head's scores over nPos keys (row stride rowBytes from kp), scaled, into att. */
// @ts-ignore: decorator
@inline function scoresOne(qo: usize, kp: usize, att: usize, headDim: u32, nPos: u32, rowBytes: u32, scale: f32): void {
  for (let p: u32 = 0; p < nPos; p++) {
    store<f32>(att + (p << 2), dotBf16(qo, kp, headDim) * scale);
    kp += rowBytes;
  }
}

/** Four consecutive heads' scores (q at qo, qo + headDim f32, ...; att the same), each as scoresOne's. */
// @ts-ignore: decorator
@inline function scoresQuad(qo: usize, kp: usize, att: usize, headDim: u32, nPos: u32, rowBytes: u32, scale: f32): void {
  const zero = i32x4.splat(0);
  const qs = headDim << 2, as = nPos << 2;
  for (let p: u32 = 0; p < nPos; p++) {
    let a0 = f32x4.splat(0), b0 = f32x4.splat(0), a1 = f32x4.splat(0), b1 = f32x4.splat(0);
    let a2 = f32x4.splat(0), b2 = f32x4.splat(0), a3 = f32x4.splat(0), b3 = f32x4.splat(0);
    let i: u32 = 0;
    for (; i + 8 <= headDim; i += 8) {
      const kv = v128.load(kp + (i << 1));
      const lo = i16x8.shuffle(zero, kv, 0, 8, 1, 9, 2, 10, 3, 11);
      const hi = i16x8.shuffle(zero, kv, 4, 12, 5, 13, 6, 14, 7, 15);
      const q0 = qo + (i << 2);
      a0 = f32x4.add(a0, f32x4.mul(v128.load(q0), lo));
      b0 = f32x4.add(b0, f32x4.mul(v128.load(q0, 16), hi));
      a1 = f32x4.add(a1, f32x4.mul(v128.load(q0 + qs), lo));
      b1 = f32x4.add(b1, f32x4.mul(v128.load(q0 + qs, 16), hi));
      a2 = f32x4.add(a2, f32x4.mul(v128.load(q0 + 2 * qs), lo));
      b2 = f32x4.add(b2, f32x4.mul(v128.load(q0 + 2 * qs, 16), hi));
      a3 = f32x4.add(a3, f32x4.mul(v128.load(q0 + 3 * qs), lo));
      b3 = f32x4.add(b3, f32x4.mul(v128.load(q0 + 3 * qs, 16), hi));
    }
    let s0 = hsum(f32x4.add(a0, b0)), s1 = hsum(f32x4.add(a1, b1)), s2 = hsum(f32x4.add(a2, b2)), s3 = hsum(f32x4.add(a3, b3));
    for (; i < headDim; i++) {
      const k = reinterpret<f32>((load<u16>(kp + (i << 1)) as u32) << 16);
      const q0 = qo + (i << 2);
      s0 += load<f32>(q0) * k;
      s1 += load<f32>(q0 + qs) * k;
      s2 += load<f32>(q0 + 2 * qs) * k;
      s3 += load<f32>(q0 + 3 * qs) * k;
    }
    const ap = att + (p << 2);
    store<f32>(ap, s0 * scale);
    store<f32>(ap + as, s1 * scale);
    store<f32>(ap + 2 * as, s2 * scale);
    store<f32>(ap + 3 * as, s3 * scale);
    kp += rowBytes;
  }
}

/** att[0..nPos) (scores) -> the softmax weights, rounded to bf16 (e * (1 / sum), as llama.cpp's soft_max). */
// @ts-ignore: decorator
@inline function softmaxRow(att: usize, nPos: u32): void {
  let max: f32 = -Infinity;
  for (let p: u32 = 0; p < nPos; p++) {
    const s = load<f32>(att + (p << 2));
    max = s > max ? s : max;
  }
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
  p = 0;
  for (; p + 4 <= nPos; p += 4) v128.store(att + (p << 2), roundBf16(f32x4.mul(v128.load(att + (p << 2)), inv)));
  for (; p < nPos; p++) store<f32>(att + (p << 2), f32x4.extract_lane(roundBf16(f32x4.mul(f32x4.splat(load<f32>(att + (p << 2))), inv)), 0));
}

/** One head's output: the weights at att times the values (row stride rowBytes from vBase), 16 dims at a time. */
// @ts-ignore: decorator
@inline function valuesOne(att: usize, vBase: usize, oo: usize, headDim: u32, nPos: u32, rowBytes: u32): void {
  const zero = i32x4.splat(0);
  let i: u32 = 0;
  for (; i + 16 <= headDim; i += 16) {
    let o0 = f32x4.splat(0), o1 = f32x4.splat(0), o2 = f32x4.splat(0), o3 = f32x4.splat(0);
    let vp = vBase + (i << 1);
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
    v128.store(d, o0, 0);
    v128.store(d, o1, 16);
    v128.store(d, o2, 32);
    v128.store(d, o3, 48);
  }
  valuesTail(att, vBase, oo, i, headDim, nPos, rowBytes);
}

/** Two heads sharing a KV head (weights at attA, attB; outputs oA, oB), each as valuesOne's. */
// @ts-ignore: decorator
@inline function valuesPair(attA: usize, attB: usize, vBase: usize, oA: usize, oB: usize, headDim: u32, nPos: u32, rowBytes: u32): void {
  const zero = i32x4.splat(0);
  let i: u32 = 0;
  for (; i + 16 <= headDim; i += 16) {
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0), b3 = f32x4.splat(0);
    let vp = vBase + (i << 1);
    for (let pp: u32 = 0; pp < nPos; pp++) {
      const v0 = v128.load(vp), v1 = v128.load(vp, 16);
      const c0 = i16x8.shuffle(zero, v0, 0, 8, 1, 9, 2, 10, 3, 11), c1 = i16x8.shuffle(zero, v0, 4, 12, 5, 13, 6, 14, 7, 15);
      const c2 = i16x8.shuffle(zero, v1, 0, 8, 1, 9, 2, 10, 3, 11), c3 = i16x8.shuffle(zero, v1, 4, 12, 5, 13, 6, 14, 7, 15);
      const wa = v128.load32_splat(attA + (pp << 2)), wb = v128.load32_splat(attB + (pp << 2));
      a0 = f32x4.add(a0, f32x4.mul(wa, c0)); b0 = f32x4.add(b0, f32x4.mul(wb, c0));
      a1 = f32x4.add(a1, f32x4.mul(wa, c1)); b1 = f32x4.add(b1, f32x4.mul(wb, c1));
      a2 = f32x4.add(a2, f32x4.mul(wa, c2)); b2 = f32x4.add(b2, f32x4.mul(wb, c2));
      a3 = f32x4.add(a3, f32x4.mul(wa, c3)); b3 = f32x4.add(b3, f32x4.mul(wb, c3));
      vp += rowBytes;
    }
    const da = oA + (i << 2), db = oB + (i << 2);
    v128.store(da, a0, 0); v128.store(da, a1, 16); v128.store(da, a2, 32); v128.store(da, a3, 48);
    v128.store(db, b0, 0); v128.store(db, b1, 16); v128.store(db, b2, 32); v128.store(db, b3, 48);
  }
  valuesTail(attA, vBase, oA, i, headDim, nPos, rowBytes);
  valuesTail(attB, vBase, oB, i, headDim, nPos, rowBytes);
}

/** Dimensions [i, headDim) of one head's output, one at a time. */
// @ts-ignore: decorator
@inline function valuesTail(att: usize, vBase: usize, oo: usize, i: u32, headDim: u32, nPos: u32, rowBytes: u32): void {
  for (; i < headDim; i++) {
    let o: f32 = 0;
    let vp = vBase + (i << 1);
    for (let pp: u32 = 0; pp < nPos; pp++) {
      o += load<f32>(att + (pp << 2)) * reinterpret<f32>((load<u16>(vp) as u32) << 16);
      vp += rowBytes;
    }
    store<f32>(oo + (i << 2), o);
  }
}

/**
 * Units [u0, u1) of a step's attention, nTok x nHeads of them (unit u: token u / nHeads, head
 * u % nHeads): entry t of `table` holds token t's out, q, kCache, vCache and nPos (u32 each, 20
 * bytes), as attention() takes them. scratch: nHeads * (largest nPos) f32 of this thread's own.
 * One job for every token of a step (the pool's split over tokens and heads), not one per token.
 */
export function attentionSteps(table: usize, u0: u32, u1: u32, scratch: usize, nHeads: u32, nKvHeads: u32, headDim: u32): void {
  let u = u0;
  while (u < u1) {
    const t = u / nHeads;
    const h0 = u - t * nHeads;
    const h1 = h0 + (u1 - u) < nHeads ? h0 + (u1 - u) : nHeads;
    const e = table + t * 20;
    attention(load<u32>(e), load<u32>(e, 4), load<u32>(e, 8), load<u32>(e, 12), scratch, nHeads, nKvHeads, headDim, load<u32>(e, 16), h0, h1);
    u += h1 - h0;
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

