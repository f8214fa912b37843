/**
 * The 32-value block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL): dequantization bit-exact with
 * ggml's dequantize_row_*, and the weight quantizers llama.cpp's llama-quantize runs without an
 * importance matrix (ggml_quantize_chunk: quantize_row_*_ref, and quantize_iq4_nl for IQ4_NL),
 * ported operation by operation in f32.
 */
import { GROUP_MAX_EPS, KVALUES_IQ4NL, fround, rdF16, rdU32, toI8, truncInt, wrF16, wrU32 } from "./common.js";

const FLT_MAX = 3.4028234663852886e38;

// ---------------------------------------------------------------------------------------------
// dequantization

export function dequantQ4_0(src: Uint8Array, o: number, out: Float32Array, at: number, nb: number): void {
  for (let b = 0; b < nb; b++, o += 18, at += 32) {
    const d = rdF16(src, o);
    for (let j = 0; j < 16; j++) {
      const q = src[o + 2 + j]!;
      out[at + j] = fround(((q & 15) - 8) * d);
      out[at + j + 16] = fround(((q >> 4) - 8) * d);
    }
  }
}

export function dequantQ4_1(src: Uint8Array, o: number, out: Float32Array, at: number, nb: number): void {
  for (let b = 0; b < nb; b++, o += 20, at += 32) {
    const d = rdF16(src, o), m = rdF16(src, o + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[o + 4 + j]!;
      out[at + j] = fround(fround((q & 15) * d) + m);
      out[at + j + 16] = fround(fround((q >> 4) * d) + m);
    }
  }
}

export function dequantQ5_0(src: Uint8Array, o: number, out: Float32Array, at: number, nb: number): void {
  for (let b = 0; b < nb; b++, o += 22, at += 32) {
    const d = rdF16(src, o);
    const qh = rdU32(src, o + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[o + 6 + j]!;
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      out[at + j] = fround((((q & 15) | h0) - 16) * d);
      out[at + j + 16] = fround((((q >> 4) | h1) - 16) * d);
    }
  }
}

export function dequantQ5_1(src: Uint8Array, o: number, out: Float32Array, at: number, nb: number): void {
  for (let b = 0; b < nb; b++, o += 24, at += 32) {
    const d = rdF16(src, o), m = rdF16(src, o + 2);
    const qh = rdU32(src, o + 4);
    for (let j = 0; j < 16; j++) {
      const q = src[o + 8 + j]!;
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      out[at + j] = fround(fround(((q & 15) | h0) * d) + m);
      out[at + j + 16] = fround(fround(((q >> 4) | h1) * d) + m);
    }
  }
}

export function dequantQ8_0(src: Uint8Array, o: number, out: Float32Array, at: number, nb: number): void {
  for (let b = 0; b < nb; b++, o += 34, at += 32) {
    const d = rdF16(src, o);
    for (let j = 0; j < 32; j++) out[at + j] = fround(toI8(src[o + 2 + j]!) * d);
  }
}

