/**
 * A plain float32 forward pass of the Llama family, written independently of the engine (no
 * quantization, f32 KV cache, its own RoPE frequencies), to check the engine's logits against:
 * Llama (and Llama 3.1's llama3 / linear RoPE scaling, after Hugging Face's
 * _compute_llama3_parameters), Mistral's sliding window, Qwen2's q/k/v biases, Qwen3's per-head
 * q/k RMSNorm and head size.
 */
import assert from "node:assert/strict";
import type { LlamaConfig } from "../../src/model/config.js";
import type { TensorSource } from "../../src/core/tensor-source.js";

function read(src: TensorSource, name: string): Float32Array {
  const info = src.info(name);
  const n = info.shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  src.readRows(name, 0, info.shape.length > 1 ? info.shape[0]! : 1, out);
  return out;
}

function matvec(w: Float32Array, x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += w[r * cols + c]! * x[c]!;
    out[r] = s;
  }
  return out;
}

function rmsnorm(x: Float32Array, w: Float32Array, eps: number): Float32Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const s = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * s * w[i]!);
}

export class ReferenceLlama {
  private readonly t = new Map<string, Float32Array>();
  private readonly kc: Float32Array[][] = [];
  private readonly vc: Float32Array[][] = [];

  /** `ignore`: tensors to leave out (to show a family's feature matters). */
  constructor(private readonly c: LlamaConfig, src: TensorSource, opts: { ignore?: RegExp } = {}) {
    for (const name of (src as unknown as { names: string[] }).names) if (!opts.ignore?.test(name)) this.t.set(name, read(src, name));
    for (let l = 0; l < c.nLayers; l++) {
      this.kc.push([]);
      this.vc.push([]);
    }
  }

  private w(name: string): Float32Array {
    const v = this.t.get(name);
    if (!v) throw new Error(`missing ${name}`);
    return v;
  }

  /** Hugging Face's inv_freq for this config (with its rope_scaling). */
  private freq(i: number): number {
    const c = this.c;
    const base = 1 / Math.pow(c.ropeTheta, (2 * i) / c.headDim);
    const s = c.ropeScaling;
    if (!s) return base;
    if (s.type === "linear") return base / s.factor;
    if (s.type === "factors") return base / s.factors[i]!;
    const wavelen = (2 * Math.PI) / base;
    const lowFreqWavelen = s.originalMaxPositions / s.lowFreqFactor;
    const highFreqWavelen = s.originalMaxPositions / s.highFreqFactor;
    if (wavelen > lowFreqWavelen) return base / s.factor;
    if (wavelen < highFreqWavelen) return base;
    const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * (base / s.factor) + smooth * base;
  }

  private rope(v: Float32Array, nHeads: number, pos: number): void {
    const hd = this.c.headDim;
    const half = hd / 2;
    for (let h = 0; h < nHeads; h++) {
      for (let i = 0; i < half; i++) {
        const freq = this.freq(i);
        const cos = Math.cos(pos * freq);
        const sin = Math.sin(pos * freq);
        const a = v[h * hd + i]!;
        const b = v[h * hd + i + half]!;
        v[h * hd + i] = a * cos - b * sin;
        v[h * hd + i + half] = b * cos + a * sin;
      }
    }
  }

