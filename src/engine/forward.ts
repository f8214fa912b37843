/**
 * The Llama forward pass, read top to bottom like llama2.c's run.c: embedding, then per layer
 * RMSNorm -> q,k,v -> RoPE -> KV cache -> attention -> output projection -> residual, RMSNorm ->
 * SwiGLU feed-forward -> residual; final norm and classifier. Every loop is a kernel call.
 *
 * A call processes a batch of consecutive tokens (the prompt) at once, so each weight matrix is
 * streamed from memory once per batch rather than once per token.
 */
import type { Kernels } from "../kernels/kernels.js";
import { q8RowBytes } from "../kernels/q8.js";
import type { Matrix, ModelWeights } from "./weights.js";

export class ForwardPass {
  /** Host copy of the residual stream, used to move between arenas. */
  private readonly hostX: Float32Array;

  constructor(readonly w: ModelWeights) {
    this.hostX = new Float32Array(w.batch * w.dims.dimP);
  }

  /**
   * Run `tokens` at positions pos, pos+1, ... (at most w.batch of them) and return the logits of
   * the last one (a view into arena memory, valid until the next call).
   */
  forward(tokens: readonly number[], pos: number): Float32Array {
    const w = this.w;
    const c = w.config;
    const { dimP, kvDim, kvDimP, hiddenP } = w.dims;
    const n = tokens.length;
    if (n < 1 || n > w.batch) throw new RangeError(`forward: ${n} tokens, expected 1..${w.batch}`);
    if (pos + n > w.seqLen) throw new RangeError(`forward: positions up to ${pos + n} exceed the context ${w.seqLen}`);
    const last = w.arenas.length - 1;
    const f = 4;

    // Embedding lookup (the table lives in the last arena).
    let cur = last;
    {
      const k = w.kernels[last]!;
      const s = w.scratch[last]!;
      const rowBytes = q8RowBytes(w.embedding.colsP);
      for (let t = 0; t < n; t++) {
        const id = tokens[t]!;
        if (!(id >= 0 && id < c.vocabSize)) throw new RangeError(`token id ${id} outside the vocabulary (0..${c.vocabSize - 1})`);
        k.dequantQ8(s.x + t * dimP * f, w.embedding.ptr + id * rowBytes, dimP);
      }
    }

    for (let l = 0; l < c.nLayers; l++) {
      const L = w.layers[l]!;
      if (L.arena !== cur) {
        this.moveResidual(cur, L.arena, n);
        cur = L.arena;
      }
      const k = w.kernels[cur]!;
      const s = w.scratch[cur]!;

      // Attention.
      for (let t = 0; t < n; t++) k.rmsnorm(s.xb + t * dimP * f, s.x + t * dimP * f, L.attnNorm, c.dim, c.normEps);
      this.matmul(k, s.xq, s.q, L.wq, s.xb, n);
      this.matmul(k, s.xq, s.k, L.wk, s.xb, n, false);
      this.matmul(k, s.xq, s.v, L.wv, s.xb, n, false);
      for (let t = 0; t < n; t++) {
        const p = pos + t;
        const cs = s.cosSin + p * c.headDim * f;
        k.rope(s.q + t * dimP * f, c.nHeads, c.headDim, cs);
        k.rope(s.k + t * kvDimP * f, c.nKvHeads, c.headDim, cs);
        k.storeBf16(L.kCache + p * kvDim * 2, s.k + t * kvDimP * f, kvDim);
        k.storeBf16(L.vCache + p * kvDim * 2, s.v + t * kvDimP * f, kvDim);
      }
      for (let t = 0; t < n; t++) {
        k.attention(s.attOut + t * dimP * f, s.q + t * dimP * f, L.kCache, L.vCache, s.scores,
          c.nHeads, c.nKvHeads, c.headDim, pos + t + 1);
      }
      this.matmul(k, s.xq, s.xb, L.wo, s.attOut, n);
      k.add(s.x, s.xb, n * dimP);

      // Feed-forward: down(silu(gate(x)) * up(x)).
      for (let t = 0; t < n; t++) k.rmsnorm(s.xb + t * dimP * f, s.x + t * dimP * f, L.ffnNorm, c.dim, c.normEps);
      this.matmul(k, s.xq, s.hb, L.gate, s.xb, n);
      this.matmul(k, s.xq, s.hb2, L.up, s.xb, n, false);
      k.siluMul(s.hb, s.hb2, n * hiddenP);
      this.matmul(k, s.xq, s.xb, L.down, s.hb, n);
      k.add(s.x, s.xb, n * dimP);
    }

    if (cur !== last) this.moveResidual(cur, last, n);
    const k = w.kernels[last]!;
    const s = w.scratch[last]!;
    const lastX = s.x + (n - 1) * dimP * f;
    k.rmsnorm(s.xb, lastX, w.finalNorm, c.dim, c.normEps);
    this.matmul(k, s.xq, s.logits, w.classifier, s.xb, 1);
    return w.arenas[last]!.f32(s.logits, c.vocabSize);
  }

  /**
   * out = W x for n token vectors: quantize the inputs to Q8_0 (unless `reuse`, when xq already
   * holds these inputs quantized), then the Q8_0 product.
   */
  private matmul(k: Kernels, xq: number, out: number, m: Matrix, x: number, n: number, quantize = true): void {
    if (quantize) k.quantizeQ8(xq, x, n * m.colsP);
    k.matmulQ8(out, m.ptr, xq, m.rowsP, m.colsP, n);
  }

  private moveResidual(from: number, to: number, n: number): void {
    const w = this.w;
    const len = n * w.dims.dimP;
    this.hostX.set(w.arenas[from]!.f32(w.scratch[from]!.x, len));
    w.arenas[to]!.f32(w.scratch[to]!.x, len).set(this.hostX.subarray(0, len));
  }
}
