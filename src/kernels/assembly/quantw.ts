// Weight quantizers: scalar f32 ports of src/kernels/quant/legacy.ts and kquants.ts (which port
// ggml's quantize_row_*_ref and quantize_iq4_nl operation by operation), bit-identical with them.
// WebAssembly f32 arithmetic is IEEE single precision with no contraction, like ggml-base's C.
// Level buffers live in the caller's scratch (no allocation): L at +0 (256 B), Laux at +256 (32),
// weights at +320 (32 f32), scales at +448 (16 f32), mins at +512 (16 f32); then, for
// makeQkx2x4, x, weights, L and Laux of four sub-blocks side by side (4 x 512 bytes at +576);
// QUANTW_SCRATCH = 2624 bytes in all.
import {
  T_IQ4_NL, T_Q2_K, T_Q3_K, T_Q4_0, T_Q4_1, T_Q4_K, T_Q5_0, T_Q5_1, T_Q5_K, T_Q6_K, T_Q8_0,
  f16ToF32, f32ToF16, minK4, scaleK4, scaleQ3K,
} from "./common";
import { iq4Table } from "./unpack";

const GROUP_MAX_EPS: f32 = 1e-15;
const FLT_MAX: f32 = 3.4028234663852886e38;

// @ts-ignore: decorator
@inline function nearestInt(v: f32): i32 {
  return (reinterpret<i32>(v + (12582912.0 as f32)) & 0x007fffff) - 0x00400000;
}
// @ts-ignore: decorator
@inline function toI8(v: i32): i32 {
  return (v << 24) >> 24;
}
// @ts-ignore: decorator
@inline function clampI(v: i32, lo: i32, hi: i32): i32 {
  return v < lo ? lo : v > hi ? hi : v;
}
// @ts-ignore: decorator
@inline function ld(p: usize, i: u32): f32 {
  return load<f32>(p + (i << 2));
}
// @ts-ignore: decorator
@inline function wrHalf(p: usize, v: f32): void {
  store<u16>(p, f32ToF16(v) as u16);
}
// @ts-ignore: decorator
@inline function rdHalf(p: usize): f32 {
  return f16ToF32(load<u16>(p) as u32);
}
/** C's float -> int conversion (truncation). */
// @ts-ignore: decorator
@inline function trunc32(v: f32): i32 {
  return <i32>v;
}

// ---------------------------------------------------------------------------------------------
// 32-value blocks

function quantQ4_0(s: usize, o: usize): void {
  let amax: f32 = 0, max: f32 = 0;
  for (let j: u32 = 0; j < 32; j++) {
    const v = ld(s, j);
    if (amax < abs<f32>(v)) { amax = abs<f32>(v); max = v; }
  }
  const d: f32 = max / (-8.0 as f32);
  const id: f32 = d != 0 ? (1.0 as f32) / d : 0;
  wrHalf(o, d);
  for (let j: u32 = 0; j < 16; j++) {
    const x0 = ld(s, j) * id, x1 = ld(s, 16 + j) * id;
    const q0 = min<i32>(15, toI8(trunc32(x0 + (8.5 as f32))));
    const q1 = min<i32>(15, toI8(trunc32(x1 + (8.5 as f32))));
    store<u8>(o + 2 + j, ((q0 & 0xff) | ((q1 << 4) & 0xff)) as u8);
  }
}

function quantQ4_1(s: usize, o: usize): void {
  let mn: f32 = FLT_MAX, mx: f32 = -FLT_MAX;
  for (let j: u32 = 0; j < 32; j++) {
    const v = ld(s, j);
    if (v < mn) mn = v;
    if (v > mx) mx = v;
  }
  const d: f32 = (mx - mn) / (15.0 as f32);
  const id: f32 = d != 0 ? (1.0 as f32) / d : 0;
  wrHalf(o, d);
  wrHalf(o + 2, mn);
  for (let j: u32 = 0; j < 16; j++) {
    const x0 = (ld(s, j) - mn) * id, x1 = (ld(s, 16 + j) - mn) * id;
    const q0 = min<i32>(15, toI8(trunc32(x0 + (0.5 as f32))));
    const q1 = min<i32>(15, toI8(trunc32(x1 + (0.5 as f32))));
    store<u8>(o + 4 + j, ((q0 & 0xff) | ((q1 << 4) & 0xff)) as u8);
  }
}

function quantQ5_0(s: usize, o: usize): void {
  let amax: f32 = 0, max: f32 = 0;
  for (let j: u32 = 0; j < 32; j++) {
    const v = ld(s, j);
    if (amax < abs<f32>(v)) { amax = abs<f32>(v); max = v; }
  }
  const d: f32 = max / (-16.0 as f32);
  const id: f32 = d != 0 ? (1.0 as f32) / d : 0;
  wrHalf(o, d);
  let qh: u32 = 0;
  for (let j: u32 = 0; j < 16; j++) {
    const x0 = ld(s, j) * id, x1 = ld(s, 16 + j) * id;
    const q0 = (min<i32>(31, toI8(trunc32(x0 + (16.5 as f32)))) & 0xff) as u32;
    const q1 = (min<i32>(31, toI8(trunc32(x1 + (16.5 as f32)))) & 0xff) as u32;
    store<u8>(o + 6 + j, ((q0 & 15) | ((q1 & 15) << 4)) as u8);
    qh |= ((q0 & 0x10) >> 4) << j;
    qh |= ((q1 & 0x10) >> 4) << (j + 16);
  }
  store<u32>(o + 2, qh);
}

