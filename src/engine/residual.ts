/**
 * The residual stream of a forward pass, with the norm weights it is normalised by. Every node
 * that runs the layer loop (step.ts) holds one: the single-machine forward pass and every member
 * of a cluster, each its own copy. Two operations: normalise it (the input of a layer's matrices,
 * which quantize it to their own activation type), and add a layer's output (the sum of the
 * nodes' partial sums, see sumPartials) to it.
 */
import type { Arena } from "../kernels/arena.js";
import type { KernelBackend, Kernels, Ptr } from "../kernels/kernels.js";
import { pad32 } from "../kernels/q8.js";
import type { LlamaConfig } from "../model/config.js";
import { LlameshError } from "../core/errors.js";
import { plannedArena } from "./layout.js";

/**
 * The sum of the nodes' partial sums of one sync, always added in the order given (node order),
 * so that every node, and every run, adds them the same way: one part is returned as it is, more
 * are added into `acc` (which is returned).
 */
export function sumPartials(parts: readonly Float32Array[], len: number, acc: Float32Array): Float32Array {
  if (parts.length === 0) throw new RangeError("sumPartials: no partial sums");
  if (parts.length === 1) return parts[0]!;
  acc.set(parts[0]!.subarray(0, len));
  for (let j = 1; j < parts.length; j++) {
    const p = parts[j]!;
    for (let i = 0; i < len; i++) acc[i] = acc[i]! + p[i]!;
  }
  return acc;
}

export class ResidualStream {
  /** Its own arena: the stream, the norms, the normalised and quantized input. */
  readonly arena: Arena;
  private readonly k: Kernels;
  private readonly x: Ptr;
  private readonly xb: Ptr;
  private readonly norms: Ptr;
  readonly dimP: number;

  /** `norms`: (2 * nLayers + 1) x dim weights in readNorms' order (weights.ts). */
  constructor(private readonly config: LlamaConfig, norms: Float32Array, readonly batch: number, private readonly backend: KernelBackend) {
    const c = config;
    const dimP = (this.dimP = pad32(c.dim));
    const nNorms = 2 * c.nLayers + 1;
    if (norms.length !== nNorms * c.dim) throw new LlameshError(`${norms.length} norm weights, expected ${nNorms} x ${c.dim}`);
    const { arena, k, value } = plannedArena(backend, "residual", "the residual stream", (a) => ({
      norms: a.alloc(nNorms * dimP * 4),
      x: a.alloc(batch * dimP * 4),
      xb: a.alloc(batch * dimP * 4),
    }));
    this.arena = arena;
    this.k = k;
    ({ norms: this.norms, x: this.x, xb: this.xb } = value);
    const nv = arena.f32(this.norms, nNorms * dimP);
    for (let i = 0; i < nNorms; i++) nv.set(norms.subarray(i * c.dim, (i + 1) * c.dim), i * dimP);
  }

  /** Done with this stream: the backend lets go of its arena. */
  dispose(): void {
    this.backend.release(this.arena);
  }

  /** The first nTok rows of the stream (a view; write the embeddings here). */
  values(nTok: number): Float32Array {
    return this.arena.f32(this.x, nTok * this.dimP);
  }

  /**
   * RMSNorm with norm `ni` (weights.ts normIndex) of the first nTok rows (nTok x dimP; a view,
   * valid until the next norm: its consumers copy it into their own arena at once, and a copy here
   * was 45 allocations of up to 256 KB per step).
   */
  norm(ni: number, nTok: number): Float32Array {
    const c = this.config;
    const dimP = this.dimP;
    const w = this.norms + ni * dimP * 4;
    for (let t = 0; t < nTok; t++) this.k.rmsnorm(this.xb + t * dimP * 4, this.x + t * dimP * 4, w, c.dim, c.normEps);
    return this.arena.f32(this.xb, nTok * dimP);
  }

  /** RMSNorm with norm `ni` of the given rows, in that order (rows.length x dimP; a view, as norm's). */
  normRows(ni: number, rows: readonly number[]): Float32Array {
    const c = this.config;
    const dimP = this.dimP;
    const w = this.norms + ni * dimP * 4;
    rows.forEach((r, t) => this.k.rmsnorm(this.xb + t * dimP * 4, this.x + r * dimP * 4, w, c.dim, c.normEps));
    return this.arena.f32(this.xb, rows.length * dimP);
  }

  /** x += sum, for nTok rows (the sum of a sync's partial sums, sumPartials). */
  add(sum: Float32Array, nTok: number): void {
    const len = nTok * this.dimP;
    const x = this.values(nTok);
    for (let i = 0; i < len; i++) x[i] = x[i]! + sum[i]!;
  }
}
