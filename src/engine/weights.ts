/**
 * What the engine knows of a checkpoint's tensors: their Hugging Face names and expected shapes
 * (checkTensors), the norms (readNorms), the RoPE table, and the accounting behind the report
 * (multiply-accumulates per token, memory by layer type).
 *
 * In memory every matrix is Q8_0 and every vector dimension is zero-padded to a multiple of 32
 * (the Q8_0 block): the padding holds zeros, so each product stays exact and the padded entries of
 * every activation stay zero (stories260K has intermediate_size 172 -> 192). The matrices live in
 * a ModelSlice (slice.ts), the whole model being one slice on a single machine.
 */
import type { Arena } from "../kernels/arena.js";
import type { Ptr } from "../kernels/kernels.js";
import { rowBytes, type TensorType } from "../kernels/formats.js";
import { pad32 } from "../kernels/q8.js";
import type { TypePlan } from "./types.js";
import { firstNonFinite, nonFiniteError } from "./finite.js";
import { attnDim, type LlamaConfig } from "../model/config.js";
import { LlameshError } from "../core/errors.js";
import type { TensorSource } from "../core/tensor-source.js";

export interface MemoryRow {
  type: string;
  quant: string;
  bytes: number;
  params: number;
}

/** What the report shows of a model's memory on this machine. */
export interface MemorySummary {
  byType: MemoryRow[];
  runState: number;
  kvCache: number;
  model: number;
  arenas: number;
  /** Checkpoint tensors this machine read. */
  tensorsLoaded: number;
  /** Matrices of this machine the kernels rearranged (ModelSlice.seal), counted by layout, e.g. { Q4_0x4: 154 }. */
  repacked: Record<string, number>;
}

/** ModelSlice.repacked counted by layout. */
export function countLayouts(layouts: ReadonlyMap<string, string> | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of layouts?.values() ?? []) out[l] = (out[l] ?? 0) + 1;
  return out;
}

/** Hugging Face tensor names (Llama, Mistral, Qwen2's biases, Qwen3's q/k norms). */
export const hfNames = {
  embedding: "model.embed_tokens.weight",
  finalNorm: "model.norm.weight",
  classifier: "lm_head.weight",
  layer: (i: number) => ({
    attnNorm: `model.layers.${i}.input_layernorm.weight`,
    wq: `model.layers.${i}.self_attn.q_proj.weight`,
    wk: `model.layers.${i}.self_attn.k_proj.weight`,
    wv: `model.layers.${i}.self_attn.v_proj.weight`,
    wo: `model.layers.${i}.self_attn.o_proj.weight`,
    bq: `model.layers.${i}.self_attn.q_proj.bias`,
    bk: `model.layers.${i}.self_attn.k_proj.bias`,
    bv: `model.layers.${i}.self_attn.v_proj.bias`,
    qNorm: `model.layers.${i}.self_attn.q_norm.weight`,
    kNorm: `model.layers.${i}.self_attn.k_norm.weight`,
    ffnNorm: `model.layers.${i}.post_attention_layernorm.weight`,
    gate: `model.layers.${i}.mlp.gate_proj.weight`,
    up: `model.layers.${i}.mlp.up_proj.weight`,
    down: `model.layers.${i}.mlp.down_proj.weight`,
  }),
};

/** Multiply-accumulates of all the matrices for one token (the GMAC figure's numerator). */
export function modelMacsPerToken(c: LlamaConfig): number {
  const kvDim = c.nKvHeads * c.headDim;
  return c.nLayers * (2 * attnDim(c) * c.dim + 2 * kvDim * c.dim + 3 * c.dim * c.hiddenDim) + c.vocabSize * c.dim;
}

/**
 * RoPE's angular frequency of each pair i < headDim/2: theta^(-2i/headDim), then the model's
 * scaling (Hugging Face's rope_init functions; llama.cpp's rope_freqs / freq_scale).
 */
export function ropeFrequencies(c: LlamaConfig): Float64Array {
  const half = c.headDim / 2;
  const out = new Float64Array(half);
  const s = c.ropeScaling;
  for (let i = 0; i < half; i++) {
    const f = 1 / Math.pow(c.ropeTheta, (2 * i) / c.headDim);
    if (!s) out[i] = f;
    else if (s.type === "linear") out[i] = f / s.factor;
    else if (s.type === "factors") out[i] = f / s.factors[i]!;
    else {
      // llama3: wavelengths beyond the original context / low_freq_factor are stretched by factor,
      // those under it / high_freq_factor kept, and a blend in between
      const wavelen = (2 * Math.PI) / f;
      const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
      const highWavelen = s.originalMaxPositions / s.highFreqFactor;
      if (wavelen < highWavelen) out[i] = f;
      else if (wavelen > lowWavelen) out[i] = f / s.factor;
      else {
        const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        out[i] = (1 - smooth) * (f / s.factor) + smooth * f;
      }
    }
  }
  return out;
}

/** cos/sin table of RoPE (shared with the cluster nodes, which must compute it identically). */
export function ropeTable(arena: Arena, ptr: Ptr, c: LlamaConfig, seqLen: number): void {
  const half = c.headDim / 2;
  const t = arena.f32(ptr, seqLen * c.headDim);
  const freqs = ropeFrequencies(c);
  for (let p = 0; p < seqLen; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * freqs[i]!;
      t[p * c.headDim + i] = Math.cos(angle);
      t[p * c.headDim + half + i] = Math.sin(angle);
    }
  }
}