function quantQ5_1(s: usize, o: usize): void {
  let mn: f32 = FLT_MAX, mx: f32 = -FLT_MAX;
  for (let j: u32 = 0; j < 32; j++) {
    const v = ld(s, j);
    if (v < mn) mn = v;
    if (v > mx) mx = v;
  }
  const d: f32 = (mx - mn) / (31.0 as f32);
  const id: f32 = d != 0 ? (1.0 as f32) / d : 0;
  wrHalf(o, d);
  wrHalf(o + 2, mn);
  let qh: u32 = 0;
  for (let j: u32 = 0; j < 16; j++) {
    const x0 = (ld(s, j) - mn) * id, x1 = (ld(s, 16 + j) - mn) * id;
    const q0 = (trunc32(x0 + (0.5 as f32)) & 0xff) as u32;
    const q1 = (trunc32(x1 + (0.5 as f32)) & 0xff) as u32;
    store<u8>(o + 8 + j, ((q0 & 15) | ((q1 & 15) << 4)) as u8);
    qh |= ((q0 & 0x10) >> 4) << j;
    qh |= ((q1 & 0x10) >> 4) << (j + 16);
  }
  store<u32>(o + 4, qh);
}

/** roundf: round half away from zero. */
// @ts-ignore: decorator
@inline function roundAway(v: f32): i32 {
  const t = trunc<f32>(v);
  const r = abs<f32>(v - t) >= (0.5 as f32) ? t + (v < 0 ? (-1.0 as f32) : (1.0 as f32)) : t;
  return trunc32(r);
}

/** roundf of four lanes (half away from zero), as i32: trunc, then +-1 where |v - trunc| >= 0.5. */
// @ts-ignore: decorator
@inline function roundAway4(v: v128): v128 {
  const t = f32x4.trunc(v);
  const away = f32x4.ge(v128.and(f32x4.sub(v, t), i32x4.splat(0x7fffffff)), f32x4.splat(0.5));
  const one = v128.or(v128.and(v, i32x4.splat(0x80000000)), f32x4.splat(1)); // copysign(1, v)
  return i32x4.trunc_sat_f32x4_s(f32x4.add(t, v128.and(one, away)));
}

function quantQ8_0(s: usize, o: usize): void {
  const absMask = i32x4.splat(0x7fffffff);
  const v0 = v128.load(s, 0), v1 = v128.load(s, 16), v2 = v128.load(s, 32), v3 = v128.load(s, 48);
  const v4 = v128.load(s, 64), v5 = v128.load(s, 80), v6 = v128.load(s, 96), v7 = v128.load(s, 112);
  // MAX(amax, fabsf(v)) in order equals the plain maximum (no NaN in weights)
  let m = f32x4.max(
    f32x4.max(f32x4.max(v128.and(v0, absMask), v128.and(v1, absMask)), f32x4.max(v128.and(v2, absMask), v128.and(v3, absMask))),
    f32x4.max(f32x4.max(v128.and(v4, absMask), v128.and(v5, absMask)), f32x4.max(v128.and(v6, absMask), v128.and(v7, absMask))));
  m = f32x4.max(m, i32x4.shuffle(m, m, 2, 3, 0, 1));
  m = f32x4.max(m, i32x4.shuffle(m, m, 1, 0, 3, 2));
  const amax = f32x4.extract_lane(m, 0);
  const d: f32 = amax / (127.0 as f32);
  const id: f32 = d != 0 ? (1.0 as f32) / d : 0;
  wrHalf(o, d);
  const vid = f32x4.splat(id);
  const lo = i8x16.narrow_i16x8_s(
    i16x8.narrow_i32x4_s(roundAway4(f32x4.mul(v0, vid)), roundAway4(f32x4.mul(v1, vid))),
    i16x8.narrow_i32x4_s(roundAway4(f32x4.mul(v2, vid)), roundAway4(f32x4.mul(v3, vid))));
  const hi = i8x16.narrow_i16x8_s(
    i16x8.narrow_i32x4_s(roundAway4(f32x4.mul(v4, vid)), roundAway4(f32x4.mul(v5, vid))),
    i16x8.narrow_i32x4_s(roundAway4(f32x4.mul(v6, vid)), roundAway4(f32x4.mul(v7, vid))));
  v128.store(o, lo, 2);
  v128.store(o, hi, 18);
}

/** best_index_int8 over the IQ4_NL levels (lane i of iq4Table). */
// @ts-ignore: decorator
@inline function level(i: i32): f32 {
  return i8x16.extract_lane_s(i8x16.swizzle(iq4Table(), i8x16.splat(i as i8)), 0) as f32;
}
function bestIndex(x: f32): i32 {
  if (x <= (-127.0 as f32)) return 0;
  if (x >= (113.0 as f32)) return 15;
  let ml = 0, mu = 15;
  while (mu - ml > 1) {
    const mav = (ml + mu) >> 1;
    if (x < level(mav)) mu = mav;
    else ml = mav;
  }
  return x - level(mu - 1) < level(mu) - x ? mu - 1 : mu;
}

function quantIQ4_NL(s: usize, o: usize, scratch: usize): void {
  const L = scratch, weight = scratch + 320;
  const ntry: i32 = 7;
  const v0: f32 = -127.0;
  for (let j: u32 = 0; j < 32; j++) store<f32>(weight + (j << 2), ld(s, j) * ld(s, j));
  let amax: f32 = 0, max: f32 = 0;
  for (let j: u32 = 0; j < 32; j++) {
    const v = ld(s, j);
    if (amax < abs<f32>(v)) { amax = abs<f32>(v); max = v; }
  }
  let scale: f32 = 0;
  if (!(amax < GROUP_MAX_EPS)) {
    let d: f32 = -max / v0;
    let id: f32 = (1.0 as f32) / d;
    let sumqx: f32 = 0, sumq2: f32 = 0;
    for (let j: u32 = 0; j < 32; j++) {
      const xb = ld(s, j);
      const l = bestIndex(id * xb);
      store<u8>(L + j, l as u8);
      const q = level(l), w = load<f32>(weight + (j << 2));
      sumqx += w * q * xb;
      sumq2 += w * q * q;
    }
    d = sumq2 > 0 ? sumqx / sumq2 : 0;
    let best: f32 = d * sumqx;
    for (let itry: i32 = -ntry; itry <= ntry; itry++) {
      id = ((itry - 127) as f32) / max;
      sumqx = 0;
      sumq2 = 0;
      for (let j: u32 = 0; j < 32; j++) {
        const xb = ld(s, j);
        const q = level(bestIndex(id * xb)), w = load<f32>(weight + (j << 2));
        sumqx += w * q * xb;
        sumq2 += w * q * q;
      }
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
        d = sumqx / sumq2;
        best = d * sumqx;
      }
    }
    scale = d;
  }
  wrHalf(o, scale);
  const id: f32 = scale != 0 ? (1.0 as f32) / scale : 0;
  for (let j: u32 = 0; j < 32; j++) store<u8>(L + j, bestIndex(id * ld(s, j)) as u8);
  for (let j: u32 = 0; j < 16; j++) store<u8>(o + 2 + j, load<u8>(L + j) | (load<u8>(L + 16 + j) << 4));
}

