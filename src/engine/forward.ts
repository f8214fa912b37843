/**
 * The Llama forward pass on one machine: the embedding lookup, then the layer loop of step.ts on
 * the whole model as one ModelSlice (slice.ts) with one ResidualStream (residual.ts), where each
 * sync's sum is this machine's own result (LOCAL_REDUCE). A cluster runs the same loop on each
 * node's part (cluster/member.ts). Every loop is a kernel call.
 *
 * A call processes a batch of consecutive tokens (the prompt) at once, so each weight matrix is
 * streamed from memory once per batch rather than once per token.
 */
import type { KernelBackend } from "../kernels/kernels.js";
import type { LlamaConfig } from "../model/config.js";
import type { TensorSource } from "../core/tensor-source.js";
import { EmbeddingTable } from "./embedding.js";
import { ResidualStream } from "./residual.js";
import { extractSlices, fullSlice, ModelSlice } from "./slice.js";
import { LOCAL_REDUCE, runStep } from "./step.js";
import { defaultQuant, typePlan, type QuantChoice, type TypePlan } from "./types.js";
import { checkTensors, expectedTensors, memoryByType, readNorms, type MemorySummary } from "./weights.js";

export interface LoadOptions {
  /** Context length the KV cache holds. */
  seqLen: number;
  /**
   * The type of every matrix (types.ts): a GGUF's own by default ("keep"), Q8_0 for a folder (the
   * seed's), or what --quant says.
   */
  quant?: QuantChoice;
  /** Most tokens one forward call processes (prompt batches); default 32. */
  batch?: number;
  /** Called as bytes of checkpoint data are processed. */
  onProgress?: (done: number, total: number) => void;
  /** Largest arena to create (tests use small values to exercise several arenas). */
  maxArenaBytes?: number;
}

export class ForwardPass {
  private readonly stream: ResidualStream;
  private readonly dimP: number;
  private steps = 0;

  private constructor(
    readonly config: LlamaConfig,
    /** Every matrix of the model and the KV cache. */
    readonly model: ModelSlice,
    readonly embedding: EmbeddingTable,
    norms: Float32Array,
    backend: KernelBackend,
    readonly plan: TypePlan,
  ) {
    this.dimP = embedding.dimP;
    this.stream = new ResidualStream(config, norms, model.batch, backend);
  }

  /** Check the checkpoint's tensors, then read and quantize them in one pass. */
  static async load(source: TensorSource, config: LlamaConfig, backend: KernelBackend, opts: LoadOptions): Promise<ForwardPass> {
    checkTensors(source, config);
    const plan = typePlan(source, config, opts.quant ?? defaultQuant(source));
    const batch = Math.max(1, Math.min(opts.batch ?? 32, opts.seqLen));
    const model = new ModelSlice(config, fullSlice(config), plan, opts.seqLen, batch, backend, undefined, opts.maxArenaBytes);
    // Tied embeddings: the classifier's rows are the embedding table, in the same type.
    const embDesc = EmbeddingTable.desc(config, plan);
    const own = config.tiedEmbeddings ? null : new Uint8Array(embDesc.bytes);
    await extractSlices(source, backend, [model.descs, own ? [embDesc] : []], (i, desc, off, data) => {
      if (i === 0) model.view(desc.id).set(data, off);
      else own!.set(data, off);
    }, opts.onProgress);
    const embedding = new EmbeddingTable(config, plan, own ?? model.view("cls"));
    return new ForwardPass(config, model, embedding, readNorms(source, config), backend, plan);
  }

  get seqLen(): number {
    return this.model.seqLen;
  }

  get batch(): number {
    return this.model.batch;
  }

  /** What the report shows of this model's memory. */
  get memory(): MemorySummary {
    const byType = memoryByType(this.config, this.plan);
    const model = byType.reduce((s, r) => s + r.bytes, 0);
    const arenas = [...this.model.arenas, this.stream.arena];
    const used = arenas.reduce((s, a) => s + a.used, 0);
    const inArenas = model - (this.config.tiedEmbeddings ? 0 : this.embedding.rows.length);
    return {
      byType,
      runState: Math.max(0, used - inArenas - this.model.kvBytes),
      kvCache: this.model.kvBytes,
      model,
      arenas: arenas.length,
      tensorsLoaded: expectedTensors(this.config).length,
    };
  }

  /**
   * Run `tokens` at positions pos, pos+1, ... (at most `batch` of them) and return the logits of
   * the last one (a view into arena memory, valid until the next call).
   */
  async forward(tokens: readonly number[], pos: number): Promise<Float32Array> {
    const m = this.model;
    const n = tokens.length;
    if (n < 1 || n > m.batch) throw new RangeError(`forward: ${n} tokens, expected 1..${m.batch}`);
    if (pos + n > m.seqLen) throw new RangeError(`forward: positions up to ${pos + n} exceed the context ${m.seqLen}`);
    const x = this.stream.values(n);
    for (let t = 0; t < n; t++) this.embedding.lookup(tokens[t]!, x.subarray(t * this.dimP, (t + 1) * this.dimP));
    return (await runStep(m, this.stream, LOCAL_REDUCE, { step: ++this.steps, pos, nTok: n }))!;
  }
}
