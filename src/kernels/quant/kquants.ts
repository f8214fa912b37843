/**
 * The K-quants (256-value super-blocks: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): dequantization bit-exact
 * with ggml's dequantize_row_*, and ports of ggml's reference quantizers quantize_row_*_ref (what
 * llama-quantize writes without an importance matrix), operation by operation in f32.
 */
import { GROUP_MAX_EPS, fround, nearestInt, rdF16, toI8, wrF16 } from "./common.js";

export const QK_K = 256;

// ---------------------------------------------------------------------------------------------
// dequantization

export function dequantQ2_K(src: Uint8Array, o: number, out: Float32Array, at: number, nb: number): void {
  for (let b = 0; b < nb; b++, o += 84) {
    const d = rdF16(src, o + 80), min = rdF16(src, o + 82);
    let q = o + 16, is = o;
    for (let n = 0; n < QK_K; n += 128) {
      for (let shift = 0; shift < 8; shift += 2) {
        let sc = src[is++]!;
        let dl = fround(d * (sc & 15)), ml = fround(min * (sc >> 4));
        for (let l = 0; l < 16; l++) out[at++] = fround(fround(dl * ((src[q + l]! >> shift) & 3)) - ml);
        sc = src[is++]!;
        dl = fround(d * (sc & 15));
        ml = fround(min * (sc >> 4));
        for (let l = 0; l < 16; l++) out[at++] = fround(fround(dl * ((src[q + 16 + l]! >> shift) & 3)) - ml);
      }
      q += 32;
    }
  }
}

/** The 16 6-bit scales of a Q3_K block (0..63, before the -32), as ggml unpacks them. */
export function q3kScale(src: Uint8Array, sc: number, j: number): number {
  const low = j < 8 ? src[sc + j]! & 15 : src[sc + j - 8]! >> 4;
  return low | (((src[sc + 8 + (j & 3)]! >> (2 * (j >> 2))) & 3) << 4);
}

export function dequantQ3_K(src: Uint8Array, o: number, out: Float32Array, at: number, nb: number): void {
  for (let b = 0; b < nb; b++, o += 110) {
    const dAll = rdF16(src, o + 108);
    const hm = o;
    let q = o + 32, is = 0, m = 1;
    for (let n = 0; n < QK_K; n += 128) {
      for (let shift = 0; shift < 8; shift += 2) {
        let dl = fround(dAll * (q3kScale(src, o + 96, is++) - 32));
        for (let l = 0; l < 16; l++) out[at++] = fround(dl * (((src[q + l]! >> shift) & 3) - (src[hm + l]! & m ? 0 : 4)));
        dl = fround(dAll * (q3kScale(src, o + 96, is++) - 32));
        for (let l = 0; l < 16; l++) out[at++] = fround(dl * (((src[q + 16 + l]! >> shift) & 3) - (src[hm + 16 + l]! & m ? 0 : 4)));
        m <<= 1;
      }
      q += 32;
    }
  }
}

/** ggml's get_scale_min_k4: 6-bit scale and min j (0..7) of a Q4_K/Q5_K block's 12 scale bytes at sc. */
export function scaleMinK4(src: Uint8Array, sc: number, j: number): [scale: number, min: number] {
  if (j < 4) return [src[sc + j]! & 63, src[sc + j + 4]! & 63];
  return [(src[sc + j + 4]! & 15) | ((src[sc + j - 4]! >> 6) << 4), (src[sc + j + 4]! >> 4) | ((src[sc + j]! >> 6) << 4)];
}

export function dequantQ4_K(src: Uint8Array, o: number, out: Float32Array, at: number, nb: number): void {
  for (let b = 0; b < nb; b++, o += 144) {
    const d = rdF16(src, o), min = rdF16(src, o + 2);
    let q = o + 16;
    for (let is = 0; is < 8; is += 2) {
      const [s1, m1] = scaleMinK4(src, o + 4, is);
      const [s2, m2] = scaleMinK4(src, o + 4, is + 1);
      const d1 = fround(d * s1), mm1 = fround(min * m1), d2 = fround(d * s2), mm2 = fround(min * m2);
      for (let l = 0; l < 32; l++) out[at++] = fround(fround(d1 * (src[q + l]! & 15)) - mm1);
      for (let l = 0; l < 32; l++) out[at++] = fround(fround(d2 * (src[q + l]! >> 4)) - mm2);
      q += 32;
    }
  }
}