// ---------------------------------------------------------------------------------------------
// K-quants

/** make_qkx2_quants (see kquants.ts): returns the scale; the min (-min) goes to *theMin. */
function makeQkx2(n: u32, nmax: i32, x: usize, weights: usize, L: usize, Laux: usize,
  rmin: f32, rdelta: f32, nstep: i32, useMad: bool, theMin: usize): f32 {
  let mn = ld(x, 0), mx = ld(x, 0);
  let sumW = ld(weights, 0);
  let sumX: f32 = sumW * ld(x, 0);
  for (let i: u32 = 1; i < n; i++) {
    const xi = ld(x, i);
    if (xi < mn) mn = xi;
    if (xi > mx) mx = xi;
    const w = ld(weights, i);
    sumW += w;
    sumX += w * xi;
  }
  if (mn > 0) mn = 0;
  if (mx == mn) {
    for (let i: u32 = 0; i < n; i++) store<u8>(L + i, 0);
    store<f32>(theMin, -mn);
    return 0;
  }
  let iscale: f32 = (nmax as f32) / (mx - mn);
  let scale: f32 = (1.0 as f32) / iscale;
  let bestError: f32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const xi = ld(x, i);
    const q = clampI(nearestInt(iscale * (xi - mn)), 0, nmax);
    store<u8>(L + i, q as u8);
    let diff: f32 = scale * (q as f32) + mn - xi;
    diff = useMad ? abs<f32>(diff) : diff * diff;
    bestError += ld(weights, i) * diff;
  }
  if (nstep < 1) {
    store<f32>(theMin, -mn);
    return scale;
  }
  for (let is: i32 = 0; is <= nstep; is++) {
    iscale = (rmin + rdelta * (is as f32) + (nmax as f32)) / (mx - mn);
    let sumL: f32 = 0, sumL2: f32 = 0, sumXL: f32 = 0;
    for (let i: u32 = 0; i < n; i++) {
      const xi = ld(x, i);
      const l = clampI(nearestInt(iscale * (xi - mn)), 0, nmax);
      store<u8>(Laux + i, l as u8);
      const w = ld(weights, i);
      const lf = l as f32;
      sumL += w * lf;
      sumL2 += w * lf * lf;
      sumXL += w * lf * xi;
    }
    const D: f32 = sumW * sumL2 - sumL * sumL;
    if (D > 0) {
      let thisScale: f32 = (sumW * sumXL - sumX * sumL) / D;
      let thisMin: f32 = (sumL2 * sumX - sumL * sumXL) / D;
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = sumXL / sumL2;
      }
      let curError: f32 = 0;
      for (let i: u32 = 0; i < n; i++) {
        let diff: f32 = thisScale * (load<u8>(Laux + i) as f32) + thisMin - ld(x, i);
        diff = useMad ? abs<f32>(diff) : diff * diff;
        curError += ld(weights, i) * diff;
      }
      if (curError < bestError) {
        for (let i: u32 = 0; i < n; i++) store<u8>(L + i, load<u8>(Laux + i));
        bestError = curError;
        scale = thisScale;
        mn = thisMin;
      }
    }
  }
  store<f32>(theMin, -mn);
  return scale;
}

/**
 * make_qkx2_quants on four sub-blocks at once, one per f32x4 lane: xt, wt hold value i of the four
 * sub-blocks at +16i (n values), levels go to Lt (i32 lanes, +16i; Lauxt: scratch). Every lane runs
 * exactly the scalar sequence of makeQkx2 (same operations in the same order; comparisons and the
 * scalar branches become lane masks and selects), so the results are bit-identical with it.
 * Scales to sOut (f32x4), -min to mOut.
 */
