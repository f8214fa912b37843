/**
 * Which type each matrix is stored and computed in: the type plan. A GGUF file's matrices keep the
 * types llama.cpp gave them (files mix them: Q4_K_M is Q4_K with Q6_K for some tensors); a
 * safetensors folder is quantized at load to what `--quant` asks for (default Q8_0, the seed's).
 *
 * `--quant` takes a tensor type (q8_0, q4_0, q4_k, q6_k, ... f16, f32) or a llama.cpp mix
 * (q4_k_m, q5_k_m). The rules follow llama.cpp's llama-quantize:
 * - the classifier (lm_head, or the embedding when tied) gets Q6_K when the choice is a 4- or
 *   5-bit type or a K-quant below Q6_K (llama.cpp's "output.weight" rule), else the choice;
 * - the mixes give attn_v and ffn_down Q6_K in the layers llama.cpp's use_more_bits picks (the
 *   first and last eighth and every third one between), the base type elsewhere;
 * - a matrix whose rows are not whole blocks of the type falls back as llama.cpp does (Q4_K ->
 *   Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> IQ4_NL); rows are padded to 32 values, so the
 *   32-value types always fit.
 * The plan travels to workers with their slices; the slices' bytes are in these types.
 */
import { LlameshError } from "../core/errors.js";
import type { TensorSource } from "../core/tensor-source.js";
import { isTensorType, typeInfo, type TensorType } from "../kernels/formats.js";
import { pad32 } from "../kernels/q8.js";
import type { LlamaConfig } from "../model/config.js";
import { hfNames } from "./weights.js";

/** Storage type of every matrix, by Hugging Face tensor name. */
export type TypePlan = Readonly<Record<string, TensorType>>;

/** What `--quant` can say: keep the file's types, one type, or a mix. */
export type QuantChoice = "keep" | TensorType | "Q4_K_M" | "Q5_K_M";

export const QUANT_CHOICES = "q8_0, q6_k, q5_k_m, q5_k, q5_0, q5_1, q4_k_m, q4_k, q4_0, q4_1, q3_k, q2_k, iq4_nl, bf16, f16, f32, keep";

/** Parse a `--quant` value (case-insensitive). */
export function parseQuantChoice(v: string, flag = "--quant"): QuantChoice {
  const u = v.toUpperCase();
  if (u === "KEEP") return "keep";
  if (u === "Q4_K_M" || u === "Q5_K_M") return u;
  if (isTensorType(u)) return u;
  throw new LlameshError(`${flag} ${JSON.stringify(v)} is not valid, expected one of ${QUANT_CHOICES}`);
}

/** A GGUF keeps its types (its source hands out raw blocks); a folder is quantized to Q8_0. */
export function defaultQuant(source: TensorSource): QuantChoice {
  return source.readRawRows !== undefined ? "keep" : "Q8_0";
}

/** The matrices of a model, layer by layer, then the embedding and classifier. */
export function matrixNames(c: LlamaConfig): string[] {
  const out: string[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const n = hfNames.layer(l);
    out.push(n.wq, n.wk, n.wv, n.wo, n.gate, n.up, n.down);
  }
  out.push(hfNames.embedding);
  if (!c.tiedEmbeddings) out.push(hfNames.classifier);
  return out;
}

/** llama.cpp's use_more_bits(i, n) (integer division as in C). */
function useMoreBits(i: number, n: number): boolean {
  const e = Math.floor(n / 8);
  return i < e || i >= Math.floor((7 * n) / 8) || (i - e) % 3 === 2;
}

const K_FALLBACK: Partial<Record<TensorType, TensorType>> = { Q2_K: "IQ4_NL", Q3_K: "IQ4_NL", Q4_K: "Q5_0", Q5_K: "Q5_1", Q6_K: "Q8_0" };

/** The type `want` for a matrix of `cols` columns: itself, or llama.cpp's fallback when its blocks do not fit. */
function fitting(want: TensorType, cols: number): TensorType {
  const colsP = pad32(cols);
  if (colsP % typeInfo(want).blockValues === 0) return want;
  const f = K_FALLBACK[want];
  return f !== undefined ? fitting(f, cols) : "Q8_0";
}

/** The classifier's type for a choice (see the module comment). */
function classifierType(base: TensorType): TensorType {
  return ["Q8_0", "Q6_K", "F16", "BF16", "F32"].includes(base) ? base : "Q6_K";
}

/** The type plan of `source` under `choice`. */
export function typePlan(source: TensorSource, c: LlamaConfig, choice: QuantChoice): TypePlan {
  const plan: Record<string, TensorType> = {};
  const base: TensorType = choice === "Q4_K_M" ? "Q4_K" : choice === "Q5_K_M" ? "Q5_K" : choice === "keep" ? "Q8_0" : choice;
  const cls = c.tiedEmbeddings ? hfNames.embedding : hfNames.classifier;
  for (const name of matrixNames(c)) {
    const info = source.info(name);
    const cols = info.shape[info.shape.length - 1]!;
    if (choice === "keep") {
      if (pad32(cols) % typeInfo(info.dtype).blockValues !== 0) {
        throw new LlameshError(`${info.file}: tensor ${name} is ${info.dtype} with rows of ${cols} values, not whole ${typeInfo(info.dtype).blockValues}-value blocks`);
      }
      plan[name] = info.dtype;
      continue;
    }
    let want = base;
    if (name === cls) want = classifierType(base);
    else if (choice === "Q4_K_M" || choice === "Q5_K_M") {
      const m = /^model\.layers\.(\d+)\.(self_attn\.v_proj|mlp\.down_proj)\.weight$/.exec(name);
      if (m && useMoreBits(Number(m[1]), c.nLayers)) want = "Q6_K";
    }
    plan[name] = fitting(want, cols);
  }
  return plan;
}

/** The largest block (in values) among `types`: column splits must fall on multiples of it. */
export function widestBlock(types: readonly TensorType[]): number {
  return types.reduce((m, t) => Math.max(m, typeInfo(t).blockValues), 32);
}

/** A plan from a client, checked: every matrix of the model named once with a known type. */
export function checkTypePlan(v: unknown, c: LlamaConfig): TypePlan {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new LlameshError("types: expected an object of tensor name -> type");
  const o = v as Record<string, unknown>;
  const names = matrixNames(c);
  const plan: Record<string, TensorType> = {};
  for (const n of names) {
    const t = o[n];
    if (typeof t !== "string" || !isTensorType(t)) throw new LlameshError(`types: ${n} has no known tensor type`);
    plan[n] = t;
  }
  if (Object.keys(o).length !== names.length) throw new LlameshError(`types: ${Object.keys(o).length} entries, expected ${names.length}`);
  return plan;
}
