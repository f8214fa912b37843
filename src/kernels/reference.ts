/**
 * Plain TypeScript kernels: the specification every faster kernel is tested against, and the
 * path that runs where WebAssembly SIMD is missing. Written for clarity, not speed.
 */
import type { Arena } from "./arena.js";
import type { KernelBackend, Kernels, Ptr } from "./kernels.js";
import { actTypeOf, rowBytes, type ActType, type TensorType } from "./formats.js";
import { quantizeActRow, quantizeRow, vecDot } from "./quant/index.js";
import { bf16ToF32, f32ToBf16, f32ToF16, roundHalfEven } from "../core/numbers.js";

export class ReferenceKernels implements Kernels {
  private readonly u8: Uint8Array;
  private readonly f32: Float32Array;
  private readonly u16: Uint16Array;

  constructor(readonly arena: Arena) {
    const buf = arena.memory.buffer;
    this.u8 = new Uint8Array(buf);
    this.f32 = new Float32Array(buf);
    this.u16 = new Uint16Array(buf);
  }

  quantizeAct(act: ActType, dst: Ptr, src: Ptr, n: number): void {
    quantizeActRow(act, this.f32, src >> 2, this.u8, dst, n);
  }

  matmul(type: TensorType, out: Ptr, w: Ptr, x: Ptr, rows: number, cols: number, nTok: number): void {
    const wb = rowBytes(type, cols), xb = rowBytes(actTypeOf(type), cols);
    for (let t = 0; t < nTok; t++) {
      for (let r = 0; r < rows; r++) {
        this.f32[(out >> 2) + t * rows + r] = vecDot(type, cols, this.u8, w + r * wb, this.u8, x + t * xb);
      }
    }
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

  attention(out: Ptr, q: Ptr, kCache: Ptr, vCache: Ptr, scratch: Ptr,
    nHeads: number, nKvHeads: number, headDim: number, nPos: number): void {
    const f = this.f32;
    const kvDim = nKvHeads * headDim;
    const group = nHeads / nKvHeads;
    const scale = 1 / Math.sqrt(headDim);
    for (let h = 0; h < nHeads; h++) {
      const kvh = Math.floor(h / group);
      const qo = (q >> 2) + h * headDim;
      const att = (scratch >> 2) + h * nPos;
      let max = -Infinity;
      for (let p = 0; p < nPos; p++) {
        const ko = (kCache >> 1) + p * kvDim + kvh * headDim;
        let dot = 0;
        for (let i = 0; i < headDim; i++) dot += f[qo + i]! * bf16ToF32(this.u16[ko + i]!);
        f[att + p] = dot * scale;
        if (f[att + p]! > max) max = f[att + p]!;
      }
      let sum = 0;
      for (let p = 0; p < nPos; p++) {
        f[att + p] = Math.exp(f[att + p]! - max);
        sum += f[att + p]!;
      }
      const oo = (out >> 2) + h * headDim;
      for (let i = 0; i < headDim; i++) f[oo + i] = 0;
      for (let p = 0; p < nPos; p++) {
        const a = f[att + p]! / sum;
        const vo = (vCache >> 1) + p * kvDim + kvh * headDim;
        for (let i = 0; i < headDim; i++) f[oo + i] = f[oo + i]! + a * bf16ToF32(this.u16[vo + i]!);
      }
    }
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
