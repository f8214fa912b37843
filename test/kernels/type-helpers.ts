/** Shared by the per-type kernel tests: random weight rows of every type, activation values, backends per build. */
import { after, before } from "node:test";
import { WasmBackend, availableBuilds, loadKernelBuild, type KernelBuild } from "../../src/kernels/wasm.js";
import { f32ToBf16, f32ToF16 } from "../../src/core/numbers.js";
import { rowBytes, typeInfo, type ActType, type TensorType } from "../../src/kernels/formats.js";
import { dequantizeRow, quantizeRow } from "../../src/kernels/quant/index.js";

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
}

/** f32 values with varied magnitudes per 32-block (incl. an all-zero block and tiny ones). */
export function randomValues(n: number, r: () => number): Float32Array {
  const f = new Float32Array(n);
  for (let b = 0; b < n / 32; b++) {
    const kind = b % 7;
    const mag = kind === 3 ? 0 : kind === 5 ? 1e-6 : kind === 6 ? 30 : Math.exp(r() * 4 - 2);
    for (let i = 0; i < 32; i++) f[b * 32 + i] = gauss(r) * mag;
  }
  for (let i = n & ~31; i < n; i++) f[i] = gauss(r);
  return f;
}

/** Offsets of the f16 scale fields of a block, to be set to sane values in random blocks. */
const SCALES: Partial<Record<TensorType, number[]>> = {
  Q4_0: [0], Q5_0: [0], Q8_0: [0], IQ4_NL: [0], Q4_1: [0, 2], Q5_1: [0, 2],
  Q2_K: [80, 82], Q3_K: [108], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208],
};

/**
 * `rows` rows of `cols` values of `type`: even rows quantized from random values (what files
 * hold), odd rows random bytes with sane f16 scales (every bit pattern of the levels).
 */
export function randomWeights(type: TensorType, rows: number, cols: number, r: () => number): Uint8Array {
  const rb = rowBytes(type, cols);
  const out = new Uint8Array(rows * rb);
  const info = typeInfo(type);
  for (let row = 0; row < rows; row++) {
    const o = row * rb;
    if (row % 2 === 0 || info.blockValues === 1) {
      const v = randomValues(cols, r);
      if (type === "F16" || type === "BF16") {
        for (let i = 0; i < cols; i++) {
          const h = type === "F16" ? f32ToF16(v[i]!) : f32ToBf16(v[i]!);
          out[o + 2 * i] = h & 0xff;
          out[o + 2 * i + 1] = h >> 8;
        }
      } else {
        quantizeRow(type, v, 0, out, o, cols);
      }
      continue;
    }
    for (let i = 0; i < rb; i++) out[o + i] = Math.floor(r() * 256);
    for (let b = 0; b < cols / info.blockValues; b++) {
      for (const off of SCALES[type]!) {
        // magnitudes down to 6e-7: subnormal f16 scales too (the kernels decode them exactly)
        const h = f32ToF16((r() < 0.5 ? -1 : 1) * Math.exp(-3 - r() * 11));
        const p = o + b * info.blockBytes + off;
        out[p] = h & 0xff;
        out[p + 1] = h >> 8;
      }
    }
  }
  return out;
}

/** Values of one activation row of `act` at b[o..] (for error bounds). */
export function actValues(act: ActType, b: Uint8Array, o: number, n: number): Float32Array {
  const out = new Float32Array(n);
  const dv = new DataView(b.buffer, b.byteOffset);
  switch (act) {
    case "Q8_0": case "F32": case "F16": case "BF16":
      dequantizeRow(act, b, o, out, 0, n);
      break;
    case "Q8_1": {
      const h = new Float32Array(1);
      for (let k = 0; k < n / 32; k++) {
        dequantizeRow("F16", b, o + 36 * k, h, 0, 1);
        for (let j = 0; j < 32; j++) out[32 * k + j] = h[0]! * dv.getInt8(o + 36 * k + 4 + j);
      }
      break;
    }
    case "Q8_K":
      for (let k = 0; k < n / 256; k++) {
        const d = dv.getFloat32(o + 292 * k, true);
        for (let j = 0; j < 256; j++) out[256 * k + j] = d * dv.getInt8(o + 292 * k + 4 + j);
      }
  }
  return out;
}

/**
 * Both kernel builds where this engine runs relaxed SIMD (Node 22+), else SIMD128 alone, and a
 * backend per (build, thread count) that splits every kernel however small (`"<build> <threads>"`),
 * made before the file's tests and closed after them.
 */
export async function backendsPerBuild(threads: readonly number[]): Promise<{ builds: KernelBuild[]; backends: Map<string, WasmBackend> }> {
  const builds = await availableBuilds();
  const backends = new Map<string, WasmBackend>();
  before(async () => {
    for (const b of builds) {
      const module = (await loadKernelBuild(b))!;
      for (const t of threads) backends.set(`${b} ${t}`, await WasmBackend.create(t, { alwaysSplit: true, module }));
    }
  });
  after(async () => {
    for (const b of backends.values()) await b.close();
  });
  return { builds, backends };
}
