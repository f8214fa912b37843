/**
 * The residual stream of a forward pass, with the norm weights it is normalised by. Whoever adds
 * the layers' results holds one: the single-machine forward pass (forward.ts), the star's client
 * and every mesh member (cluster/). Two operations: normalise it and quantize it to Q8_0 (the
 * input of a layer's matrices), and add partial sums to it, always in the order given (node
 * order), so that every holder, and every run, adds them the same way.
 */
import { Arena } from "../kernels/arena.js";
import type { KernelBackend, Kernels, Ptr } from "../kernels/kernels.js";
import { pad32, q8RowBytes } from "../kernels/q8.js";
import type { LlamaConfig } from "../model/config.js";
import { LlameshError } from "../core/errors.js";
import { backendScratchBytes } from "./weights.js";

export class ResidualStream {
  /** Its own arena: the stream, the norms, the normalised and quantized input. */
  readonly arena: Arena;
  private readonly k: Kernels;
  private readonly x: Ptr;
  private readonly xb: Ptr;
  private readonly xq: Ptr;
  private readonly norms: Ptr;
  private readonly acc: Float32Array;
  readonly dimP: number;

  /** `norms`: (2 * nLayers + 1) x dim weights in readNorms' order (weights.ts). */
  constructor(private readonly config: LlamaConfig, norms: Float32Array, readonly batch: number, private readonly backend: KernelBackend) {
    const c = config;
    const dimP = (this.dimP = pad32(c.dim));
    const nNorms = 2 * c.nLayers + 1;
    if (norms.length !== nNorms * c.dim) throw new LlameshError(`${norms.length} norm weights, expected ${nNorms} x ${c.dim}`);
    const a = (this.arena = new Arena(nNorms * dimP * 4 + 2 * batch * dimP * 4 + batch * q8RowBytes(dimP) + backendScratchBytes(backend.threads) + 4 * 64, "residual"));
    this.k = backend.bind(a);
    this.norms = a.alloc(nNorms * dimP * 4);
    const nv = a.f32(this.norms, nNorms * dimP);
    for (let i = 0; i < nNorms; i++) nv.set(norms.subarray(i * c.dim, (i + 1) * c.dim), i * dimP);
    this.x = a.alloc(batch * dimP * 4);
    this.xb = a.alloc(batch * dimP * 4);
    this.xq = a.alloc(batch * q8RowBytes(dimP));
    this.acc = new Float32Array(batch * dimP);
  }

  /** Done with this stream: the backend lets go of its arena. */
  dispose(): void {
    this.backend.release(this.arena);
  }

  /** The first nTok rows of the stream (a view; write the embeddings here). */
  values(nTok: number): Float32Array {
    return this.arena.f32(this.x, nTok * this.dimP);
  }

  /** RMSNorm with norm `ni` (weights.ts normIndex) of nTok rows, or only the last, quantized to Q8_0 (a copy). */
  normQ(ni: number, nTok: number, lastOnly = false): Uint8Array {
    const c = this.config;
    const dimP = this.dimP;
    const t0 = lastOnly ? nTok - 1 : 0;
    const cnt = nTok - t0;
    const w = this.norms + ni * dimP * 4;
    for (let t = 0; t < cnt; t++) this.k.rmsnorm(this.xb + t * dimP * 4, this.x + (t0 + t) * dimP * 4, w, c.dim, c.normEps);
    this.k.quantizeQ8(this.xq, this.xb, cnt * dimP);
    return this.arena.u8(this.xq, cnt * q8RowBytes(dimP)).slice(); // a copy (slice: one memcpy)
  }

  /**
   * x += (p0 + p1 + ...), the partial sums added in the order given (node order). With one part
   * this is x += p0, what a single machine does.
   */
  addPartials(parts: Float32Array[], nTok: number): void {
    const len = nTok * this.dimP;
    const x = this.values(nTok);
    if (parts.length === 1) {
      const p = parts[0]!;
      for (let i = 0; i < len; i++) x[i] = x[i]! + p[i]!;
      return;
    }
    const acc = this.acc;
    acc.set(parts[0]!.subarray(0, len));
    for (let j = 1; j < parts.length; j++) {
      const p = parts[j]!;
      for (let i = 0; i < len; i++) acc[i] = acc[i]! + p[i]!;
    }
    for (let i = 0; i < len; i++) x[i] = x[i]! + acc[i]!;
  }
}
