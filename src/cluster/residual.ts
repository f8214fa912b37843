/**
 * The residual stream as the cluster keeps it: the star's client (client.ts) and every mesh member
 * (mesh.ts) hold one. Two operations: normalise it and quantize it to Q8_0 (the input of a layer's
 * matrices, exactly the blocks the single-node pass quantizes), and add the nodes' partial sums
 * to it, always in node order so that every holder, and every run, adds them the same way.
 */
import type { Arena } from "../kernels/arena.js";
import type { Kernels, Ptr } from "../kernels/kernels.js";
import { pad32, q8RowBytes } from "../kernels/q8.js";
import type { LlamaConfig } from "../model/config.js";

export class ResidualStream {
  /** nTok x dimP f32: the stream itself. */
  readonly x: Ptr;
  private readonly xb: Ptr;
  private readonly xq: Ptr;
  private readonly acc: Float32Array;
  readonly dimP: number;

  /** Arena bytes a stream of `batch` tokens needs (with 64-byte alignment slack). */
  static bytes(c: LlamaConfig, batch: number): number {
    const dimP = pad32(c.dim);
    return 2 * batch * dimP * 4 + batch * q8RowBytes(dimP) + 3 * 64;
  }

  constructor(private readonly arena: Arena, private readonly k: Kernels, private readonly config: LlamaConfig, batch: number) {
    this.dimP = pad32(config.dim);
    this.x = arena.alloc(batch * this.dimP * 4);
    this.xb = arena.alloc(batch * this.dimP * 4);
    this.xq = arena.alloc(batch * q8RowBytes(this.dimP));
    this.acc = new Float32Array(batch * this.dimP);
  }

  /** The first nTok rows of the stream (a view). */
  values(nTok: number): Float32Array {
    return this.arena.f32(this.x, nTok * this.dimP);
  }

  /** RMSNorm with the weights at `norm` of nTok rows (or only the last), quantized to Q8_0 (a copy). */
  normQ(norm: Ptr, nTok: number, lastOnly = false): Uint8Array {
    const c = this.config;
    const dimP = this.dimP;
    const t0 = lastOnly ? nTok - 1 : 0;
    const cnt = nTok - t0;
    for (let t = 0; t < cnt; t++) this.k.rmsnorm(this.xb + t * dimP * 4, this.x + (t0 + t) * dimP * 4, norm, c.dim, c.normEps);
    this.k.quantizeQ8(this.xq, this.xb, cnt * dimP);
    return Uint8Array.from(this.arena.u8(this.xq, cnt * q8RowBytes(dimP)));
  }

  /**
   * x += (p0 + p1 + ...), the partial sums added in the order given (node order). With one part
   * this is x += p0, what the single-node pass does.
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
