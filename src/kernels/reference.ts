/**
 * Plain TypeScript kernels: the specification every faster kernel is tested against, and the
 * path that runs where WebAssembly SIMD is missing. Written for clarity, not speed.
 */
import type { Arena } from "./arena.js";
import { ATTENTION_ENTRY_WORDS, type KernelBackend, type Kernels, type Ptr } from "./kernels.js";
import { actTypeOf, fileTypeOf, rowBytes, type ActType, type MatmulType, type TensorType } from "./formats.js";
import { deinterleaveQ4_0x4 } from "./quant/interleave.js";
import { quantizeActRow, quantizeRow, vecDot } from "./quant/index.js";
import { bf16ToF32, f32ToBf16, f32ToF16, roundHalfEven } from "../core/numbers.js";

const fround = Math.fround;

/** The sum of four f32 lanes as the kernels' hsum adds them: (l0 + l2) + (l1 + l3). */
function hsum4(l: readonly number[]): number {
  return fround(fround(l[0]! + l[2]!) + fround(l[1]! + l[3]!));
}

const f32c = (v: number): number => fround(v);
const EXP_LO = f32c(-87.33654475), EXP_HI = f32c(88.0), LOG2E = f32c(1.44269504088896341);
const C1 = f32c(0.693359375), C2 = f32c(-2.12194440e-4);
const P = [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1].map(f32c);
const expBuf = new Float32Array(1);
const expBits = new Int32Array(expBuf.buffer);

/**
 * e^x as the kernels compute it (Cephes expf, kernels/assembly expx4), every step rounded to f32:
 * about 1e-7 relative to the true value.
 */
export function expf32(x0: number): number {
  let x = Math.min(Math.max(x0, EXP_LO), EXP_HI);
  const fx = Math.floor(fround(fround(x * LOG2E) + 0.5));
  x = fround(x - fround(fx * C1));
  x = fround(x - fround(fx * C2));
  const z = fround(x * x);
  let y = P[0]!;
  for (let i = 1; i < P.length; i++) y = fround(fround(y * x) + P[i]!);
  y = fround(fround(fround(y * z) + x) + 1);
  expBits[0] = (Math.trunc(fx) + 127) << 23;
  return fround(y * expBuf[0]!);
}

export class ReferenceKernels implements Kernels {
  private readonly u8: Uint8Array;
  private readonly f32: Float32Array;
  private readonly u16: Uint16Array;

  /**
   * fusedTypes: the types whose blocks accumulate as one fused multiply-add (one rounding), as the
   * WebAssembly kernels do for their fusedTypes; tests comparing bits pass theirs.
   */
  constructor(readonly arena: Arena, readonly fusedTypes: readonly TensorType[] = []) {
    const buf = arena.memory.buffer;
    this.u8 = new Uint8Array(buf);
    this.f32 = new Float32Array(buf);
    this.u16 = new Uint16Array(buf);
  }

  quantizeAct(act: ActType, dst: Ptr, src: Ptr, n: number): void {
    quantizeActRow(act, this.f32, src >> 2, this.u8, dst, n);
  }

  matmul(type: MatmulType, out: Ptr, w: Ptr, x: Ptr, rows: number, cols: number, nTok: number): void {
    const wb = rowBytes(type, cols), xb = rowBytes(actTypeOf(type), cols);
    const file = fileTypeOf(type);
    const fused = this.fusedTypes.includes(file);
    // Q4_0x4: each group of four rows back to Q4_0 first, then the Q4_0 dots
    const plain = type === "Q4_0x4" ? new Uint8Array(4 * wb) : this.u8;
    for (let r = 0; r < rows; r++) {
      if (type === "Q4_0x4" && r % 4 === 0) deinterleaveQ4_0x4(this.u8, w + r * wb, plain, 0, 4, cols / 32);
      const at = type === "Q4_0x4" ? (r % 4) * wb : w + r * wb;
      for (let t = 0; t < nTok; t++) {
        this.f32[(out >> 2) + t * rows + r] = vecDot(file, cols, plain, at, this.u8, x + t * xb, fused);
      }
    }
  }