function makeQkx2x4(n: u32, nmax: i32, xt: usize, wt: usize, Lt: usize, Lauxt: usize,
  rmin: f32, rdelta: f32, nstep: i32, useMad: bool, sOut: usize, mOut: usize): void {
  const zero = f32x4.splat(0);
  const magic = f32x4.splat(12582912.0);
  const lo = i32x4.splat(0), hi = i32x4.splat(nmax);
  const absMask = i32x4.splat(0x7fffffff);
  let mn = v128.load(xt), mx = mn;
  let sumW = v128.load(wt);
  let sumX = f32x4.mul(sumW, mn);
  for (let i: u32 = 1; i < n; i++) {
    const xi = v128.load(xt + (i << 4));
    mn = v128.bitselect(xi, mn, f32x4.lt(xi, mn));
    mx = v128.bitselect(xi, mx, f32x4.gt(xi, mx));
    const w = v128.load(wt + (i << 4));
    sumW = f32x4.add(sumW, w);
    sumX = f32x4.add(sumX, f32x4.mul(w, xi));
  }
  mn = v128.bitselect(zero, mn, f32x4.gt(mn, zero));
  const flat = f32x4.eq(mx, mn); // lanes with max == min: levels 0, scale 0, result min -min
  let iscale = f32x4.div(f32x4.splat(nmax as f32), f32x4.sub(mx, mn));
  let scale = f32x4.div(f32x4.splat(1), iscale);
  let bestError = zero;
  for (let i: u32 = 0; i < n; i++) {
    const xi = v128.load(xt + (i << 4));
    const l = i32x4.min_s(i32x4.max_s(i32x4.sub(v128.and(f32x4.add(f32x4.mul(iscale, f32x4.sub(xi, mn)), magic), i32x4.splat(0x007fffff)), i32x4.splat(0x00400000)), lo), hi);
    v128.store(Lt + (i << 4), l);
    let diff = f32x4.sub(f32x4.add(f32x4.mul(scale, f32x4.convert_i32x4_s(l)), mn), xi);
    diff = useMad ? v128.and(diff, absMask) : f32x4.mul(diff, diff);
    bestError = f32x4.add(bestError, f32x4.mul(v128.load(wt + (i << 4)), diff));
  }
  if (nstep >= 1) {
    for (let is: i32 = 0; is <= nstep; is++) {
      iscale = f32x4.div(f32x4.add(f32x4.add(f32x4.splat(rmin), f32x4.splat(rdelta * (is as f32))), f32x4.splat(nmax as f32)), f32x4.sub(mx, mn));
      let sumL = zero, sumL2 = zero, sumXL = zero;
      for (let i: u32 = 0; i < n; i++) {
        const xi = v128.load(xt + (i << 4));
        const l = i32x4.min_s(i32x4.max_s(i32x4.sub(v128.and(f32x4.add(f32x4.mul(iscale, f32x4.sub(xi, mn)), magic), i32x4.splat(0x007fffff)), i32x4.splat(0x00400000)), lo), hi);
        v128.store(Lauxt + (i << 4), l);
        const wl = f32x4.mul(v128.load(wt + (i << 4)), f32x4.convert_i32x4_s(l));
        sumL = f32x4.add(sumL, wl);
        sumL2 = f32x4.add(sumL2, f32x4.mul(wl, f32x4.convert_i32x4_s(l)));
        sumXL = f32x4.add(sumXL, f32x4.mul(wl, xi));
      }
      const D = f32x4.sub(f32x4.mul(sumW, sumL2), f32x4.mul(sumL, sumL));
      const ok = f32x4.gt(D, zero);
      if (!v128.any_true(ok)) continue;
      let thisScale = f32x4.div(f32x4.sub(f32x4.mul(sumW, sumXL), f32x4.mul(sumX, sumL)), D);
      let thisMin = f32x4.div(f32x4.sub(f32x4.mul(sumL2, sumX), f32x4.mul(sumL, sumXL)), D);
      const pos = f32x4.gt(thisMin, zero);
      thisMin = v128.bitselect(zero, thisMin, pos);
      thisScale = v128.bitselect(f32x4.div(sumXL, sumL2), thisScale, pos);
      let curError = zero;
      for (let i: u32 = 0; i < n; i++) {
        let diff = f32x4.sub(f32x4.add(f32x4.mul(thisScale, f32x4.convert_i32x4_s(v128.load(Lauxt + (i << 4)))), thisMin), v128.load(xt + (i << 4)));
        diff = useMad ? v128.and(diff, absMask) : f32x4.mul(diff, diff);
        curError = f32x4.add(curError, f32x4.mul(v128.load(wt + (i << 4)), diff));
      }
      const better = v128.andnot(v128.and(ok, f32x4.lt(curError, bestError)), flat);
      if (!v128.any_true(better)) continue;
      for (let i: u32 = 0; i < n; i++) v128.store(Lt + (i << 4), v128.bitselect(v128.load(Lauxt + (i << 4)), v128.load(Lt + (i << 4)), better));
      bestError = v128.bitselect(curError, bestError, better);
      scale = v128.bitselect(thisScale, scale, better);
      mn = v128.bitselect(thisMin, mn, better);
    }
  }
  if (v128.any_true(flat)) {
    for (let i: u32 = 0; i < n; i++) v128.store(Lt + (i << 4), v128.bitselect(i32x4.splat(0), v128.load(Lt + (i << 4)), flat));
    scale = v128.bitselect(zero, scale, flat);
  }
  v128.store(sOut, scale);
  v128.store(mOut, f32x4.neg(mn));
}

/**
 * Scales, mins and levels of 4 sub-blocks of n values (sub-block j + jb starts at s + j*n*4; levels
 * to L + (jb + j)*n) with makeQkx2x4. Weights: |x| (absW) or rms + |x| (ggml's Q4_K/Q5_K).
 */
function subBlocks4(s: usize, n: u32, jb: u32, absW: bool, nmax: i32, rmin: f32, nstep: i32, useMad: bool, scratch: usize): void {
  const L = scratch, scales = scratch + 448, mins = scratch + 512;
  const xt = scratch + 576, wt = xt + 512, Lt = wt + 512, Lauxt = Lt + 512;
  transpose4(s + jb * (n << 2), n, xt);
  const absMask = i32x4.splat(0x7fffffff);
  if (absW) {
    for (let i: u32 = 0; i < n; i++) v128.store(wt + (i << 4), v128.and(v128.load(xt + (i << 4)), absMask));
  } else {
    let sx2 = f32x4.splat(0);
    for (let i: u32 = 0; i < n; i++) {
      const xi = v128.load(xt + (i << 4));
      sx2 = f32x4.add(sx2, f32x4.mul(xi, xi));
    }
    const av = f32x4.sqrt(f32x4.div(sx2, f32x4.splat(n as f32)));
    for (let i: u32 = 0; i < n; i++) v128.store(wt + (i << 4), f32x4.add(av, v128.and(v128.load(xt + (i << 4)), absMask)));
  }
  makeQkx2x4(n, nmax, xt, wt, Lt, Lauxt, rmin, 0.1, nstep, useMad, scales + (jb << 2), mins + (jb << 2));
  untranspose4(Lt, n, L + jb * n);
}

