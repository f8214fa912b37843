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
import { extractSlices, fullSlice, ModelSlice, type Segment } from "./slice.js";
import { LOCAL_REDUCE, runStep } from "./step.js";
import { defaultQuant, typePlan, type QuantChoice, type TypePlan } from "./types.js";
import { checkTensors, countLayouts, expectedTensors, memoryByType, readNorms, type MemorySummary } from "./weights.js";

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
  /** Sequences served at once, each with its own KV region of seqLen positions; default 1. */
  slots?: number;
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
    const model = new ModelSlice(config, fullSlice(config), plan, backend, { seqLen: opts.seqLen, batch, slots: opts.slots, maxArenaBytes: opts.maxArenaBytes });
    // Tied embeddings: the classifier's rows are the embedding table, in the same type.
    const embDesc = EmbeddingTable.desc(config, plan);
    const own = config.tiedEmbeddings ? null : new Uint8Array(embDesc.bytes);
    await extractSlices(source, backend, [model.descs, own ? [embDesc] : []], (i, desc, off, data) => {
      if (i === 0) model.view(desc.id).set(data, off);
      else own!.set(data, off);
    }, opts.onProgress);
    model.seal();
    const embedding = new EmbeddingTable(config, plan, own ?? model.view("cls"));
    return new ForwardPass(config, model, embedding, readNorms(source, config), backend, plan);
  }

  get seqLen(): number {
    return this.model.seqLen;
  }

  get batch(): number {
    return this.model.batch;
  }

  get slots(): number {
    return this.model.slots;
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
      repacked: countLayouts(this.model.repacked),
    };
  }

  /**
   * Run `tokens` at positions pos, pos+1, ... of slot 0 (at most `batch` of them) and return the
   * logits of the last one (a view into arena memory, valid until the next call).
   */
  async forward(tokens: readonly number[], pos: number): Promise<Float32Array> {
    return (await this.forwardBatch([{ slot: 0, pos, tokens }]))[0]!;
  }

  /**
   * One step over several sequences: each chunk's tokens at its positions in its slot (at most
   * `batch` tokens in all, one chunk per slot); the logits of each chunk's last token (views,
   * valid until the next call).
   */
  async forwardBatch(chunks: readonly SequenceChunk[]): Promise<Float32Array[]> {
    const m = this.model;
    const segments = checkChunks(chunks, m.batch, m.seqLen, m.slots);
    const x = this.stream.values(segments.reduce((n, g) => n + g.nTok, 0));
    let t = 0;
    for (const ch of chunks) for (const tok of ch.tokens) this.embedding.lookup(tok, x.subarray(t * this.dimP, ++t * this.dimP));
    const logits = (await runStep(m, this.stream, LOCAL_REDUCE, { step: ++this.steps, segments }))!;
    const stride = m.logitsStride;
    return chunks.map((_, i) => logits.subarray(i * stride, i * stride + this.config.vocabSize));
  }
}

/** The tokens of one sequence a step carries: at positions pos.. of KV region `slot`. */
export interface SequenceChunk {
  slot: number;
  pos: number;
  tokens: readonly number[];
}

/** The segments of a step's chunks, checked: tokens within the batch, positions within the context, a slot once. */
export function checkChunks(chunks: readonly SequenceChunk[], batch: number, seqLen: number, slots: number): Segment[] {
  const n = chunks.reduce((s, c) => s + c.tokens.length, 0);
  if (chunks.length === 0 || n < 1 || n > batch) throw new RangeError(`forward: ${n} tokens, expected 1..${batch}`);
  const seen = new Set<number>();
  return chunks.map((c) => {
    if (!(Number.isInteger(c.slot) && c.slot >= 0 && c.slot < slots) || seen.has(c.slot)) throw new RangeError(`forward: slot ${c.slot} twice or outside 0..${slots - 1}`);
    seen.add(c.slot);
    if (c.tokens.length < 1) throw new RangeError(`forward: slot ${c.slot} has no tokens`);
    if (c.pos + c.tokens.length > seqLen) throw new RangeError(`forward: positions up to ${c.pos + c.tokens.length} exceed the context ${seqLen}`);
    return { slot: c.slot, pos: c.pos, nTok: c.tokens.length };
  });
}