/** The tensors a Llama checkpoint must hold, with their shapes. */
export function expectedTensors(c: LlamaConfig): [string, number[]][] {
  const kvDim = c.nKvHeads * c.headDim;
  const out: [string, number[]][] = [[hfNames.embedding, [c.vocabSize, c.dim]], [hfNames.finalNorm, [c.dim]]];
  if (!c.tiedEmbeddings) out.push([hfNames.classifier, [c.vocabSize, c.dim]]);
  for (let i = 0; i < c.nLayers; i++) {
    const n = hfNames.layer(i);
    out.push(
      [n.attnNorm, [c.dim]], [n.wq, [attnDim(c), c.dim]], [n.wk, [kvDim, c.dim]], [n.wv, [kvDim, c.dim]], [n.wo, [c.dim, attnDim(c)]],
      [n.ffnNorm, [c.dim]], [n.gate, [c.hiddenDim, c.dim]], [n.up, [c.hiddenDim, c.dim]], [n.down, [c.dim, c.hiddenDim]],
    );
    if (c.attnBias) out.push([n.bq, [attnDim(c)]], [n.bk, [kvDim]], [n.bv, [kvDim]]);
    if (c.qkNorm) out.push([n.qNorm, [c.headDim]], [n.kNorm, [c.headDim]]);
  }
  return out;
}

/** Every tensor exists with the right shape: checked before allocating gigabytes. */
export function checkTensors(source: TensorSource, c: LlamaConfig): void {
  for (const [name, shape] of expectedTensors(c)) {
    if (!source.has(name)) throw new LlameshError(`${source.files.join(", ")}: missing tensor ${name} (expected shape [${shape.join(", ")}])`);
    const got = source.info(name).shape;
    if (got.length !== shape.length || got.some((v, i) => v !== shape[i])) {
      throw new LlameshError(`${source.info(name).file}: tensor ${name} has shape [${got.join(", ")}], expected [${shape.join(", ")}]`);
    }
  }
}

/**
 * The norm weights in the order a forward pass uses them: attention norm and feed-forward norm of
 * each layer, then the final norm; (2 * nLayers + 1) x dim floats.
 */
export function readNorms(source: TensorSource, c: LlamaConfig): Float32Array {
  const out = new Float32Array((2 * c.nLayers + 1) * c.dim);
  for (let l = 0; l < c.nLayers; l++) {
    const n = hfNames.layer(l);
    source.readRows(n.attnNorm, 0, 1, out.subarray(2 * l * c.dim, (2 * l + 1) * c.dim));
    source.readRows(n.ffnNorm, 0, 1, out.subarray((2 * l + 1) * c.dim, (2 * l + 2) * c.dim));
  }
  source.readRows(hfNames.finalNorm, 0, 1, out.subarray(2 * c.nLayers * c.dim));
  const bad = firstNonFinite(out);
  if (bad >= 0) {
    const i = Math.floor(bad / c.dim);
    const name = i === 2 * c.nLayers ? hfNames.finalNorm : i % 2 === 0 ? hfNames.layer(i >> 1).attnNorm : hfNames.layer(i >> 1).ffnNorm;
    throw nonFiniteError(source.info(name).file, name, 0);
  }
  return out;
}

/** Index of a norm in readNorms' order. */
export function normIndex(layer: number, ffn: boolean): number {
  return 2 * layer + (ffn ? 1 : 0);
}

/** Bytes of a rows x cols matrix of `type` as stored (both padded to 32). */
export function matrixBytes(rows: number, cols: number, type: TensorType = "Q8_0"): number {
  return pad32(rows) * rowBytes(type, pad32(cols));
}

/** The report's memory rows of a whole model: each group of matrices with its type(s), f32 norms. */
export function memoryByType(c: LlamaConfig, plan: TypePlan): MemoryRow[] {
  const kvDim = c.nKvHeads * c.headDim;
  const L = c.nLayers;
  const group = (type: string, tensors: [string, number, number][]): MemoryRow => {
    const types = [...new Set(tensors.map(([n]) => plan[n]!))];
    return {
      type,
      quant: types.join("+"),
      bytes: tensors.reduce((s, [n, r, k]) => s + matrixBytes(r, k, plan[n]!), 0),
      params: tensors.reduce((s, [, r, k]) => s + r * k, 0),
    };
  };
  const layers = (f: (n: ReturnType<typeof hfNames.layer>) => [string, number, number][]): [string, number, number][] =>
    Array.from({ length: L }, (_, l) => f(hfNames.layer(l))).flat();
  const rows: MemoryRow[] = [
    group("embedding", [[hfNames.embedding, c.vocabSize, c.dim]]),
    group("attention (q,k,v,o)", layers((n) => [[n.wq, attnDim(c), c.dim], [n.wk, kvDim, c.dim], [n.wv, kvDim, c.dim], [n.wo, c.dim, attnDim(c)]])),
    group("feed-forward (gate,up,down)", layers((n) => [[n.gate, c.hiddenDim, c.dim], [n.up, c.hiddenDim, c.dim], [n.down, c.dim, c.hiddenDim]])),
    { type: "norms", quant: "F32", bytes: (2 * L + 1) * pad32(c.dim) * 4, params: (2 * L + 1) * c.dim },
  ];
  const extra = L * ((c.attnBias ? attnDim(c) + 2 * kvDim : 0) + (c.qkNorm ? 2 * c.headDim : 0));
  if (extra > 0) rows.push({ type: `${[c.attnBias ? "q,k,v biases" : "", c.qkNorm ? "q,k norms" : ""].filter(Boolean).join(", ")}`, quant: "F32", bytes: extra * 4, params: extra });
  if (!c.tiedEmbeddings) rows.push(group("classifier", [[hfNames.classifier, c.vocabSize, c.dim]]));
  return rows;
}