/**
 * make_qx_quants (rmse_type 1, no importance weights) on four sub-blocks of n values at once, one
 * per lane (layout as makeQkx2x4; levels + nmax to Lt). Bit-identical with makeQx lane by lane.
 */
function makeQx4(n: u32, nmax: i32, xt: usize, Lt: usize, Lauxt: usize, sOut: usize): void {
  const zero = f32x4.splat(0);
  const magic = f32x4.splat(12582912.0);
  const lo = i32x4.splat(-nmax), hi = i32x4.splat(nmax - 1), off = i32x4.splat(nmax);
  const absMask = i32x4.splat(0x7fffffff);
  let max = zero, amax = zero;
  for (let i: u32 = 0; i < n; i++) {
    const xi = v128.load(xt + (i << 4));
    const ax = v128.and(xi, absMask);
    const g = f32x4.gt(ax, amax);
    amax = v128.bitselect(ax, amax, g);
    max = v128.bitselect(xi, max, g);
  }
  const tiny = f32x4.lt(amax, f32x4.splat(GROUP_MAX_EPS));
  let iscale = f32x4.div(f32x4.splat((-nmax) as f32), max);
  let sumlx = zero, suml2 = zero;
  for (let i: u32 = 0; i < n; i++) {
    const xi = v128.load(xt + (i << 4));
    const l = i32x4.min_s(i32x4.max_s(i32x4.sub(v128.and(f32x4.add(f32x4.mul(iscale, xi), magic), i32x4.splat(0x007fffff)), i32x4.splat(0x00400000)), lo), hi);
    v128.store(Lt + (i << 4), i32x4.add(l, off));
    const w = f32x4.mul(xi, xi), lf = f32x4.convert_i32x4_s(l);
    sumlx = f32x4.add(sumlx, f32x4.mul(f32x4.mul(w, xi), lf));
    suml2 = f32x4.add(suml2, f32x4.mul(f32x4.mul(w, lf), lf));
  }
  let scale = v128.bitselect(zero, f32x4.div(sumlx, suml2), f32x4.eq(suml2, zero));
  let best = f32x4.mul(scale, sumlx);
  for (let is: i32 = -9; is <= 9; is++) {
    if (is == 0) continue;
    iscale = f32x4.div(f32x4.neg(f32x4.add(f32x4.splat(nmax as f32), f32x4.splat((0.1 as f32) * (is as f32)))), max);
    sumlx = zero;
    suml2 = zero;
    for (let i: u32 = 0; i < n; i++) {
      const xi = v128.load(xt + (i << 4));
      const l = i32x4.min_s(i32x4.max_s(i32x4.sub(v128.and(f32x4.add(f32x4.mul(iscale, xi), magic), i32x4.splat(0x007fffff)), i32x4.splat(0x00400000)), lo), hi);
      v128.store(Lauxt + (i << 4), i32x4.add(l, off));
      const w = f32x4.mul(xi, xi), lf = f32x4.convert_i32x4_s(l);
      sumlx = f32x4.add(sumlx, f32x4.mul(f32x4.mul(w, xi), lf));
      suml2 = f32x4.add(suml2, f32x4.mul(f32x4.mul(w, lf), lf));
    }
    const better = v128.andnot(v128.and(f32x4.gt(suml2, zero), f32x4.gt(f32x4.mul(sumlx, sumlx), f32x4.mul(best, suml2))), tiny);
    if (!v128.any_true(better)) continue;
    for (let i: u32 = 0; i < n; i++) v128.store(Lt + (i << 4), v128.bitselect(v128.load(Lauxt + (i << 4)), v128.load(Lt + (i << 4)), better));
    const sc = f32x4.div(sumlx, suml2);
    scale = v128.bitselect(sc, scale, better);
    best = v128.bitselect(f32x4.mul(sc, sumlx), best, better);
  }
  if (v128.any_true(tiny)) {
    for (let i: u32 = 0; i < n; i++) v128.store(Lt + (i << 4), v128.bitselect(i32x4.splat(0), v128.load(Lt + (i << 4)), tiny));
    scale = v128.bitselect(zero, scale, tiny);
  }
  v128.store(sOut, scale);
}

/** Transpose four sub-blocks of n values (sub-block j at base + j*n*4) to xt (value i of each at +16i). */
// @ts-ignore: decorator
@inline function transpose4(base: usize, n: u32, xt: usize): void {
  const rs = n << 2;
  for (let i: u32 = 0; i < n; i += 4) {
    const a = v128.load(base + (i << 2)), b = v128.load(base + rs + (i << 2));
    const c = v128.load(base + 2 * rs + (i << 2)), d = v128.load(base + 3 * rs + (i << 2));
    const ab0 = i32x4.shuffle(a, b, 0, 4, 1, 5), ab1 = i32x4.shuffle(a, b, 2, 6, 3, 7);
    const cd0 = i32x4.shuffle(c, d, 0, 4, 1, 5), cd1 = i32x4.shuffle(c, d, 2, 6, 3, 7);
    v128.store(xt + (i << 4), i32x4.shuffle(ab0, cd0, 0, 1, 4, 5));
    v128.store(xt + ((i + 1) << 4), i32x4.shuffle(ab0, cd0, 2, 3, 6, 7));
    v128.store(xt + ((i + 2) << 4), i32x4.shuffle(ab1, cd1, 0, 1, 4, 5));
    v128.store(xt + ((i + 3) << 4), i32x4.shuffle(ab1, cd1, 2, 3, 6, 7));
  }
}