export function dequantQ5_K(src: Uint8Array, o: number, out: Float32Array, at: number, nb: number): void {
  for (let b = 0; b < nb; b++, o += 176) {
    const d = rdF16(src, o), min = rdF16(src, o + 2);
    const qh = o + 16;
    let ql = o + 48, u1 = 1, u2 = 2;
    for (let is = 0; is < 8; is += 2) {
      const [s1, m1] = scaleMinK4(src, o + 4, is);
      const [s2, m2] = scaleMinK4(src, o + 4, is + 1);
      const d1 = fround(d * s1), mm1 = fround(min * m1), d2 = fround(d * s2), mm2 = fround(min * m2);
      for (let l = 0; l < 32; l++) out[at++] = fround(fround(d1 * ((src[ql + l]! & 15) + (src[qh + l]! & u1 ? 16 : 0))) - mm1);
      for (let l = 0; l < 32; l++) out[at++] = fround(fround(d2 * ((src[ql + l]! >> 4) + (src[qh + l]! & u2 ? 16 : 0))) - mm2);
      ql += 32;
      u1 <<= 2;
      u2 <<= 2;
    }
  }
}

export function dequantQ6_K(src: Uint8Array, o: number, out: Float32Array, at: number, nb: number): void {
  for (let b = 0; b < nb; b++, o += 210, at += QK_K) {
    const d = rdF16(src, o + 208);
    let ql = o, qh = o + 128, sc = o + 192, y = at;
    for (let n = 0; n < QK_K; n += 128) {
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = src[qh + l]!;
        const q1 = toI8((src[ql + l]! & 15) | ((h & 3) << 4)) - 32;
        const q2 = toI8((src[ql + l + 32]! & 15) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = toI8((src[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = toI8((src[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
        out[y + l] = fround(fround(d * toI8(src[sc + is]!)) * q1);
        out[y + l + 32] = fround(fround(d * toI8(src[sc + is + 2]!)) * q2);
        out[y + l + 64] = fround(fround(d * toI8(src[sc + is + 4]!)) * q3);
        out[y + l + 96] = fround(fround(d * toI8(src[sc + is + 6]!)) * q4);
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ggml's helpers for choosing scales (ggml-quants.c), f32 throughout

/**
 * make_qkx2_quants: scale and min for n values (x[s..]) with weights, levels 0..nmax in L[lo..];
 * returns [scale, -min].
 */
function makeQkx2(n: number, nmax: number, x: Float32Array, s: number, weights: Float32Array, L: Uint8Array, lo: number,
  Laux: Uint8Array, rmin: number, rdelta: number, nstep: number, useMad: boolean): [scale: number, theMin: number] {
  let min = x[s]!, max = x[s]!;
  let sumW = weights[0]!;
  let sumX = fround(sumW * x[s]!);
  for (let i = 1; i < n; i++) {
    const xi = x[s + i]!;
    if (xi < min) min = xi;
    if (xi > max) max = xi;
    const w = weights[i]!;
    sumW = fround(sumW + w);
    sumX = fround(sumX + fround(w * xi));
  }
  if (min > 0) min = 0;
  if (max === min) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    return [0, -min];
  }
  let iscale = fround(nmax / fround(max - min));
  let scale = fround(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const xi = x[s + i]!;
    const l = nearestInt(fround(iscale * fround(xi - min)));
    const q = Math.max(0, Math.min(nmax, l));
    L[lo + i] = q;
    let diff = fround(fround(fround(scale * q) + min) - xi);
    diff = useMad ? Math.abs(diff) : fround(diff * diff);
    bestError = fround(bestError + fround(weights[i]! * diff));
  }
  if (nstep < 1) return [scale, -min];
  for (let is = 0; is <= nstep; is++) {
    // min moves with the best fit so far, and the range with it (as in ggml)
    iscale = fround(fround(fround(rmin + fround(rdelta * is)) + nmax) / fround(max - min));
    let sumL = 0, sumL2 = 0, sumXL = 0;
    for (let i = 0; i < n; i++) {
      const xi = x[s + i]!;
      const l = Math.max(0, Math.min(nmax, nearestInt(fround(iscale * fround(xi - min)))));
      Laux[i] = l;
      const w = weights[i]!;
      const wl = fround(w * l);
      sumL = fround(sumL + wl);
      sumL2 = fround(sumL2 + fround(wl * l));
      sumXL = fround(sumXL + fround(wl * xi));
    }
    const D = fround(fround(sumW * sumL2) - fround(sumL * sumL));
    if (D > 0) {
      let thisScale = fround(fround(fround(sumW * sumXL) - fround(sumX * sumL)) / D);
      let thisMin = fround(fround(fround(sumL2 * sumX) - fround(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = fround(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        let diff = fround(fround(fround(thisScale * Laux[i]!) + thisMin) - x[s + i]!);
        diff = useMad ? Math.abs(diff) : fround(diff * diff);
        curError = fround(curError + fround(weights[i]! * diff));
      }
      if (curError < bestError) {
        for (let i = 0; i < n; i++) L[lo + i] = Laux[i]!;
        bestError = curError;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return [scale, -min];
}

/**
 * The first pass of make_q3_quants and make_qx_quants: levels round(-nmax/max * x) clamped to
 * [-nmax, nmax-1], stored in L[lo..] plus `offset`; returns the signed max and the x^2-weighted sums of l*x and l*l.
 * A group whose |x| stays below GROUP_MAX_EPS gets zero levels and null.
 */
function firstLevels(n: number, nmax: number, x: Float32Array, s: number, L: Int8Array, lo: number, offset: number): [max: number, sumlx: number, suml2: number] | null {
  let max = 0, amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[s + i]!);
    if (ax > amax) {
      amax = ax;
      max = x[s + i]!;
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    return null;
  }
  const iscale = fround(-nmax / max);
  let sumlx = 0, suml2 = 0;
  for (let i = 0; i < n; i++) {
    const xi = x[s + i]!;
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fround(iscale * xi))));
    L[lo + i] = l + offset;
    const w = fround(xi * xi);
    sumlx = fround(sumlx + fround(fround(w * xi) * l));
    suml2 = fround(suml2 + fround(fround(w * l) * l));
  }
  return [max, sumlx, suml2];
}

/** make_q3_quants with do_rmse: levels in L[lo..] (int8, offset by nmax at the end); returns the scale. */
function makeQ3(n: number, nmax: number, x: Float32Array, s: number, L: Int8Array, lo: number): number {
  const first = firstLevels(n, nmax, x, s, L, lo, 0);
  if (!first) return 0;
  let [, sumlx, suml2] = first;
  for (let itry = 0; itry < 5; itry++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const xi = x[s + i]!;
      const w = fround(xi * xi);
      const li = L[lo + i]!;
      let slx = fround(sumlx - fround(fround(w * xi) * li));
      if (slx > 0) {
        let sl2 = fround(suml2 - fround(fround(w * li) * li));
        const nl = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fround(fround(xi * sl2) / slx))));
        if (nl !== li) {
          slx = fround(slx + fround(fround(w * xi) * nl));
          sl2 = fround(sl2 + fround(fround(w * nl) * nl));
          if (sl2 > 0 && fround(fround(slx * slx) * suml2) > fround(fround(sumlx * sumlx) * sl2)) {
            L[lo + i] = nl;
            sumlx = slx;
            suml2 = sl2;
            changed++;
          }
        }
      }
    }
    if (!changed) break;
  }
  for (let i = 0; i < n; i++) L[lo + i] = L[lo + i]! + nmax;
  return suml2 > 0 ? fround(sumlx / suml2) : 0;
}

/** make_qx_quants with rmse_type 1 and no importance weights: levels in L[lo..] (offset by nmax). */
function makeQx(n: number, nmax: number, x: Float32Array, s: number, L: Int8Array, lo: number): number {
  const first = firstLevels(n, nmax, x, s, L, lo, nmax);
  if (!first) return 0;
  const max = first[0];
  let [, sumlx, suml2] = first;
  let scale = suml2 ? fround(sumlx / suml2) : 0;
  let best = fround(scale * sumlx);
  const tenth = fround(0.1);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    const iscale = fround(-fround(nmax + fround(tenth * is)) / max);
    sumlx = 0;
    suml2 = 0;
    for (let i = 0; i < n; i++) {
      const xi = x[s + i]!;
      const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fround(iscale * xi))));
      const w = fround(xi * xi);
      sumlx = fround(sumlx + fround(fround(w * xi) * l));
      suml2 = fround(suml2 + fround(fround(w * l) * l));
    }
    if (suml2 > 0 && fround(sumlx * sumlx) > fround(best * suml2)) {
      for (let i = 0; i < n; i++) {
        L[lo + i] = nmax + Math.max(-nmax, Math.min(nmax - 1, nearestInt(fround(iscale * x[s + i]!))));
      }
      scale = fround(sumlx / suml2);
      best = fround(scale * sumlx);
    }
  }
  return scale;
}

// ---------------------------------------------------------------------------------------------
// weight quantization (quantize_row_*_ref)

/** Pack 2-bit levels L[0..256) into qs at q (Q2_K, Q3_K): byte j/4+l of each 128 holds l, l+32, l+64, l+96. */
function pack2bit(L: ArrayLike<number>, out: Uint8Array, q: number): void {
  for (let j = 0; j < QK_K; j += 128) {
    for (let l = 0; l < 32; l++) {
      out[q + j / 4 + l] = L[j + l]! | (L[j + l + 32]! << 2) | (L[j + l + 64]! << 4) | (L[j + l + 96]! << 6);
    }
  }
}

export function quantQ2_K(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  const L = new Uint8Array(QK_K), Laux = new Uint8Array(16), weights = new Float32Array(16);
  const mins = new Float32Array(16), scales = new Float32Array(16);
  const q4scale = 15;
  const rmin = -0.5, rdelta = fround(0.1);
  for (let b = 0; b < nb; b++, s += QK_K, o += 84) {
    let maxScale = 0, maxMin = 0;
    for (let j = 0; j < 16; j++) {
      for (let l = 0; l < 16; l++) weights[l] = Math.abs(x[s + 16 * j + l]!);
      const [sc, mn] = makeQkx2(16, 3, x, s + 16 * j, weights, L, 16 * j, Laux, rmin, rdelta, 15, true);
      scales[j] = sc;
      mins[j] = mn;
      if (sc > maxScale) maxScale = sc;
      if (mins[j]! > maxMin) maxMin = mins[j]!;
    }
    if (maxScale > 0) {
      const iscale = fround(q4scale / maxScale);
      for (let j = 0; j < 16; j++) out[o + j] = nearestInt(fround(iscale * scales[j]!)) & 0xff;
      wrF16(out, o + 80, fround(maxScale / q4scale));
    } else {
      for (let j = 0; j < 16; j++) out[o + j] = 0;
      wrF16(out, o + 80, 0);
    }
    if (maxMin > 0) {
      const iscale = fround(q4scale / maxMin);
      for (let j = 0; j < 16; j++) out[o + j] = (out[o + j]! | (nearestInt(fround(iscale * mins[j]!)) << 4)) & 0xff;
      wrF16(out, o + 82, fround(maxMin / q4scale));
    } else {
      wrF16(out, o + 82, 0);
    }
    const dAll = rdF16(out, o + 80), dMin = rdF16(out, o + 82);
    for (let j = 0; j < 16; j++) {
      const d = fround(dAll * (out[o + j]! & 15));
      if (!d) continue;
      const dm = fround(dMin * (out[o + j]! >> 4));
      for (let ii = 0; ii < 16; ii++) {
        const l = nearestInt(fround(fround(x[s + 16 * j + ii]! + dm) / d));
        L[16 * j + ii] = Math.max(0, Math.min(3, l));
      }
    }
    pack2bit(L, out, o + 16);
  }
}

export function quantQ3_K(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  const L = new Int8Array(QK_K), scales = new Float32Array(16);
  for (let b = 0; b < nb; b++, s += QK_K, o += 110) {
    let maxScale = 0, amax = 0;
    for (let j = 0; j < 16; j++) {
      scales[j] = makeQ3(16, 4, x, s + 16 * j, L, 16 * j);
      const sc = Math.abs(scales[j]!);
      if (sc > amax) {
        amax = sc;
        maxScale = scales[j]!;
      }
    }
    const sb = o + 96;
    for (let k = 0; k < 12; k++) out[sb + k] = 0;
    if (maxScale) {
      const iscale = fround(-32 / maxScale);
      for (let j = 0; j < 16; j++) {
        let l = toI8(nearestInt(fround(iscale * scales[j]!)));
        l = toI8(Math.max(-32, Math.min(31, l)) + 32);
        if (j < 8) out[sb + j] = l & 15;
        else out[sb + j - 8] = (out[sb + j - 8]! | ((l & 15) << 4)) & 0xff;
        l >>= 4;
        out[sb + 8 + (j & 3)] = (out[sb + 8 + (j & 3)]! | (l << (2 * (j >> 2)))) & 0xff;
      }
      wrF16(out, o + 108, fround(1 / iscale));
    } else {
      wrF16(out, o + 108, 0);
    }
    const dAll = rdF16(out, o + 108);
    for (let j = 0; j < 16; j++) {
      const sc = q3kScale(out, sb, j) - 32;
      const d = fround(dAll * sc);
      if (!d) continue;
      for (let ii = 0; ii < 16; ii++) {
        const l = nearestInt(fround(x[s + 16 * j + ii]! / d));
        L[16 * j + ii] = Math.max(-4, Math.min(3, l)) + 4;
      }
    }
    for (let k = 0; k < 32; k++) out[o + k] = 0;
    let m = 0, hm = 1;
    for (let j = 0; j < QK_K; j++) {
      if (L[j]! > 3) {
        out[o + m] = out[o + m]! | hm;
        L[j] = L[j]! - 4;
      }
      if (++m === QK_K / 8) {
        m = 0;
        hm <<= 1;
      }
    }
    pack2bit(L, out, o + 32);
  }
}

/** Scales and mins of a Q4_K/Q5_K block (8 of each, 6 bits) into its 12 scale bytes at sb. */
function packScalesK4(out: Uint8Array, sb: number, scales: Float32Array, mins: Float32Array, maxScale: number, maxMin: number): void {
  const invScale = maxScale > 0 ? fround(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? fround(63 / maxMin) : 0;
  for (let j = 0; j < 8; j++) {
    const ls = Math.min(63, nearestInt(fround(invScale * scales[j]!)) & 0xff);
    const lm = Math.min(63, nearestInt(fround(invMin * mins[j]!)) & 0xff);
    if (j < 4) {
      out[sb + j] = ls;
      out[sb + j + 4] = lm;
    } else {
      out[sb + j + 4] = (ls & 15) | ((lm & 15) << 4);
      out[sb + j - 4] = out[sb + j - 4]! | ((ls >> 4) << 6);
      out[sb + j] = out[sb + j]! | ((lm >> 4) << 6);
    }
  }
}

/** The sub-block weights ggml uses for Q4_K/Q5_K: rms of the 32 values plus |x|. */
function avWeights(x: Float32Array, s: number, weights: Float32Array): void {
  let sumX2 = 0;
  for (let l = 0; l < 32; l++) sumX2 = fround(sumX2 + fround(x[s + l]! * x[s + l]!));
  const avX = fround(Math.sqrt(fround(sumX2 / 32)));
  for (let l = 0; l < 32; l++) weights[l] = fround(avX + Math.abs(x[s + l]!));
}

function quantK4K5(x: Float32Array, s: number, out: Uint8Array, o: number, L: Uint8Array, nmax: number,
  rmin: number, nstep: number): void {
  const Laux = new Uint8Array(32), weights = new Float32Array(32), mins = new Float32Array(8), scales = new Float32Array(8);
  let maxScale = 0, maxMin = 0;
  for (let j = 0; j < 8; j++) {
    avWeights(x, s + 32 * j, weights);
    const [sc, mn] = makeQkx2(32, nmax, x, s + 32 * j, weights, L, 32 * j, Laux, rmin, fround(0.1), nstep, false);
    scales[j] = sc;
    mins[j] = mn;
    if (scales[j]! > maxScale) maxScale = scales[j]!;
    if (mins[j]! > maxMin) maxMin = mins[j]!;
  }
  for (let k = 0; k < 12; k++) out[o + 4 + k] = 0;
  packScalesK4(out, o + 4, scales, mins, maxScale, maxMin);
  wrF16(out, o, fround(maxScale / 63));
  wrF16(out, o + 2, fround(maxMin / 63));
  const dAll = rdF16(out, o), dMin = rdF16(out, o + 2);
  for (let j = 0; j < 8; j++) {
    const [sc, m] = scaleMinK4(out, o + 4, j);
    const d = fround(dAll * sc);
    if (!d) continue;
    const dm = fround(dMin * m);
    for (let ii = 0; ii < 32; ii++) {
      const l = nearestInt(fround(fround(x[s + 32 * j + ii]! + dm) / d));
      L[32 * j + ii] = Math.max(0, Math.min(nmax, l));
    }
  }
}

export function quantQ4_K(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  const L = new Uint8Array(QK_K);
  for (let b = 0; b < nb; b++, s += QK_K, o += 144) {
    quantK4K5(x, s, out, o, L, 15, -1, 20);
    let q = o + 16;
    for (let j = 0; j < QK_K; j += 64) {
      for (let l = 0; l < 32; l++) out[q + l] = L[j + l]! | (L[j + l + 32]! << 4);
      q += 32;
    }
  }
}

export function quantQ5_K(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  const L = new Uint8Array(QK_K);
  for (let b = 0; b < nb; b++, s += QK_K, o += 176) {
    quantK4K5(x, s, out, o, L, 31, -0.5, 15);
    const qh = o + 16;
    let ql = o + 48;
    for (let k = 0; k < 32; k++) out[qh + k] = 0;
    let m1 = 1, m2 = 2;
    for (let n = 0; n < QK_K; n += 64) {
      for (let j = 0; j < 32; j++) {
        let l1 = L[n + j]!;
        if (l1 > 15) {
          l1 -= 16;
          out[qh + j] = out[qh + j]! | m1;
        }
        let l2 = L[n + j + 32]!;
        if (l2 > 15) {
          l2 -= 16;
          out[qh + j] = out[qh + j]! | m2;
        }
        out[ql + j] = l1 | (l2 << 4);
      }
      m1 <<= 2;
      m2 <<= 2;
      ql += 32;
    }
  }
}

export function quantQ6_K(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  const L = new Int8Array(QK_K), scales = new Float32Array(16);
  for (let b = 0; b < nb; b++, s += QK_K, o += 210) {
    let maxScale = 0, maxAbsScale = 0;
    for (let ib = 0; ib < 16; ib++) {
      const scale = makeQx(16, 32, x, s + 16 * ib, L, 16 * ib);
      scales[ib] = scale;
      const abs = Math.abs(scale);
      if (abs > maxAbsScale) {
        maxAbsScale = abs;
        maxScale = scale;
      }
    }
    if (maxAbsScale < GROUP_MAX_EPS) {
      for (let k = 0; k < 210; k++) out[o + k] = 0;
      continue;
    }
    const iscale = fround(-128 / maxScale);
    wrF16(out, o + 208, fround(1 / iscale));
    for (let ib = 0; ib < 16; ib++) out[o + 192 + ib] = Math.min(127, nearestInt(fround(iscale * scales[ib]!))) & 0xff;
    const dAll = rdF16(out, o + 208);
    for (let j = 0; j < 16; j++) {
      const d = fround(dAll * toI8(out[o + 192 + j]!));
      if (!d) continue;
      for (let ii = 0; ii < 16; ii++) {
        const l = nearestInt(fround(x[s + 16 * j + ii]! / d));
        L[16 * j + ii] = Math.max(-32, Math.min(31, l)) + 32;
      }
    }
    let ql = o, qh = o + 128;
    for (let j = 0; j < QK_K; j += 128) {
      for (let l = 0; l < 32; l++) {
        const a = L[j + l]!, bq = L[j + l + 32]!, c = L[j + l + 64]!, e = L[j + l + 96]!;
        out[ql + l] = (a & 15) | ((c & 15) << 4);
        out[ql + l + 32] = (bq & 15) | ((e & 15) << 4);
        out[qh + l] = (a >> 4) | ((bq >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
      }
      ql += 64;
      qh += 32;
    }
  }
}
