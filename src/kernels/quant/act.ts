/**
 * Activation quantizers: how llama.cpp's CPU backend (ggml-cpu, x86 build: the AVX code paths of
 * arch/x86/quants.c, which is what runs on the machines we compare against) converts a matrix's
 * f32 input vector to the matrix's vec_dot_type before the dot products:
 *
 * - Q8_0 (quantize_row_q8_0, AVX): amax = max|x|, d = amax/127 stored as f16, but the multiplier is
 *   id = 127/amax (not 1/d as in ggml's reference quantizer), and q = round-half-even(x * id).
 * - Q8_1 (quantize_row_q8_1, AVX): as Q8_0, plus s = f16(d * sum(q)) with the f32 d.
 * - Q8_K (quantize_row_q8_K = quantize_row_q8_K_ref): the value of largest magnitude `max`,
 *   iscale = -127/max, q = min(127, nearest_int(iscale * x)), bsums = sums of 16, d = 1/iscale (f32).
 *   An all-zero block gets d = 0, q = 0 (and, here, bsums = 0; ggml leaves them as they were).
 * - F16 / BF16: round to nearest even; F32: a copy.
 */
import { f32ToBf16, f32ToF16, roundHalfEven } from "../../core/numbers.js";
import type { ActType } from "../formats.js";
import { fround, nearestInt, wrF16, wrF32, wrI16 } from "./common.js";

export function quantActQ8_0(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  for (let b = 0; b < nb; b++, s += 32, o += 34) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[s + j]!));
    wrF16(out, o, fround(amax / 127));
    const id = amax !== 0 ? fround(127 / amax) : 0;
    for (let j = 0; j < 32; j++) out[o + 2 + j] = clampI8(roundHalfEven(fround(x[s + j]! * id))) & 0xff;
  }
}

export function quantActQ8_1(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  for (let b = 0; b < nb; b++, s += 32, o += 36) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[s + j]!));
    const d = fround(amax / 127);
    wrF16(out, o, d);
    const id = amax !== 0 ? fround(127 / amax) : 0;
    let sum = 0;
    for (let j = 0; j < 32; j++) {
      const q = clampI8(roundHalfEven(fround(x[s + j]! * id)));
      out[o + 4 + j] = q & 0xff;
      sum += q;
    }
    wrF16(out, o + 2, fround(d * sum));
  }
}

export function quantActQ8_K(x: Float32Array, s: number, out: Uint8Array, o: number, nb: number): void {
  for (let b = 0; b < nb; b++, s += 256, o += 292) {
    let max = 0, amax = 0;
    for (let j = 0; j < 256; j++) {
      const ax = Math.abs(x[s + j]!);
      if (ax > amax) {
        amax = ax;
        max = x[s + j]!;
      }
    }
    if (!amax) {
      wrF32(out, o, 0);
      out.fill(0, o + 4, o + 292);
      continue;
    }
    const iscale = fround(-127 / max);
    for (let j = 0; j < 256; j++) out[o + 4 + j] = Math.min(127, nearestInt(fround(iscale * x[s + j]!))) & 0xff;
    for (let j = 0; j < 16; j++) {
      let sum = 0;
      for (let i = 0; i < 16; i++) sum += (out[o + 4 + 16 * j + i]! << 24) >> 24;
      wrI16(out, o + 260 + 2 * j, sum);
    }
    wrF32(out, o, fround(1 / iscale));
  }
}

function clampI8(v: number): number {
  return v > 127 ? 127 : v < -128 ? -128 : v;
}

/** Quantize n f32 values (x[s..]) to activation type `act` at out[o..] (n a multiple of its block). */
export function quantizeActRow(act: ActType, x: Float32Array, s: number, out: Uint8Array, o: number, n: number): void {
  switch (act) {
    case "Q8_0":
      return quantActQ8_0(x, s, out, o, n / 32);
    case "Q8_1":
      return quantActQ8_1(x, s, out, o, n / 32);
    case "Q8_K":
      return quantActQ8_K(x, s, out, o, n / 256);
    case "F32": {
      const dv = new DataView(out.buffer, out.byteOffset);
      for (let i = 0; i < n; i++) dv.setFloat32(o + 4 * i, x[s + i]!, true);
      return;
    }
    case "F16":
      for (let i = 0; i < n; i++) wrI16(out, o + 2 * i, f32ToF16(x[s + i]!));
      return;
    case "BF16":
      for (let i = 0; i < n; i++) wrI16(out, o + 2 * i, f32ToBf16(x[s + i]!));
      return;
  }
}