/** Levels (i32 lanes at Lt, value i at +16i) of four sub-blocks of n back to bytes at L + j*n. */
// @ts-ignore: decorator
@inline function untranspose4(Lt: usize, n: u32, L: usize): void {
  for (let i: u32 = 0; i < n; i++) {
    const l = v128.load(Lt + (i << 4));
    store<u8>(L + i, i32x4.extract_lane(l, 0) as u8);
    store<u8>(L + n + i, i32x4.extract_lane(l, 1) as u8);
    store<u8>(L + 2 * n + i, i32x4.extract_lane(l, 2) as u8);
    store<u8>(L + 3 * n + i, i32x4.extract_lane(l, 3) as u8);
  }
}

/** make_q3_quants with do_rmse; levels (int8, + nmax at the end) at L. */
function makeQ3(n: u32, nmax: i32, x: usize, L: usize): f32 {
  let max: f32 = 0, amax: f32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const ax = abs<f32>(ld(x, i));
    if (ax > amax) { amax = ax; max = ld(x, i); }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i: u32 = 0; i < n; i++) store<i8>(L + i, 0);
    return 0;
  }
  const iscale: f32 = ((-nmax) as f32) / max;
  let sumlx: f32 = 0, suml2: f32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const xi = ld(x, i);
    const l = clampI(nearestInt(iscale * xi), -nmax, nmax - 1);
    store<i8>(L + i, l as i8);
    const w: f32 = xi * xi;
    sumlx += w * xi * (l as f32);
    suml2 += w * (l as f32) * (l as f32);
  }
  for (let itry = 0; itry < 5; itry++) {
    let changed = 0;
    for (let i: u32 = 0; i < n; i++) {
      const xi = ld(x, i);
      const w: f32 = xi * xi;
      const li = load<i8>(L + i) as i32;
      const lif = li as f32;
      let slx: f32 = sumlx - w * xi * lif;
      if (slx > 0) {
        let sl2: f32 = suml2 - w * lif * lif;
        const nl = clampI(nearestInt(xi * sl2 / slx), -nmax, nmax - 1);
        if (nl != li) {
          const nlf = nl as f32;
          slx += w * xi * nlf;
          sl2 += w * nlf * nlf;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            store<i8>(L + i, nl as i8);
            sumlx = slx;
            suml2 = sl2;
            changed++;
          }
        }
      }
    }
    if (!changed) break;
  }
  for (let i: u32 = 0; i < n; i++) store<i8>(L + i, ((load<i8>(L + i) as i32) + nmax) as i8);
  return suml2 > 0 ? sumlx / suml2 : 0;
}

