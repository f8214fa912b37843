/**
 * The kernel contract: every hot loop of the forward pass, addressed by byte offsets ("pointers")
 * into one Arena. Two implementations exist: `reference.ts` (plain TypeScript, the specification
 * and the fallback) and `wasm.ts` (WebAssembly SIMD on a thread pool). Tests compare them.
 *
 * Formats: f32 vectors; Q8_0 rows (see q8.ts); the KV cache in bfloat16.
 * All sizes called `cols` or `n` passed to Q8_0 kernels are multiples of 32.
 */
import type { Arena } from "./arena.js";

export type Ptr = number;

export interface Kernels {
  readonly arena: Arena;
  /**
   * Quantize `n` f32 values at `src` to n/32 Q8_0 blocks at `dst`, llama.cpp's formula:
   * d = max|x| / 127 (f32), id = d ? 1/d : 0, q = roundHalfEven(x * id), scale stored as f16(d).
   */
  quantizeQ8(dst: Ptr, src: Ptr, n: number): void;
  /**
   * out[t * rows + r] = sum over blocks b of f16(w.d[r,b]) * f16(x.d[t,b]) * (int dot of the 32 int8 pairs),
   * for r < rows, t < nTok. `w` is rows x cols in Q8_0 (row stride q8RowBytes(cols)), `x` is nTok
   * consecutive quantized vectors of `cols`.
   */
  matmulQ8(out: Ptr, w: Ptr, x: Ptr, rows: number, cols: number, nTok: number): void;
  /** out = x / sqrt(mean(x^2) + eps) * weight, over `n` values (out may equal x). */
  rmsnorm(out: Ptr, x: Ptr, weight: Ptr, n: number, eps: number): void;
  /**
   * Rotate-half RoPE (the Hugging Face Llama layout) in place on `nHeads` heads of `headDim` at `vec`:
   * for i < headDim/2: (a, b) = (v[i], v[i + headDim/2]) -> (a*cos_i - b*sin_i, b*cos_i + a*sin_i).
   * `cosSin` holds headDim/2 cosines then headDim/2 sines for the token's position.
   */
  rope(vec: Ptr, nHeads: number, headDim: number, cosSin: Ptr): void;
  /** dst (bf16) = round-to-nearest-even of src (f32), n values. */
  storeBf16(dst: Ptr, src: Ptr, n: number): void;
  /**
   * Causal grouped-query attention for one query token at position nPos-1.
   * q: nHeads*headDim f32. kCache/vCache: [position][nKvHeads*headDim] bf16 (rows 0..nPos-1 are used).
   * Query head h reads KV head floor(h / (nHeads/nKvHeads)). scores = q.k / sqrt(headDim), softmax
   * over positions, out[h] = sum_p softmax_p * v[p]. scratch: nHeads*nPos f32.
   */
  attention(out: Ptr, q: Ptr, kCache: Ptr, vCache: Ptr, scratch: Ptr,
    nHeads: number, nKvHeads: number, headDim: number, nPos: number): void;
  /** gate[i] = silu(gate[i]) * up[i], n values. */
  siluMul(gate: Ptr, up: Ptr, n: number): void;
}

/** Makes Kernels for arenas; owns threads (if any) that must be released with close(). */
export interface KernelBackend {
  /** For the log line and the report, e.g. "wasm-simd128 x2 threads" or "typescript reference". */
  readonly name: string;
  readonly threads: number;
  /**
   * Bytes bind() takes from each arena for the kernels' own scratch (64-aligned, the first
   * allocation after binding): whoever plans an arena adds exactly this (see engine/layout.ts).
   */
  readonly scratchBytes: number;
  /** Kernels for this arena; throws a RangeError naming the arena when it has no room for scratchBytes. */
  bind(arena: Arena): Kernels;
  /**
   * The arena is no longer used: forget what bind() made for it, so its memory can be collected
   * (kernels bound to it must not be called again). Unknown arenas are ignored.
   */
  release(arena: Arena): void;
  /** Arenas bound and not released (what a long-lived process holds). */
  readonly boundArenas: number;
  /** Between tokens: lets spinning helper threads go to sleep. */
  idle(): void;
  close(): Promise<void>;
}
