/**
 * Reference dot products of one weight row with one activation row (ggml's vec_dot_<w>_<act>
 * semantics): integer sums per block or super-block, then the float scales, accumulated in f32 in
 * block order:
 *
 * - Q8_0, Q4_0, Q5_0, IQ4_NL (x Q8_0): acc += f32(sumi) * f32(dw * dx)   (fused: Q8_0's and Q4_0's as
 *   one fused multiply-add, one rounding, where the WebAssembly kernels do so: assembly/q8.ts fusedTypes)
 * - Q4_1, Q5_1 (x Q8_1):              acc += (f32(dw * dx) * f32(sumi) + mw * sx)
 * - K-quants (x Q8_K), per super-block with integer sub-block scales sc and mins m:
 *     isum = sum over sub-blocks of sc * (sum of q * x), summs = sum of m * (sum of x) (from bsums),
 *     acc += (f32(dw * dx) * f32(isum) - f32(dmin * dx) * f32(summs))   (no summs for Q3_K, Q6_K)
 * - F32, F16, BF16 (x the same type): the sum of the products in f64, rounded to f32 once.
 *
 * ggml's own SIMD paths group the float operations differently (and differ between CPUs); the
 * integer parts, which carry all the information, are the same.
 */
import { F16_TO_F32, bf16ToF32 } from "../../core/numbers.js";
import type { TensorType } from "../formats.js";
import { KVALUES_IQ4NL, fmaF32, fround, rdF16, rdF32, rdI16, rdU32, toI8 } from "./common.js";
import { q3kScale, scaleMinK4 } from "./kquants.js";