/** make_qx_quants with rmse_type 1 and no importance weights; levels (+ nmax) at L. */
function makeQx(n: u32, nmax: i32, x: usize, L: usize): f32 {
  let max: f32 = 0, amax: f32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const ax = abs<f32>(ld(x, i));
    if (ax > amax) { amax = ax; max = ld(x, i); }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i: u32 = 0; i < n; i++) store<i8>(L + i, 0);
    return 0;
  }
  let iscale: f32 = ((-nmax) as f32) / max;
  let sumlx: f32 = 0, suml2: f32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const xi = ld(x, i);
    const l = clampI(nearestInt(iscale * xi), -nmax, nmax - 1);
    store<i8>(L + i, (l + nmax) as i8);
    const w: f32 = xi * xi;
    sumlx += w * xi * (l as f32);
    suml2 += w * (l as f32) * (l as f32);
  }
  let scale: f32 = suml2 != 0 ? sumlx / suml2 : 0;
  let best: f32 = scale * sumlx;
  for (let is: i32 = -9; is <= 9; is++) {
    if (is == 0) continue;
    iscale = -((nmax as f32) + (0.1 as f32) * (is as f32)) / max;
    sumlx = 0;
    suml2 = 0;
    for (let i: u32 = 0; i < n; i++) {
      const xi = ld(x, i);
      const l = clampI(nearestInt(iscale * xi), -nmax, nmax - 1);
      const w: f32 = xi * xi;
      sumlx += w * xi * (l as f32);
      suml2 += w * (l as f32) * (l as f32);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (let i: u32 = 0; i < n; i++) store<i8>(L + i, (nmax + clampI(nearestInt(iscale * ld(x, i)), -nmax, nmax - 1)) as i8);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

function pack2bit(L: usize, q: usize): void {
  for (let j: u32 = 0; j < 256; j += 128) {
    for (let l: u32 = 0; l < 32; l++) {
      store<u8>(q + (j >> 2) + l, load<u8>(L + j + l) | (load<u8>(L + j + l + 32) << 2) |
        (load<u8>(L + j + l + 64) << 4) | (load<u8>(L + j + l + 96) << 6));
    }
  }
}

function quantQ2_K(s: usize, o: usize, scratch: usize): void {
  const L = scratch, Laux = scratch + 256, weights = scratch + 320, scales = scratch + 448, mins = scratch + 512;
  const q4scale: f32 = 15;
  let maxScale: f32 = 0, maxMin: f32 = 0;
  for (let j: u32 = 0; j < 16; j += 4) subBlocks4(s, 16, j, true, 3, -0.5, 15, true, scratch);
  for (let j: u32 = 0; j < 16; j++) {
    const sc = load<f32>(scales + (j << 2)), m = load<f32>(mins + (j << 2));
    if (sc > maxScale) maxScale = sc;
    if (m > maxMin) maxMin = m;
  }
  if (maxScale > 0) {
    const iscale: f32 = q4scale / maxScale;
    for (let j: u32 = 0; j < 16; j++) store<u8>(o + j, (nearestInt(iscale * load<f32>(scales + (j << 2))) & 0xff) as u8);
    wrHalf(o + 80, maxScale / q4scale);
  } else {
    for (let j: u32 = 0; j < 16; j++) store<u8>(o + j, 0);
    wrHalf(o + 80, 0);
  }
  if (maxMin > 0) {
    const iscale: f32 = q4scale / maxMin;
    for (let j: u32 = 0; j < 16; j++) {
      store<u8>(o + j, (((load<u8>(o + j) as i32) | (nearestInt(iscale * load<f32>(mins + (j << 2))) << 4)) & 0xff) as u8);
    }
    wrHalf(o + 82, maxMin / q4scale);
  } else {
    wrHalf(o + 82, 0);
  }
  const dAll = rdHalf(o + 80), dMin = rdHalf(o + 82);
  for (let j: u32 = 0; j < 16; j++) {
    const sc = load<u8>(o + j);
    const d: f32 = dAll * ((sc & 15) as f32);
    if (d == 0) continue;
    const dm: f32 = dMin * ((sc >> 4) as f32);
    for (let ii: u32 = 0; ii < 16; ii++) {
      store<u8>(L + 16 * j + ii, clampI(nearestInt((ld(s, 16 * j + ii) + dm) / d), 0, 3) as u8);
    }
  }
  pack2bit(L, o + 16);
}

function quantQ3_K(s: usize, o: usize, scratch: usize): void {
  const L = scratch, scales = scratch + 448;
  let maxScale: f32 = 0, amax: f32 = 0;
  for (let j: u32 = 0; j < 16; j++) {
    const sc = makeQ3(16, 4, s + 64 * j, L + 16 * j);
    store<f32>(scales + (j << 2), sc);
    if (abs<f32>(sc) > amax) { amax = abs<f32>(sc); maxScale = sc; }
  }
  const sb = o + 96;
  for (let k: u32 = 0; k < 12; k++) store<u8>(sb + k, 0);
  if (maxScale != 0) {
    const iscale: f32 = (-32.0 as f32) / maxScale;
    for (let j: u32 = 0; j < 16; j++) {
      let l = toI8(nearestInt(iscale * load<f32>(scales + (j << 2))));
      l = toI8(clampI(l, -32, 31) + 32);
      if (j < 8) store<u8>(sb + j, (l & 15) as u8);
      else store<u8>(sb + j - 8, (((load<u8>(sb + j - 8) as i32) | ((l & 15) << 4)) & 0xff) as u8);
      l >>= 4;
      store<u8>(sb + 8 + (j & 3), (((load<u8>(sb + 8 + (j & 3)) as i32) | (l << (2 * (j >> 2)))) & 0xff) as u8);
    }
    wrHalf(o + 108, (1.0 as f32) / iscale);
  } else {
    wrHalf(o + 108, 0);
  }
  const dAll = rdHalf(o + 108);
  for (let j: u32 = 0; j < 16; j++) {
    const d: f32 = dAll * (((scaleQ3K(sb, j) as i32) - 32) as f32);
    if (d == 0) continue;
    for (let ii: u32 = 0; ii < 16; ii++) {
      store<i8>(L + 16 * j + ii, (clampI(nearestInt(ld(s, 16 * j + ii) / d), -4, 3) + 4) as i8);
    }
  }
  for (let k: u32 = 0; k < 32; k++) store<u8>(o + k, 0);
  let m: u32 = 0, hm: u32 = 1;
  for (let j: u32 = 0; j < 256; j++) {
    const v = load<i8>(L + j);
    if (v > 3) {
      store<u8>(o + m, ((load<u8>(o + m) as u32) | hm) as u8);
      store<i8>(L + j, v - 4);
    }
    if (++m == 32) { m = 0; hm <<= 1; }
  }
  pack2bit(L, o + 32);
}

/** Q4_K (nmax 15) / Q5_K (nmax 31): scales, mins and levels at L; d, dmin and the 12 scale bytes at o. */
function quantK4K5(s: usize, o: usize, scratch: usize, nmax: i32, rmin: f32, nstep: i32): void {
  const L = scratch, Laux = scratch + 256, weights = scratch + 320, scales = scratch + 448, mins = scratch + 512;
  let maxScale: f32 = 0, maxMin: f32 = 0;
  subBlocks4(s, 32, 0, false, nmax, rmin, nstep, false, scratch);
  subBlocks4(s, 32, 4, false, nmax, rmin, nstep, false, scratch);
  for (let j: u32 = 0; j < 8; j++) {
    const sc = load<f32>(scales + (j << 2)), m = load<f32>(mins + (j << 2));
    if (sc > maxScale) maxScale = sc;
    if (m > maxMin) maxMin = m;
  }
  const sb = o + 4;
  for (let k: u32 = 0; k < 12; k++) store<u8>(sb + k, 0);
  const invScale: f32 = maxScale > 0 ? (63.0 as f32) / maxScale : 0;
  const invMin: f32 = maxMin > 0 ? (63.0 as f32) / maxMin : 0;
  for (let j: u32 = 0; j < 8; j++) {
    const ls = min<i32>(63, nearestInt(invScale * load<f32>(scales + (j << 2))) & 0xff);
    const lm = min<i32>(63, nearestInt(invMin * load<f32>(mins + (j << 2))) & 0xff);
    if (j < 4) {
      store<u8>(sb + j, ls as u8);
      store<u8>(sb + j + 4, lm as u8);
    } else {
      store<u8>(sb + j + 4, ((ls & 15) | ((lm & 15) << 4)) as u8);
      store<u8>(sb + j - 4, ((load<u8>(sb + j - 4) as i32) | ((ls >> 4) << 6)) as u8);
      store<u8>(sb + j, ((load<u8>(sb + j) as i32) | ((lm >> 4) << 6)) as u8);
    }
  }
  wrHalf(o, maxScale / (63.0 as f32));
  wrHalf(o + 2, maxMin / (63.0 as f32));
  const dAll = rdHalf(o), dMin = rdHalf(o + 2);
  for (let j: u32 = 0; j < 8; j++) {
    const d: f32 = dAll * (scaleK4(sb, j) as f32);
    if (d == 0) continue;
    const dm: f32 = dMin * (minK4(sb, j) as f32);
    for (let ii: u32 = 0; ii < 32; ii++) {
      store<u8>(L + 32 * j + ii, clampI(nearestInt((ld(s, 32 * j + ii) + dm) / d), 0, nmax) as u8);
    }
  }
}

function quantQ4_K(s: usize, o: usize, scratch: usize): void {
  quantK4K5(s, o, scratch, 15, -1.0, 20);
  const L = scratch;
  let q = o + 16;
  for (let j: u32 = 0; j < 256; j += 64) {
    for (let l: u32 = 0; l < 32; l++) store<u8>(q + l, load<u8>(L + j + l) | (load<u8>(L + j + l + 32) << 4));
    q += 32;
  }
}

function quantQ5_K(s: usize, o: usize, scratch: usize): void {
  quantK4K5(s, o, scratch, 31, -0.5, 15);
  const L = scratch, qh = o + 16;
  let ql = o + 48;
  for (let k: u32 = 0; k < 32; k++) store<u8>(qh + k, 0);
  let m1: u32 = 1, m2: u32 = 2;
  for (let n: u32 = 0; n < 256; n += 64) {
    for (let j: u32 = 0; j < 32; j++) {
      let l1 = load<u8>(L + n + j) as u32;
      if (l1 > 15) { l1 -= 16; store<u8>(qh + j, ((load<u8>(qh + j) as u32) | m1) as u8); }
      let l2 = load<u8>(L + n + j + 32) as u32;
      if (l2 > 15) { l2 -= 16; store<u8>(qh + j, ((load<u8>(qh + j) as u32) | m2) as u8); }
      store<u8>(ql + j, (l1 | (l2 << 4)) as u8);
    }
    m1 <<= 2; m2 <<= 2;
    ql += 32;
  }
}

function quantQ6_K(s: usize, o: usize, scratch: usize): void {
  const L = scratch, scales = scratch + 448;
  let maxScale: f32 = 0, maxAbsScale: f32 = 0;
  const xt = scratch + 576, Lt = xt + 1024, Lauxt = Lt + 512;
  for (let ib: u32 = 0; ib < 16; ib += 4) {
    transpose4(s + 64 * ib, 16, xt);
    makeQx4(16, 32, xt, Lt, Lauxt, scales + (ib << 2));
    untranspose4(Lt, 16, L + 16 * ib);
  }
  for (let ib: u32 = 0; ib < 16; ib++) {
    const scale = load<f32>(scales + (ib << 2));
    if (abs<f32>(scale) > maxAbsScale) { maxAbsScale = abs<f32>(scale); maxScale = scale; }
  }
  if (maxAbsScale < GROUP_MAX_EPS) {
    for (let k: u32 = 0; k < 210; k++) store<u8>(o + k, 0);
    return;
  }
  const iscale: f32 = (-128.0 as f32) / maxScale;
  wrHalf(o + 208, (1.0 as f32) / iscale);
  for (let ib: u32 = 0; ib < 16; ib++) {
    store<u8>(o + 192 + ib, (min<i32>(127, nearestInt(iscale * load<f32>(scales + (ib << 2)))) & 0xff) as u8);
  }
  const dAll = rdHalf(o + 208);
  for (let j: u32 = 0; j < 16; j++) {
    const d: f32 = dAll * ((load<i8>(o + 192 + j) as i32) as f32);
    if (d == 0) continue;
    for (let ii: u32 = 0; ii < 16; ii++) {
      store<i8>(L + 16 * j + ii, (clampI(nearestInt(ld(s, 16 * j + ii) / d), -32, 31) + 32) as i8);
    }
  }
  let ql = o, qh = o + 128;
  for (let j: u32 = 0; j < 256; j += 128) {
    for (let l: u32 = 0; l < 32; l++) {
      const a = load<u8>(L + j + l) as u32, b = load<u8>(L + j + l + 32) as u32;
      const c = load<u8>(L + j + l + 64) as u32, e = load<u8>(L + j + l + 96) as u32;
      store<u8>(ql + l, ((a & 15) | ((c & 15) << 4)) as u8);
      store<u8>(ql + l + 32, ((b & 15) | ((e & 15) << 4)) as u8);
      store<u8>(qh + l, ((a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6)) as u8);
    }
    ql += 64;
    qh += 32;
  }
}

/** nBlocks blocks of type t from f32 at src (32 or 256 values per block) to dst. */
export function quantizeWeightBlocks(t: u32, dst: usize, src: usize, nBlocks: u32, scratch: usize): void {
  for (let b: u32 = 0; b < nBlocks; b++) {
    switch (t) {
      case T_Q4_0: quantQ4_0(src + b * 128, dst + b * 18); break;
      case T_Q4_1: quantQ4_1(src + b * 128, dst + b * 20); break;
      case T_Q5_0: quantQ5_0(src + b * 128, dst + b * 22); break;
      case T_Q5_1: quantQ5_1(src + b * 128, dst + b * 24); break;
      case T_Q8_0: quantQ8_0(src + b * 128, dst + b * 34); break;
      case T_IQ4_NL: quantIQ4_NL(src + b * 128, dst + b * 18, scratch); break;
      case T_Q2_K: quantQ2_K(src + b * 1024, dst + b * 84, scratch); break;
      case T_Q3_K: quantQ3_K(src + b * 1024, dst + b * 110, scratch); break;
      case T_Q4_K: quantQ4_K(src + b * 1024, dst + b * 144, scratch); break;
      case T_Q5_K: quantQ5_K(src + b * 1024, dst + b * 176, scratch); break;
      case T_Q6_K: quantQ6_K(src + b * 1024, dst + b * 210, scratch); break;
    }
  }
}