  repackWeights(type: TensorType): MatmulType {
    return type;
  }

  quantizeWeights(type: TensorType, dst: Ptr, src: Ptr, n: number): void {
    quantizeRow(type, this.f32, src >> 2, this.u8, dst, n);
  }

  quantizeQ8(dst: Ptr, src: Ptr, n: number): void {
    const x = this.f32;
    const s = src >> 2;
    const dv = new DataView(this.u8.buffer);
    for (let b = 0; b < n / 32; b++) {
      let amax = 0;
      for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[s + b * 32 + i]!));
      const d = Math.fround(amax / 127);
      const id = d !== 0 ? Math.fround(1 / d) : 0;
      const o = dst + b * 34;
      dv.setUint16(o, f32ToF16(d), true);
      for (let i = 0; i < 32; i++) dv.setInt8(o + 2 + i, roundHalfEven(Math.fround(x[s + b * 32 + i]! * id)));
    }
  }

  matmulQ8(out: Ptr, w: Ptr, x: Ptr, rows: number, cols: number, nTok: number): void {
    this.matmul("Q8_0", out, w, x, rows, cols, nTok);
  }

  rmsnorm(out: Ptr, x: Ptr, weight: Ptr, n: number, eps: number): void {
    const f = this.f32;
    let ss = 0;
    for (let i = 0; i < n; i++) ss += f[(x >> 2) + i]! * f[(x >> 2) + i]!;
    const scale = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++) f[(out >> 2) + i] = f[(x >> 2) + i]! * scale * f[(weight >> 2) + i]!;
  }

  rope(vec: Ptr, nHeads: number, headDim: number, cosSin: Ptr): void {
    const f = this.f32;
    const half = headDim / 2;
    const cs = cosSin >> 2;
    for (let h = 0; h < nHeads; h++) {
      const base = (vec >> 2) + h * headDim;
      for (let i = 0; i < half; i++) {
        const a = f[base + i]!;
        const b = f[base + i + half]!;
        const c = f[cs + i]!;
        const s = f[cs + half + i]!;
        f[base + i] = a * c - b * s;
        f[base + i + half] = b * c + a * s;
      }
    }
  }

  storeBf16(dst: Ptr, src: Ptr, n: number): void {
    for (let i = 0; i < n; i++) this.u16[(dst >> 1) + i] = f32ToBf16(this.f32[(src >> 2) + i]!);
  }

  /**
   * The softmax weights are rounded to bf16, so a difference in their last bit can move a weight by
   * 2^-8: the reference therefore computes them in the very order of operations of the WebAssembly
   * kernel (4-lane partial sums, the same exp polynomial), so both give the same bits.
   */
  attentionSteps(table: Ptr, n: number, scratch: Ptr, _scratchPerThread: number, nHeads: number, nKvHeads: number, headDim: number): void {
    const e = new Uint32Array(this.arena.memory.buffer, table, n * ATTENTION_ENTRY_WORDS);
    for (let t = 0, i = 0; t < n; t++, i += ATTENTION_ENTRY_WORDS) this.attention(e[i]!, e[i + 1]!, e[i + 2]!, e[i + 3]!, scratch, nHeads, nKvHeads, headDim, e[i + 4]!);
  }

  attention(out: Ptr, q: Ptr, kCache: Ptr, vCache: Ptr, scratch: Ptr,
    nHeads: number, nKvHeads: number, headDim: number, nPos: number): void {
    const f = this.f32;
    const kvDim = nKvHeads * headDim;
    const group = nHeads / nKvHeads;
    const scale = fround(1 / Math.sqrt(headDim));
    for (let h = 0; h < nHeads; h++) {
      const kvh = Math.floor(h / group);
      const qo = (q >> 2) + h * headDim;
      const att = (scratch >> 2) + h * nPos;
      // q to bf16 precision, in place: llama.cpp converts it to the BF16 cache's type for the dots
      for (let i = 0; i < headDim; i++) f[qo + i] = bf16ToF32(f32ToBf16(f[qo + i]!));
      let max = -Infinity;
      for (let p = 0; p < nPos; p++) {
        const ko = (kCache >> 1) + p * kvDim + kvh * headDim;
        f[att + p] = fround(this.dotBf16(qo, ko, headDim) * scale);
        if (f[att + p]! > max) max = f[att + p]!;
      }
      // exp(score - max) and their sum: four lanes over whole groups of 4 positions, then the rest
      const lanes = [0, 0, 0, 0];
      let p = 0;
      for (; p + 4 <= nPos; p += 4) {
        for (let j = 0; j < 4; j++) {
          const e = expf32(fround(f[att + p + j]! - max));
          f[att + p + j] = e;
          lanes[j] = fround(lanes[j]! + e);
        }
      }
      let sum = hsum4(lanes);
      for (; p < nPos; p++) {
        const e = expf32(fround(f[att + p]! - max));
        f[att + p] = e;
        sum = fround(sum + e);
      }
      // the weights e * (1 / sum) (llama.cpp's soft_max), rounded to bf16 as they are for the BF16 values
      const inv = fround(1 / sum);
      for (let pp = 0; pp < nPos; pp++) f[att + pp] = bf16ToF32(f32ToBf16(fround(f[att + pp]! * inv)));
      const oo = (out >> 2) + h * headDim;
      for (let i = 0; i < headDim; i++) f[oo + i] = 0;
      for (let pp = 0; pp < nPos; pp++) {
        const a = f[att + pp]!;
        const vo = (vCache >> 1) + pp * kvDim + kvh * headDim;
        for (let i = 0; i < headDim; i++) f[oo + i] = fround(f[oo + i]! + fround(a * bf16ToF32(this.u16[vo + i]!)));
      }
    }
  }

  /** q (f32) . k (bf16) over n values, in the kernel's order: two 4-lane accumulators per 8, then the rest. */
  private dotBf16(qo: number, ko: number, n: number): number {
    const f = this.f32;
    const a0 = [0, 0, 0, 0];
    const a1 = [0, 0, 0, 0];
    let i = 0;
    for (; i + 8 <= n; i += 8) {
      for (let j = 0; j < 4; j++) {
        a0[j] = fround(a0[j]! + fround(f[qo + i + j]! * bf16ToF32(this.u16[ko + i + j]!)));
        a1[j] = fround(a1[j]! + fround(f[qo + i + 4 + j]! * bf16ToF32(this.u16[ko + i + 4 + j]!)));
      }
    }
    let s = hsum4(a0.map((v, j) => fround(v + a1[j]!)));
    for (; i < n; i++) s = fround(s + fround(f[qo + i]! * bf16ToF32(this.u16[ko + i]!)));
    return s;
  }

  siluMul(gate: Ptr, up: Ptr, n: number): void {
    const f = this.f32;
    for (let i = 0; i < n; i++) {
      const g = f[(gate >> 2) + i]!;
      f[(gate >> 2) + i] = (g / (1 + Math.exp(-g))) * f[(up >> 2) + i]!;
    }
  }
}

export class ReferenceBackend implements KernelBackend {
  readonly name = "typescript reference (no WebAssembly SIMD)";
  readonly threads = 1;
  readonly scratchBytes = 0;
  private readonly bound = new Set<Arena>();
  bind(arena: Arena): Kernels {
    this.bound.add(arena);
    return new ReferenceKernels(arena);
  }
  release(arena: Arena): void {
    this.bound.delete(arena);
  }
  get boundArenas(): number {
    return this.bound.size;
  }
  idle(): void {}
  async close(): Promise<void> {}
}