/** Integer levels of one 32-value block of a legacy type at w[o] (signed values for Q4_0/Q5_0/IQ4_NL). */
function legacyLevels(type: TensorType, w: Uint8Array, o: number, q: Int32Array): void {
  switch (type) {
    case "Q8_0":
      for (let j = 0; j < 32; j++) q[j] = toI8(w[o + 2 + j]!);
      return;
    case "Q4_0":
    case "Q4_1":
    case "IQ4_NL": {
      const qs = o + (type === "Q4_1" ? 4 : 2);
      for (let j = 0; j < 16; j++) {
        const lo = w[qs + j]! & 15, hi = w[qs + j]! >> 4;
        if (type === "IQ4_NL") {
          q[j] = KVALUES_IQ4NL[lo]!;
          q[j + 16] = KVALUES_IQ4NL[hi]!;
        } else {
          const off = type === "Q4_0" ? 8 : 0;
          q[j] = lo - off;
          q[j + 16] = hi - off;
        }
      }
      return;
    }
    case "Q5_0":
    case "Q5_1": {
      const one = type === "Q5_1";
      const qh = rdU32(w, o + (one ? 4 : 2));
      const qs = o + (one ? 8 : 6);
      const off = one ? 0 : 16;
      for (let j = 0; j < 16; j++) {
        q[j] = ((w[qs + j]! & 15) | (((qh >>> j) & 1) << 4)) - off;
        q[j + 16] = ((w[qs + j]! >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - off;
      }
      return;
    }
    default:
      throw new RangeError(`${type} is not a 32-value block type`);
  }
}

/**
 * Integer form of one K-quant super-block at w[o]: values q[256], per sub-block (16 or 32 values,
 * returned as `sub`) integer scales sc and mins mn (0 for Q3_K/Q6_K); float d and dmin.
 */
export function kLevels(type: TensorType, w: Uint8Array, o: number, q: Int32Array, sc: Int32Array, mn: Int32Array):
  { sub: number; d: number; dmin: number } {
  switch (type) {
    case "Q2_K": {
      for (let n = 0, v = 0; n < 2; n++) {
        for (let shift = 0; shift < 8; shift += 2) {
          for (let l = 0; l < 32; l++) q[v++] = (w[o + 16 + 32 * n + l]! >> shift) & 3;
        }
      }
      for (let j = 0; j < 16; j++) {
        sc[j] = w[o + j]! & 15;
        mn[j] = w[o + j]! >> 4;
      }
      return { sub: 16, d: rdF16(w, o + 80), dmin: rdF16(w, o + 82) };
    }
    case "Q3_K": {
      let m = 1;
      for (let n = 0, v = 0; n < 2; n++) {
        for (let shift = 0; shift < 8; shift += 2, m <<= 1) {
          for (let l = 0; l < 32; l++) q[v++] = ((w[o + 32 + 32 * n + l]! >> shift) & 3) - (w[o + l]! & m ? 0 : 4);
        }
      }
      for (let j = 0; j < 16; j++) {
        sc[j] = q3kScale(w, o + 96, j) - 32;
        mn[j] = 0;
      }
      return { sub: 16, d: rdF16(w, o + 108), dmin: 0 };
    }
    case "Q4_K":
    case "Q5_K": {
      const five = type === "Q5_K";
      const qs = o + (five ? 48 : 16);
      for (let j = 0; j < 4; j++) {
        for (let l = 0; l < 32; l++) {
          const byte = w[qs + 32 * j + l]!;
          const h = five ? w[o + 16 + l]! : 0;
          q[64 * j + l] = (byte & 15) + (((h >> (2 * j)) & 1) << 4);
          q[64 * j + 32 + l] = (byte >> 4) + (((h >> (2 * j + 1)) & 1) << 4);
        }
      }
      for (let j = 0; j < 8; j++) [sc[j], mn[j]] = scaleMinK4(w, o + 4, j);
      return { sub: 32, d: rdF16(w, o), dmin: rdF16(w, o + 2) };
    }
    case "Q6_K": {
      for (let n = 0; n < 2; n++) {
        const ql = o + 64 * n, qh = o + 128 + 32 * n, y = 128 * n;
        for (let l = 0; l < 32; l++) {
          const h = w[qh + l]!;
          q[y + l] = ((w[ql + l]! & 15) | ((h & 3) << 4)) - 32;
          q[y + l + 32] = ((w[ql + l + 32]! & 15) | (((h >> 2) & 3) << 4)) - 32;
          q[y + l + 64] = ((w[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
          q[y + l + 96] = ((w[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
        }
      }
      for (let j = 0; j < 16; j++) {
        sc[j] = toI8(w[o + 192 + j]!);
        mn[j] = 0;
      }
      return { sub: 16, d: rdF16(w, o + 208), dmin: 0 };
    }
    default:
      throw new RangeError(`${type} is not a K-quant`);
  }
}

const qBuf = new Int32Array(256), scBuf = new Int32Array(16), mnBuf = new Int32Array(16);

/**
 * Dot of n values: weight row of `type` at w[wo], activation row (actTypeOf(type)) at x[xo].
 */
export function vecDot(type: TensorType, n: number, w: Uint8Array, wo: number, x: Uint8Array, xo: number, fused = false): number {
  const q = qBuf;
  switch (type) {
    case "F32":
    case "F16":
    case "BF16": {
      const size = type === "F32" ? 4 : 2;
      const get = (b: Uint8Array, o: number): number =>
        type === "F32" ? rdF32(b, o) : type === "F16" ? F16_TO_F32[b[o]! | (b[o + 1]! << 8)]! : bf16ToF32(b[o]! | (b[o + 1]! << 8));
      let sum = 0;
      for (let i = 0; i < n; i++) sum += get(w, wo + i * size) * get(x, xo + i * size);
      return fround(sum);
    }
    case "Q8_0":
    case "Q4_0":
    case "Q5_0":
    case "IQ4_NL":
    case "Q4_1":
    case "Q5_1": {
      const wb = { Q8_0: 34, Q4_0: 18, Q5_0: 22, IQ4_NL: 18, Q4_1: 20, Q5_1: 24 }[type];
      const one = type === "Q4_1" || type === "Q5_1";
      const xb = one ? 36 : 34;
      let acc = 0;
      for (let b = 0; b < n / 32; b++, wo += wb, xo += xb) {
        legacyLevels(type, w, wo, q);
        let sumi = 0;
        for (let j = 0; j < 32; j++) sumi += q[j]! * toI8(x[xo + (one ? 4 : 2) + j]!);
        const dd = fround(rdF16(w, wo) * rdF16(x, xo));
        if (one) acc = fround(acc + fround(fround(dd * sumi) + fround(rdF16(w, wo + 2) * rdF16(x, xo + 2))));
        else if (fused && (type === "Q8_0" || type === "Q4_0")) acc = fmaF32(sumi, dd, acc);
        else acc = fround(acc + fround(sumi * dd));
      }
      return acc;
    }
    case "Q2_K":
    case "Q3_K":
    case "Q4_K":
    case "Q5_K":
    case "Q6_K": {
      const wb = { Q2_K: 84, Q3_K: 110, Q4_K: 144, Q5_K: 176, Q6_K: 210 }[type];
      let acc = 0;
      for (let b = 0; b < n / 256; b++, wo += wb, xo += 292) {
        const { sub, d, dmin } = kLevels(type, w, wo, q, scBuf, mnBuf);
        const dx = rdF32(x, xo);
        let isum = 0, summs = 0;
        for (let s = 0; s < 256 / sub; s++) {
          let si = 0;
          for (let i = s * sub; i < (s + 1) * sub; i++) si += q[i]! * toI8(x[xo + 4 + i]!);
          isum += scBuf[s]! * si;
          let bs = 0;
          for (let k = (s * sub) / 16; k < ((s + 1) * sub) / 16; k++) bs += rdI16(x, xo + 260 + 2 * k);
          summs += mnBuf[s]! * bs;
        }
        const t = fround(fround(d * dx) * fround(isum));
        if (type === "Q3_K" || type === "Q6_K") acc = fround(acc + t);
        else acc = fround(acc + fround(t - fround(fround(dmin * dx) * fround(summs))));
      }
      return acc;
    }
  }
}