export function dequantIQ4_NL(src: Uint8Array, o: number, out: Float32Array, at: number, nb: number): void {
  for (let b = 0; b < nb; b++, o += 18, at += 32) {
    const d = rdF16(src, o);
    for (let j = 0; j < 16; j++) {
      const q = src[o + 2 + j]!;
      out[at + j] = fround(d * KVALUES_IQ4NL[q & 15]!);
      out[at + j + 16] = fround(d * KVALUES_IQ4NL[q >> 4]!);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// weight quantization

/** The value of largest magnitude (the first one on ties), and that magnitude. */
function signedMax(x: Float32Array, s: number, n: number): [max: number, amax: number] {
  let amax = 0, max = 0;
  for (let j = 0; j < n; j++) {
    const v = x[s + j]!;
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return [max, amax];
}

function minMax(x: Float32Array, s: number, n: number): [min: number, max: number] {
  let min = FLT_MAX, max = -FLT_MAX;
  for (let j = 0; j < n; j++) {
    const v = x[s + j]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return [min, max];
}

export function quantQ4_0(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  for (let b = 0; b < nb; b++, s += 32, o += 18) {
    const [max] = signedMax(x, s, 32);
    const d = fround(max / -8);
    const id = d ? fround(1 / d) : 0;
    wrF16(out, o, d);
    for (let j = 0; j < 16; j++) {
      const x0 = fround(x[s + j]! * id), x1 = fround(x[s + 16 + j]! * id);
      const q0 = Math.min(15, toI8(truncInt(fround(x0 + 8.5))));
      const q1 = Math.min(15, toI8(truncInt(fround(x1 + 8.5))));
      out[o + 2 + j] = (q0 & 0xff) | ((q1 << 4) & 0xff);
    }
  }
}

export function quantQ4_1(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  for (let b = 0; b < nb; b++, s += 32, o += 20) {
    const [min, max] = minMax(x, s, 32);
    const d = fround(fround(max - min) / 15);
    const id = d ? fround(1 / d) : 0;
    wrF16(out, o, d);
    wrF16(out, o + 2, min);
    for (let j = 0; j < 16; j++) {
      const x0 = fround(fround(x[s + j]! - min) * id), x1 = fround(fround(x[s + 16 + j]! - min) * id);
      const q0 = Math.min(15, toI8(truncInt(fround(x0 + 0.5))));
      const q1 = Math.min(15, toI8(truncInt(fround(x1 + 0.5))));
      out[o + 4 + j] = (q0 & 0xff) | ((q1 << 4) & 0xff);
    }
  }
}

export function quantQ5_0(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  for (let b = 0; b < nb; b++, s += 32, o += 22) {
    const [max] = signedMax(x, s, 32);
    const d = fround(max / -16);
    const id = d ? fround(1 / d) : 0;
    wrF16(out, o, d);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      const x0 = fround(x[s + j]! * id), x1 = fround(x[s + 16 + j]! * id);
      const q0 = Math.min(31, toI8(truncInt(fround(x0 + 16.5)))) & 0xff;
      const q1 = Math.min(31, toI8(truncInt(fround(x1 + 16.5)))) & 0xff;
      out[o + 6 + j] = (q0 & 15) | ((q1 & 15) << 4);
      qh |= ((q0 & 0x10) >> 4) << j;
      qh |= ((q1 & 0x10) >> 4) << (j + 16);
    }
    wrU32(out, o + 2, qh >>> 0);
  }
}

export function quantQ5_1(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  for (let b = 0; b < nb; b++, s += 32, o += 24) {
    const [min, max] = minMax(x, s, 32);
    const d = fround(fround(max - min) / 31);
    const id = d ? fround(1 / d) : 0;
    wrF16(out, o, d);
    wrF16(out, o + 2, min);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      const x0 = fround(fround(x[s + j]! - min) * id), x1 = fround(fround(x[s + 16 + j]! - min) * id);
      const q0 = truncInt(fround(x0 + 0.5)) & 0xff;
      const q1 = truncInt(fround(x1 + 0.5)) & 0xff;
      out[o + 8 + j] = (q0 & 15) | ((q1 & 15) << 4);
      qh |= ((q0 & 0x10) >> 4) << j;
      qh |= ((q1 & 0x10) >> 4) << (j + 16);
    }
    wrU32(out, o + 4, qh >>> 0);
  }
}

/** roundf: round half away from zero. */
function roundAway(v: number): number {
  return v < 0 ? -Math.round(-v) : Math.round(v);
}

export function quantQ8_0(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  for (let b = 0; b < nb; b++, s += 32, o += 34) {
    let amax = 0;
    for (let j = 0; j < 32; j++) {
      const a = Math.abs(x[s + j]!);
      amax = amax > a ? amax : a;
    }
    const d = fround(amax / 127);
    const id = d ? fround(1 / d) : 0;
    wrF16(out, o, d);
    for (let j = 0; j < 32; j++) out[o + 2 + j] = roundAway(fround(x[s + j]! * id)) & 0xff;
  }
}

/** ggml's best_index_int8: index of the level nearest to x in the sorted `val`. */
function bestIndex(val: readonly number[], x: number): number {
  const n = val.length;
  if (x <= val[0]!) return 0;
  if (x >= val[n - 1]!) return n - 1;
  let ml = 0, mu = n - 1;
  while (mu - ml > 1) {
    const mav = (ml + mu) >> 1;
    if (x < val[mav]!) mu = mav;
    else ml = mav;
  }
  return fround(x - val[mu - 1]!) < fround(val[mu]! - x) ? mu - 1 : mu;
}

/**
 * IQ4_NL as llama-quantize writes it (quantize_iq4_nl without importance weights: weights x^2,
 * a search over 15 scales, ntry = 7); ggml's quantize_row_iq4_nl_ref (ntry = -1, no search) is
 * only used for tensors ggml converts at run time.
 */
export function quantIQ4_NL(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  const values = KVALUES_IQ4NL;
  const weight = new Float32Array(32);
  const L = new Uint8Array(32);
  const ntry = 7;
  for (let b = 0; b < nb; b++, s += 32, o += 18) {
    for (let j = 0; j < 32; j++) weight[j] = fround(x[s + j]! * x[s + j]!);
    const [max, amax] = signedMax(x, s, 32);
    let scale = 0;
    if (!(amax < GROUP_MAX_EPS)) {
      let d = fround(fround(-max) / values[0]!);
      let id = fround(1 / d);
      let sumqx = 0, sumq2 = 0;
      for (let j = 0; j < 32; j++) {
        const xb = x[s + j]!;
        const l = bestIndex(values, fround(id * xb));
        L[j] = l;
        const q = values[l]!, w = weight[j]!;
        sumqx = fround(sumqx + fround(fround(w * q) * xb));
        sumq2 = fround(sumq2 + fround(fround(w * q) * q));
      }
      d = sumq2 > 0 ? fround(sumqx / sumq2) : 0;
      let best = fround(d * sumqx);
      for (let itry = -ntry; itry <= ntry; itry++) {
        id = fround((itry + values[0]!) / max);
        sumqx = 0;
        sumq2 = 0;
        for (let j = 0; j < 32; j++) {
          const xb = x[s + j]!;
          const l = bestIndex(values, fround(id * xb));
          const q = values[l]!, w = weight[j]!;
          sumqx = fround(sumqx + fround(fround(w * q) * xb));
          sumq2 = fround(sumq2 + fround(fround(w * q) * q));
        }
        if (sumq2 > 0 && fround(sumqx * sumqx) > fround(best * sumq2)) {
          d = fround(sumqx / sumq2);
          best = fround(d * sumqx);
        }
      }
      scale = d;
    }
    wrF16(out, o, scale);
    const id = scale ? fround(1 / scale) : 0;
    for (let j = 0; j < 32; j++) L[j] = bestIndex(values, fround(id * x[s + j]!));
    for (let j = 0; j < 16; j++) out[o + 2 + j] = L[j]! | (L[16 + j]! << 4);
  }
}