  /** Logits after the token at position `pos` (positions must come in order). */
  step(token: number, pos: number): Float32Array {
    const c = this.c;
    const hd = c.headDim;
    const kvDim = c.nKvHeads * hd;
    const qDim = c.nHeads * hd;
    const x = this.w("model.embed_tokens.weight").slice(token * c.dim, (token + 1) * c.dim);
    for (let l = 0; l < c.nLayers; l++) {
      const p = `model.layers.${l}.`;
      const xb = rmsnorm(x, this.w(p + "input_layernorm.weight"), c.normEps);
      const q = matvec(this.w(p + "self_attn.q_proj.weight"), xb, qDim, c.dim);
      const k = matvec(this.w(p + "self_attn.k_proj.weight"), xb, kvDim, c.dim);
      const v = matvec(this.w(p + "self_attn.v_proj.weight"), xb, kvDim, c.dim);
      if (this.t.has(p + "self_attn.q_proj.bias")) {
        for (const [vec, name] of [[q, "q"], [k, "k"], [v, "v"]] as const) {
          const b = this.w(p + `self_attn.${name}_proj.bias`);
          for (let i = 0; i < vec.length; i++) vec[i] = vec[i]! + b[i]!;
        }
      }
      if (this.t.has(p + "self_attn.q_norm.weight")) {
        for (const [vec, heads, name] of [[q, c.nHeads, "q"], [k, c.nKvHeads, "k"]] as const) {
          const w = this.w(p + `self_attn.${name}_norm.weight`);
          for (let h = 0; h < heads; h++) vec.set(rmsnorm(vec.subarray(h * hd, (h + 1) * hd), w, c.normEps), h * hd);
        }
      }
      this.rope(q, c.nHeads, pos);
      this.rope(k, c.nKvHeads, pos);
      this.kc[l]![pos] = k;
      this.vc[l]![pos] = v;
      const att = new Float32Array(qDim);
      // a sliding window of W: position pos sees pos - W + 1 .. pos (transformers' mask)
      const from = c.slidingWindow !== null ? Math.max(0, pos - c.slidingWindow + 1) : 0;
      for (let h = 0; h < c.nHeads; h++) {
        const kvh = Math.floor(h / (c.nHeads / c.nKvHeads));
        const scores = new Float32Array(pos + 1 - from);
        for (let t = from; t <= pos; t++) {
          let s = 0;
          for (let i = 0; i < hd; i++) s += q[h * hd + i]! * this.kc[l]![t]![kvh * hd + i]!;
          scores[t - from] = s / Math.sqrt(hd);
        }
        const max = Math.max(...scores);
        let sum = 0;
        for (let t = 0; t < scores.length; t++) sum += scores[t] = Math.exp(scores[t]! - max);
        for (let t = from; t <= pos; t++) {
          for (let i = 0; i < hd; i++) att[h * hd + i] = att[h * hd + i]! + (scores[t - from]! / sum) * this.vc[l]![t]![kvh * hd + i]!;
        }
      }
      const o = matvec(this.w(p + "self_attn.o_proj.weight"), att, c.dim, qDim);
      for (let i = 0; i < c.dim; i++) x[i] = x[i]! + o[i]!;
      const xb2 = rmsnorm(x, this.w(p + "post_attention_layernorm.weight"), c.normEps);
      const g = matvec(this.w(p + "mlp.gate_proj.weight"), xb2, c.hiddenDim, c.dim);
      const u = matvec(this.w(p + "mlp.up_proj.weight"), xb2, c.hiddenDim, c.dim);
      for (let i = 0; i < c.hiddenDim; i++) g[i] = (g[i]! / (1 + Math.exp(-g[i]!))) * u[i]!;
      const d = matvec(this.w(p + "mlp.down_proj.weight"), g, c.dim, c.hiddenDim);
      for (let i = 0; i < c.dim; i++) x[i] = x[i]! + d[i]!;
    }
    const xf = rmsnorm(x, this.w("model.norm.weight"), c.normEps);
    const cls = c.tiedEmbeddings ? this.w("model.embed_tokens.weight") : this.w("lm_head.weight");
    return matvec(cls, xf, c.vocabSize, c.dim);
  }
}

/** ||a - b|| / ||b||: the relative error of a whole logits vector. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

/** What `worstLogitError` needs of the engine: one forward pass of one token at a position. */
interface OneTokenForward {
  forward(tokens: readonly number[], pos: number): Promise<Float32Array>;
}

/**
 * Feeds `tokens` one at a time to the engine and to the reference, fails at the first position
 * whose logits differ by `tolerance` or more (relative L2), and returns the worst error seen.
 */
export async function worstLogitError(fp: OneTokenForward, ref: ReferenceLlama, tokens: readonly number[], tolerance: number): Promise<number> {
  let worst = 0;
  for (const [pos, tok] of tokens.entries()) {
    const err = relativeError(await fp.forward([tok], pos), ref.step(tok, pos));
    worst = Math.max(worst, err);
    assert.ok(err < tolerance, `position ${pos}: relative error ${err.toFixed(4)} >= ${tolerance}`);
  }
  return worst;
}
