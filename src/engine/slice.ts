/**
 * The layer math, on a slice of the model: some KV heads, some blocks of 32 hidden units and some
 * vocabulary rows of every layer (NodeSlice). On one machine the slice is the whole model
 * (fullSlice) and ForwardPass (forward.ts) drives it; in a cluster every node holds one and the
 * nodes add their results. Given the normalised input of a layer (f32) a ModelSlice returns its
 * partial sums of the attention output projection (its heads: q/k/v rows, RoPE, its rows of the
 * KV cache, attention, its columns of o_proj) or of the feed-forward down projection (its rows of
 * gate/up, its columns of down), or its rows of the logits. Each matrix is in its own type (the
 * type plan, types.ts); a product's input is quantized to that type's activation type first,
 * as llama.cpp does (Q8_0 for the 32-value types, Q8_K for the K-quants).
 *
 * Slices are described by SliceDesc (which tensor, which rows or which column blocks); their
 * bytes are rows of the tensor's type, row-major. Row slices hold rows [r0, r1) with all (padded)
 * columns; column slices hold every row but only columns [c0, c1) (multiples of the type's block,
 * in padded column space), which are whole blocks of the single-node rows, so slicing after
 * quantizing equals quantizing the slice.
 */
import { MAX_ARENA_BYTES, type Arena } from "../kernels/arena.js";
import { actTypeOf, rowBytes, typeInfo, type ActType, type MatmulType, type TensorType } from "../kernels/formats.js";
import { ATTENTION_ENTRY_BYTES, ATTENTION_ENTRY_WORDS, type KernelBackend, type Kernels, type Ptr } from "../kernels/kernels.js";
import { pad32 } from "../kernels/q8.js";
import { attnDim, type LlamaConfig } from "../model/config.js";
import { LlameshError } from "../core/errors.js";
import type { TensorSource } from "../core/tensor-source.js";
import { hfNames, ropeTable } from "./weights.js";
import { ArenaPlan, plannedArena, plannedSize, type Allocator } from "./layout.js";
import type { TypePlan } from "./types.js";
import { firstNonFinite, firstNonFiniteRow, nonFiniteError } from "./finite.js";

/**
 * A run of consecutive tokens of one sequence within a step: the KV region (slot) it belongs to,
 * its first position, and how many tokens. A step is one or more segments (batched serving runs
 * the next token of every active sequence, and chunks of waiting prompts, in one step).
 */
export interface Segment {
  slot: number;
  pos: number;
  nTok: number;
}

/** How a ModelSlice is sized: context per slot, most tokens per step, KV regions. */
export interface SliceShape {
  /** Positions each slot's KV cache holds. */
  seqLen: number;
  /** Most tokens one step carries (all segments together). */
  batch: number;
  /** KV regions (sequences served at once); default 1. */
  slots?: number;
  /** The slices to hold (default: sliceDescs of the slice and plan). */
  descs?: SliceDesc[];
  /** Largest arena to create (tests use small values to exercise several arenas). */
  maxArenaBytes?: number;
}

/** Which part of every layer a node holds (planner.ts decides; fullSlice is the whole model). */
export interface NodeSlice {
  /** KV heads [kv0, kv1); query heads are [kv0 * g, kv1 * g) with g = nHeads / nKvHeads. */
  kv0: number;
  kv1: number;
  /** Blocks of 32 hidden units [hb0, hb1) of the padded hidden size. */
  hb0: number;
  hb1: number;
  /** Vocabulary rows [v0, v1). */
  v0: number;
  v1: number;
}

/** The whole model as one slice: what a single machine computes. */
export function fullSlice(c: LlamaConfig): NodeSlice {
  return { kv0: 0, kv1: c.nKvHeads, hb0: 0, hb1: pad32(c.hiddenDim) / 32, v0: 0, v1: c.vocabSize };
}

export interface SliceDesc {
  /** Short name, unique within a node: "L3.wq", "cls". */
  id: string;
  tensor: string;
  /**
   * "rows": rows [r0, r1) of a matrix, Q8_0; "cols": the column blocks [c0, c1) of every row, Q8_0;
   * "vec": elements [r0, r1) of a vector (a bias, a per-head norm), f32.
   */
  kind: "rows" | "cols" | "vec";
  /** Storage type of the bytes (the type plan's for a matrix, F32 for a vector). */
  type: TensorType;
  /** Source rows [r0, r1) (row slices; vector slices: elements); column slices take every row. */
  r0: number;
  r1: number;
  /** Padded columns [c0, c1) (column slices; row slices take [0, pad32(cols))). */
  c0: number;
  c1: number;
  /** Source shape. */
  srcRows: number;
  srcCols: number;
  /** Bytes of the stored slice. */
  bytes: number;
  /** Content key of a cached slice (cluster/cache.ts withKeys); "" until set. */
  key: string;
}

export interface NodeDims {
  g: number;
  qCols0: number; // first column of o_proj (= first q row)
  qRows: number; // real q rows (= o_proj columns) of this node
  qRowsP: number; // padded
  nHeads: number;
  nKv: number;
  kvRows: number;
  kvRowsP: number;
  hRows: number; // hidden rows of this node (padded space, multiple of 32)
  vRows: number;
  vRowsP: number;
  dimP: number;
}

export function nodeDims(c: LlamaConfig, s: NodeSlice): NodeDims {
  const g = c.nHeads / c.nKvHeads;
  const qCols0 = s.kv0 * g * c.headDim;
  const qEnd = s.kv1 * g * c.headDim;
  const qRows = qEnd - qCols0;
  const kvRows = (s.kv1 - s.kv0) * c.headDim;
  return {
    g,
    qCols0,
    qRows,
    qRowsP: qRows === 0 ? 0 : pad32(qEnd) - qCols0,
    nHeads: (s.kv1 - s.kv0) * g,
    nKv: s.kv1 - s.kv0,
    kvRows,
    kvRowsP: pad32(kvRows),
    hRows: (s.hb1 - s.hb0) * 32,
    vRows: s.v1 - s.v0,
    vRowsP: pad32(s.v1 - s.v0),
    dimP: pad32(c.dim),
  };
}

/** Multiply-accumulates per token of a node's matrices (real sizes, as the single-node GMAC counts). */
export function sliceMacs(c: LlamaConfig, s: NodeSlice): number {
  const d = nodeDims(c, s);
  const hReal = Math.max(0, Math.min(s.hb1 * 32, c.hiddenDim) - s.hb0 * 32);
  return c.nLayers * (d.qRows * c.dim * 2 + d.kvRows * c.dim * 2 + hReal * c.dim * 3) + d.vRows * c.dim;
}

/** The type of a matrix in the plan (a missing entry is a bug of whoever made the plan). */
function typeOf(plan: TypePlan, tensor: string): TensorType {
  const t = plan[tensor];
  if (t === undefined) throw new RangeError(`type plan: no type for ${tensor}`);
  return t;
}

/** The slices a node holds, in a fixed order (layer by layer, then the classifier). */
export function sliceDescs(c: LlamaConfig, s: NodeSlice, plan: TypePlan): SliceDesc[] {
  const d = nodeDims(c, s);
  const out: SliceDesc[] = [];
  const rows = (id: string, tensor: string, r0: number, r1: number, srcRows: number, srcCols: number): void => {
    const type = typeOf(plan, tensor);
    out.push({ id, tensor, kind: "rows", type, r0, r1, c0: 0, c1: pad32(srcCols), srcRows, srcCols, bytes: (r1 - r0) * rowBytes(type, pad32(srcCols)), key: "" });
  };
  const cols = (id: string, tensor: string, c0: number, c1: number, srcRows: number, srcCols: number): void => {
    const type = typeOf(plan, tensor);
    const block = typeInfo(type).blockValues;
    if (c0 % block !== 0) throw new RangeError(`${tensor}: a column slice starting at ${c0} is not on a ${block}-value block of ${type}`);
    out.push({ id, tensor, kind: "cols", type, r0: 0, r1: srcRows, c0, c1, srcRows, srcCols, bytes: srcRows * rowBytes(type, c1 - c0), key: "" });
  };
  const vec = (id: string, tensor: string, r0: number, r1: number, len: number): void => {
    out.push({ id, tensor, kind: "vec", type: "F32", r0, r1, c0: 0, c1: 0, srcRows: 1, srcCols: len, bytes: (r1 - r0) * 4, key: "" });
  };
  const qDim = attnDim(c);
  const kvDim = c.nKvHeads * c.headDim;
  for (let l = 0; l < c.nLayers; l++) {
    const n = hfNames.layer(l);
    if (d.qRows > 0) {
      const k0 = s.kv0 * c.headDim;
      const k1 = s.kv1 * c.headDim;
      rows(`L${l}.wq`, n.wq, d.qCols0, d.qCols0 + d.qRows, qDim, c.dim);
      rows(`L${l}.wk`, n.wk, k0, k1, kvDim, c.dim);
      rows(`L${l}.wv`, n.wv, k0, k1, kvDim, c.dim);
      cols(`L${l}.wo`, n.wo, d.qCols0, d.qCols0 + d.qRowsP, c.dim, qDim);
      if (c.attnBias) {
        vec(`L${l}.bq`, n.bq, d.qCols0, d.qCols0 + d.qRows, qDim);
        vec(`L${l}.bk`, n.bk, k0, k1, kvDim);
        vec(`L${l}.bv`, n.bv, k0, k1, kvDim);
      }
      if (c.qkNorm) {
        vec(`L${l}.qn`, n.qNorm, 0, c.headDim, c.headDim);
        vec(`L${l}.kn`, n.kNorm, 0, c.headDim, c.headDim);
      }
    }
    if (d.hRows > 0) {
      const h0 = s.hb0 * 32;
      const h1 = Math.min(s.hb1 * 32, c.hiddenDim);
      rows(`L${l}.gate`, n.gate, h0, h1, c.hiddenDim, c.dim);
      rows(`L${l}.up`, n.up, h0, h1, c.hiddenDim, c.dim);
      cols(`L${l}.down`, n.down, h0, h0 + d.hRows, c.dim, c.hiddenDim);
    }
  }
  if (d.vRows > 0) rows("cls", c.tiedEmbeddings ? hfNames.embedding : hfNames.classifier, s.v0, s.v1, c.vocabSize, c.dim);
  return out;
}

interface LayerPtrs {
  /** Index of the arena (part) holding this layer. */
  part: number;
  wq: Ptr;
  wk: Ptr;
  wv: Ptr;
  wo: Ptr;
  gate: Ptr;
  up: Ptr;
  down: Ptr;
  kCache: Ptr;
  vCache: Ptr;
  /** q/k/v biases (0 without), q/k norms (0 without). */
  bq: Ptr;
  bk: Ptr;
  bv: Ptr;
  qn: Ptr;
  kn: Ptr;
}

/** A part's activations (every part has its own: kernels address one arena at a time). */
interface NodeScratch {
  /** The layer's normalised input (f32), and it quantized for the matrices that read it. */
  xf: Ptr; xa: Ptr;
  q: Ptr; kk: Ptr; v: Ptr; att: Ptr; aq: Ptr; scores: Ptr; attTable: Ptr; hb: Ptr; hb2: Ptr; out: Ptr; logits: Ptr; cosSin: Ptr;
}

/** One arena of a node: a group of its layers (the last one also holds the classifier slice). */
interface Part {
  arena: Arena;
  k: Kernels;
  s: NodeScratch;
  /** What xa holds: the input quantized to this type, for this many tokens (null: stale). */
  xaAs: ActType | null;
  /** attentionSteps' table (s.attTable), one view made once. */
  attTable: Uint32Array;
}

const LAYER_TENSORS = ["wq", "wk", "wv", "wo", "gate", "up", "down", "bq", "bk", "bv", "qn", "kn"] as const;

/**
 * Bytes a slice takes in an arena: row slices are padded to whole groups of 32 rows (the kernels'
 * row groups), vectors to 32 values (their padding stays zero, like the rows they are added to).
 */
function allocBytes(desc: SliceDesc): number {
  if (desc.kind === "vec") return pad32(desc.r1 - desc.r0) * 4;
  return desc.kind === "cols" ? desc.bytes : pad32(desc.r1 - desc.r0) * rowBytes(desc.type, pad32(desc.srcCols));
}

/** Bytes of the widest activation row, over the activation types of `types`, for `cols` values. */
function actRowBytes(types: readonly TensorType[], cols: number): number {
  return types.reduce((m, t) => Math.max(m, rowBytes(actTypeOf(t), cols)), rowBytes("Q8_0", cols));
}

/**
 * A slice's matrices, its rows of the KV cache and scratch, in one or more arenas (a wasm32 memory
 * ends at 4 GiB; layers are packed into arenas of at most maxArenaBytes). Every arena is sized by
 * planning its layout (layout.ts): activations first, then the layers' weights and KV cache.
 */
export class ModelSlice {
  readonly d: NodeDims;
  readonly descs: SliceDesc[];
  private readonly parts: Part[] = [];
  private readonly ptrs = new Map<string, { part: number; ptr: Ptr }>();
  private readonly byId: Map<string, SliceDesc>;
  private readonly layers: LayerPtrs[] = [];
  private readonly clsPart: number;
  /** Multiply-accumulates per token of this node's matrices. */
  readonly macsPerToken: number;
  readonly weightBytes: number;
  readonly kvBytes: number;
  /** Bytes of one slot's KV region in one layer (keys or values). */
  private readonly kvSlotBytes: number;
  /** Bytes of attention scores one kernel thread uses (nHeads x seqLen f32). */
  private readonly scoresBytes: number;

  readonly seqLen: number;
  readonly batch: number;
  readonly slots: number;

  constructor(
    readonly config: LlamaConfig,
    readonly slice: NodeSlice,
    readonly plan: TypePlan,
    private readonly backend: KernelBackend,
    shape: SliceShape,
  ) {
    const c = config;
    const d = (this.d = nodeDims(c, slice));
    const seqLen = (this.seqLen = shape.seqLen);
    const batch = (this.batch = shape.batch);
    const slots = (this.slots = shape.slots ?? 1);
    const maxArenaBytes = shape.maxArenaBytes ?? MAX_ARENA_BYTES;
    this.descs = shape.descs ?? sliceDescs(c, slice, plan);
    this.byId = new Map(this.descs.map((x) => [x.id, x]));
    const f = 4;
    this.scoresBytes = Math.max(1, d.nHeads) * seqLen * f;
    this.kvSlotBytes = d.kvRows > 0 ? seqLen * d.kvRows * 2 : 0;
    const kvLayerBytes = slots * this.kvSlotBytes;
    const logitRows = Math.min(batch, slots);
    // inputs of width dimP (q, k, v, gate, up, classifier), qRowsP (o_proj) and hRows (down)
    const typesOf = (re: RegExp): TensorType[] => this.descs.filter((x) => x.kind !== "vec" && re.test(x.id)).map((x) => x.type);
    const inTypes = typesOf(/\.(wq|wk|wv|gate|up)$|^cls$/);
    const woTypes = typesOf(/\.wo$/);
    const downTypes = typesOf(/\.down$/);
    const scratchLayout = (a: Allocator): NodeScratch => ({
      xf: a.alloc(batch * d.dimP * f),
      xa: a.alloc(batch * actRowBytes(inTypes, d.dimP)),
      q: a.alloc(batch * d.qRowsP * f),
      kk: a.alloc(batch * d.kvRowsP * f),
      v: a.alloc(batch * d.kvRowsP * f),
      att: a.alloc(batch * d.qRowsP * f),
      aq: a.alloc(batch * Math.max(actRowBytes(woTypes, d.qRowsP), actRowBytes(downTypes, d.hRows))),
      // one region per kernel thread: attentionSteps runs a step's tokens at once
      scores: a.alloc(backend.threads * this.scoresBytes),
      attTable: a.alloc(batch * ATTENTION_ENTRY_BYTES),
      hb: a.alloc(batch * d.hRows * f),
      hb2: a.alloc(batch * d.hRows * f),
      out: a.alloc(batch * d.dimP * f),
      logits: a.alloc(logitRows * d.vRowsP * f),
      cosSin: a.alloc(seqLen * c.headDim * f),
    });
    const place = (a: Allocator, id: string): Ptr => {
      const x = this.byId.get(id);
      return x ? a.alloc(allocBytes(x)) : 0;
    };
    const layerLayout = (a: Allocator, l: number, part: number): LayerPtrs => {
      const w = Object.fromEntries(LAYER_TENSORS.map((m) => [m, place(a, `L${l}.${m}`)])) as Record<(typeof LAYER_TENSORS)[number], Ptr>;
      return { part, ...w, kCache: kvLayerBytes > 0 ? a.alloc(kvLayerBytes) : 0, vCache: kvLayerBytes > 0 ? a.alloc(kvLayerBytes) : 0 };
    };
    const partLayout = (a: Allocator, group: number[], part: number, withCls: boolean) => ({
      s: scratchLayout(a),
      layers: group.map((l) => layerLayout(a, l, part)),
      cls: withCls ? place(a, "cls") : 0,
    });
    // Pack consecutive layers into arenas; each layer's share is planned on its own (an upper
    // bound of what it adds to an arena: every allocation starts 64-aligned).
    const fixed = plannedSize(backend, (a) => scratchLayout(a));
    const sizeOf = (fn: (a: Allocator) => unknown): number => {
      const p = new ArenaPlan();
      fn(p);
      return p.arenaSize;
    };
    const groups: number[][] = [[]];
    let used = fixed;
    for (let l = 0; l < c.nLayers; l++) {
      const need = sizeOf((a) => layerLayout(a, l, 0));
      if (fixed + need > maxArenaBytes) throw new LlameshError(`one layer of this node's slice needs ${((fixed + need) / 1e9).toFixed(2)} GB, over the arena limit: spread the model over more nodes`);
      if (used + need > maxArenaBytes && groups[groups.length - 1]!.length > 0) {
        groups.push([]);
        used = fixed;
      }
      groups[groups.length - 1]!.push(l);
      used += need;
    }
    if (used + sizeOf((a) => place(a, "cls")) > maxArenaBytes) groups.push([]);
    this.clsPart = groups.length - 1;
    let weights = 0;
    groups.forEach((g, pi) => {
      const { arena, k, value } = plannedArena(backend, `slice#${pi}`, `layers ${g[0] ?? "-"}..${g[g.length - 1] ?? "-"} of this node's slice`, (a) => partLayout(a, g, pi, pi === this.clsPart), Infinity);
      ropeTable(arena, value.s.cosSin, c, seqLen);
      g.forEach((l, i) => {
        const L = value.layers[i]!;
        this.layers[l] = L;
        for (const m of LAYER_TENSORS) this.record(`L${l}.${m}`, pi, L[m]);
      });
      if (pi === this.clsPart) this.record("cls", pi, value.cls);
      this.parts.push({ arena, k, s: value.s, xaAs: null, attTable: arena.u32(value.s.attTable, batch * ATTENTION_ENTRY_WORDS) });
    });
    for (const x of this.descs) weights += this.ptrs.has(x.id) ? allocBytes(x) : 0;
    this.weightBytes = weights;
    this.kvBytes = c.nLayers * 2 * kvLayerBytes;
    this.macsPerToken = sliceMacs(c, slice);
  }

  /** The matrices the kernels rearranged into a layout of their own (seal), by slice id. */
  private readonly layouts = new Map<string, MatmulType>();
  private sealed = false;

  /**
   * Every slice is filled: the kernels may now rearrange the matrices into the layouts they
   * multiply fastest (Kernels.repackWeights: the relaxed build makes Q4_0 rows interleaved by four,
   * the same results), in place, once. view() then shows the rearranged bytes, so whatever caches
   * or sends a slice takes its bytes before this (the cache and the wire do: they keep the file's
   * layout). The classifier is left as it is: with tied embeddings its rows are the embedding
   * table's (forward.ts), looked up row by row.
   */
  seal(): void {
    if (this.sealed) return;
    this.sealed = true;
    for (const x of this.descs) {
      const at = this.ptrs.get(x.id);
      if (x.kind === "vec" || x.id === "cls" || at === undefined) continue;
      // the rows a matmul of this slice covers, all inside its allocation (row slices are padded
      // to 32 rows; a column slice holds srcRows rows, used as they are when a multiple of 32)
      const rows = x.kind === "rows" ? pad32(x.r1 - x.r0) : x.srcRows;
      if (x.kind === "cols" && rows !== pad32(rows)) continue;
      const cols = x.kind === "rows" ? pad32(x.srcCols) : x.c1 - x.c0;
      const layout = this.parts[at.part]!.k.repackWeights(x.type, at.ptr, rows, cols);
      if (layout !== x.type) this.layouts.set(x.id, layout);
    }
  }

  /** The layout a slice's matmuls read: its type, or what seal() rearranged it into. */
  private layoutOf(id: string): MatmulType {
    return this.layouts.get(id) ?? this.byId.get(id)!.type;
  }

  /** The slices seal() rearranged and into what (for the log line). */
  get repacked(): ReadonlyMap<string, MatmulType> {
    return this.layouts;
  }

  private record(id: string, part: number, ptr: Ptr): void {
    if (this.byId.has(id)) this.ptrs.set(id, { part, ptr });
  }

  /** The arenas of this node. */
  get arenas(): Arena[] {
    return this.parts.map((p) => p.arena);
  }

  /** Done with this slice: the backend lets go of its arenas (their memory can be collected). */
  dispose(): void {
    for (const p of this.parts) this.backend.release(p.arena);
  }

  /** Where the stored bytes of a slice go (fill it from a cache file, the network or a checkpoint). */
  view(id: string): Uint8Array {
    const desc = this.byId.get(id);
    const at = this.ptrs.get(id);
    if (!desc || at === undefined) throw new RangeError(`no slice ${id} on this node`);
    return this.parts[at.part]!.arena.u8(at.ptr, desc.bytes);
  }

  get hasAttention(): boolean {
    return this.d.qRows > 0;
  }
  get hasFfn(): boolean {
    return this.d.hRows > 0;
  }
  get hasLogits(): boolean {
    return this.d.vRows > 0;
  }

  /** The layer's normalised input (nTok x dimP f32) into the part's arena; quantized lazily per type. */
  private loadInput(p: Part, xn: Float32Array, nTok: number): void {
    const need = nTok * this.d.dimP;
    if (nTok < 1 || nTok > this.batch || xn.length !== need) {
      throw new RangeError(`input of ${xn.length} values for ${nTok} tokens (expected ${need}, at most ${this.batch} tokens)`);
    }
    p.arena.f32(p.s.xf, need).set(xn);
    p.xaAs = null;
  }

  /** out = W x for the loaded input, W of `type` (rows x dimP); the input quantized to W's activation type once. */
  private project(p: Part, id: string, out: Ptr, w: Ptr, rows: number, nTok: number): void {
    const type = this.layoutOf(id);
    const act = actTypeOf(type);
    if (p.xaAs !== act) {
      p.k.quantizeAct(act, p.s.xa, p.s.xf, nTok * this.d.dimP);
      p.xaAs = act;
    }
    p.k.matmul(type, out, w, p.s.xa, rows, this.d.dimP, nTok);
  }

  /** out = W a for nTok rows of `cols` activations at `src` (the attention output or the SiLU product). */
  private projectFrom(p: Part, id: string, out: Ptr, w: Ptr, rows: number, src: Ptr, cols: number, nTok: number): void {
    const type = this.layoutOf(id);
    p.k.quantizeAct(actTypeOf(type), p.s.aq, src, nTok * cols);
    p.k.matmul(type, out, w, p.s.aq, rows, cols, nTok);
  }

  /**
   * Attention of this node's heads for the step's tokens (segments, nTok in all): q/k/v rows,
   * RoPE, each token's keys and values into its slot's KV rows, attention over its own sequence,
   * then its o_proj columns. Returns nTok x dimP partial sums (a view, valid until the next call).
   */
  attention(layer: number, segs: readonly Segment[], xn: Float32Array): Float32Array {
    const c = this.config;
    const d = this.d;
    const L = this.layers[layer];
    if (!L || !this.hasAttention) throw new RangeError(`attention: layer ${layer} not on this node`);
    const nTok = this.checkSegments(segs);
    const p = this.parts[L.part]!;
    const { k, s } = p;
    this.loadInput(p, xn, nTok);
    const f = 4;
    this.project(p, `L${layer}.wq`, s.q, L.wq, d.qRowsP, nTok);
    this.project(p, `L${layer}.wk`, s.kk, L.wk, d.kvRowsP, nTok);
    this.project(p, `L${layer}.wv`, s.v, L.wv, d.kvRowsP, nTok);
    if (c.attnBias) {
      addRows(p.arena, s.q, L.bq, d.qRows, d.qRowsP, nTok);
      addRows(p.arena, s.kk, L.bk, d.kvRows, d.kvRowsP, nTok);
      addRows(p.arena, s.v, L.bv, d.kvRows, d.kvRowsP, nTok);
    }
    const window = c.slidingWindow;
    let t = 0;
    for (const seg of segs) {
      const kBase = L.kCache + seg.slot * this.kvSlotBytes;
      const vBase = L.vCache + seg.slot * this.kvSlotBytes;
      for (let j = 0; j < seg.nTok; j++, t++) {
        const ps = seg.pos + j;
        const cs = s.cosSin + ps * c.headDim * f;
        const qt = s.q + t * d.qRowsP * f;
        const kt = s.kk + t * d.kvRowsP * f;
        if (c.qkNorm) {
          // Qwen3: each head's q and k normalised (one weight vector for all heads) before RoPE
          for (let h = 0; h < d.nHeads; h++) k.rmsnorm(qt + h * c.headDim * f, qt + h * c.headDim * f, L.qn, c.headDim, c.normEps);
          for (let h = 0; h < d.nKv; h++) k.rmsnorm(kt + h * c.headDim * f, kt + h * c.headDim * f, L.kn, c.headDim, c.normEps);
        }
        k.rope(qt, d.nHeads, c.headDim, cs);
        k.rope(kt, d.nKv, c.headDim, cs);
        k.storeBf16(kBase + ps * d.kvRows * 2, kt, d.kvRows);
        k.storeBf16(vBase + ps * d.kvRows * 2, s.v + t * d.kvRowsP * f, d.kvRows);
      }
    }
    // every token's attention over its own sequence, as one job (attentionSteps' table)
    const table = p.attTable;
    t = 0;
    for (const seg of segs) {
      for (let j = 0; j < seg.nTok; j++, t++) {
        // positions [first, pos]: all of the sequence so far, or the last `window` (Mistral's sliding window)
        const pos = seg.pos + j;
        const first = window !== null ? Math.max(0, pos + 1 - window) : 0;
        const kvOff = seg.slot * this.kvSlotBytes + first * d.kvRows * 2;
        const e = t * ATTENTION_ENTRY_WORDS;
        table[e] = s.att + t * d.qRowsP * f;
        table[e + 1] = s.q + t * d.qRowsP * f;
        table[e + 2] = L.kCache + kvOff;
        table[e + 3] = L.vCache + kvOff;
        table[e + 4] = pos + 1 - first;
      }
    }
    k.attentionSteps(s.attTable, nTok, s.scores, this.scoresBytes, d.nHeads, d.nKv, c.headDim);
    this.projectFrom(p, `L${layer}.wo`, s.out, L.wo, d.dimP, s.att, d.qRowsP, nTok);
    return p.arena.f32(s.out, nTok * d.dimP);
  }

  /** Tokens in the step; every segment inside its slot's context, and within the batch. */
  private checkSegments(segs: readonly Segment[]): number {
    let n = 0;
    for (const g of segs) {
      if (!(Number.isInteger(g.slot) && g.slot >= 0 && g.slot < this.slots)) throw new RangeError(`slot ${g.slot} outside 0..${this.slots - 1}`);
      if (!(Number.isInteger(g.nTok) && g.nTok >= 1)) throw new RangeError(`segment of ${g.nTok} tokens`);
      if (!(Number.isInteger(g.pos) && g.pos >= 0 && g.pos + g.nTok <= this.seqLen)) throw new RangeError(`attention: positions up to ${g.pos + g.nTok} exceed the context ${this.seqLen}`);
      n += g.nTok;
    }
    if (n < 1 || n > this.batch) throw new RangeError(`step of ${n} tokens, expected 1..${this.batch}`);
    return n;
  }

  /** Feed-forward of this node's hidden blocks: nTok x dimP partial sums of down(silu(gate x) * up x). */
  ffn(layer: number, nTok: number, xn: Float32Array): Float32Array {
    const d = this.d;
    const L = this.layers[layer];
    if (!L || !this.hasFfn) throw new RangeError(`ffn: layer ${layer} not on this node`);
    const p = this.parts[L.part]!;
    const { k, s } = p;
    this.loadInput(p, xn, nTok);
    this.project(p, `L${layer}.gate`, s.hb, L.gate, d.hRows, nTok);
    this.project(p, `L${layer}.up`, s.hb2, L.up, d.hRows, nTok);
    k.siluMul(s.hb, s.hb2, nTok * d.hRows);
    this.projectFrom(p, `L${layer}.down`, s.out, L.down, d.dimP, s.hb, d.hRows, nTok);
    return p.arena.f32(s.out, nTok * d.dimP);
  }

  /**
   * This node's rows [v0, v1) of the logits for `n` normalised tokens (one per segment: n x vRowsP
   * values, row t at t * vRowsP; a view, valid until the next call).
   */
  logits(xn: Float32Array, n = 1): Float32Array {
    if (!this.hasLogits) throw new RangeError("logits: no vocabulary rows on this node");
    if (!(n >= 1 && n <= Math.min(this.batch, this.slots))) throw new RangeError(`logits of ${n} tokens, expected 1..${Math.min(this.batch, this.slots)}`);
    const p = this.parts[this.clsPart]!;
    this.loadInput(p, xn, n);
    this.project(p, "cls", p.s.logits, this.ptrs.get("cls")!.ptr, this.d.vRowsP, n);
    return p.arena.f32(p.s.logits, n === 1 ? this.d.vRows : n * this.d.vRowsP);
  }

  /** Padded width of a row of this node's logits (logits() with n > 1 lays rows out at this stride). */
  get logitsStride(): number {
    return this.d.vRowsP;
  }
}

/** x[t][i] += bias[i] for i < n of nTok rows of stride `stride` floats (a projection's bias). */
function addRows(a: Arena, x: Ptr, bias: Ptr, n: number, stride: number, nTok: number): void {
  const xv = a.f32(x, nTok * stride);
  const b = a.f32(bias, n);
  for (let t = 0; t < nTok; t++) for (let i = 0; i < n; i++) xv[t * stride + i] = xv[t * stride + i]! + b[i]!;
}

/**
 * Receives the bytes of slices as they are produced. `node` indexes the `wanted` list. `data` is a
 * view of a staging buffer, valid until the sink returns (or its promise settles): copy it.
 */
export type SliceSink = (node: number, desc: SliceDesc, offset: number, data: Uint8Array) => void | Promise<void>;

/**
 * One pass over the checkpoint producing the slices of several nodes: each tensor is read a few
 * rows at a time and, unless the file already holds it in the slice's type (a GGUF's own blocks,
 * copied as they are), quantized once to that type with the given kernels (the same quantizer as
 * the single-node loader); then every wanted slice gets its rows or blocks. Memory: one chunk.
 */
export async function extractSlices(
  source: TensorSource,
  backend: KernelBackend,
  wanted: SliceDesc[][],
  sink: SliceSink,
  onProgress?: (done: number, total: number) => void,
): Promise<void> {
  const byTensor = new Map<string, { node: number; desc: SliceDesc }[]>();
  const vectors: { node: number; desc: SliceDesc }[] = [];
  for (let n = 0; n < wanted.length; n++) {
    for (const desc of wanted[n]!) {
      if (desc.kind === "vec") {
        vectors.push({ node: n, desc });
        continue;
      }
      const list = byTensor.get(desc.tensor) ?? [];
      if (list.length > 0 && list[0]!.desc.type !== desc.type) throw new RangeError(`${desc.tensor}: slices of two types (${list[0]!.desc.type}, ${desc.type})`);
      list.push({ node: n, desc });
      byTensor.set(desc.tensor, list);
    }
  }
  // vectors (biases, per-head norms): small, f32 as they are
  for (const { node, desc } of vectors) {
    const all = new Float32Array(desc.srcCols);
    source.readRows(desc.tensor, 0, 1, all);
    if (firstNonFinite(all) >= 0) throw nonFiniteError(source.info(desc.tensor).file, desc.tensor, 0);
    const part = all.slice(desc.r0, desc.r1);
    await sink(node, desc, 0, new Uint8Array(part.buffer));
  }
  if (byTensor.size === 0) return;
  let widest = 32;
  for (const t of byTensor.keys()) widest = Math.max(widest, pad32(source.info(t).shape[1] ?? 1));
  const stagingFloats = Math.max(widest, 1 << 20); // 4 MB of f32 rows per chunk
  // the quantized chunk is at most as large as the f32 one (F32 is the widest type)
  const { arena, k, value: [fPtr, qPtr] } = plannedArena(backend, "staging", "the loader's staging buffer", (a) => [a.alloc(stagingFloats * 4), a.alloc(stagingFloats * 4)] as const);
  try {
    await extractInto(source, byTensor, arena, k, fPtr, qPtr, stagingFloats, sink, onProgress);
  } finally {
    backend.release(arena);
  }
}

async function extractInto(
  source: TensorSource,
  byTensor: Map<string, { node: number; desc: SliceDesc }[]>,
  arena: Arena,
  k: Kernels,
  fPtr: Ptr,
  qPtr: Ptr,
  stagingFloats: number,
  sink: SliceSink,
  onProgress?: (done: number, total: number) => void,
): Promise<void> {
  const total = [...byTensor.keys()].reduce((s, t) => s + source.info(t).nbytes, 0);
  let done = 0;
  let host = new Float32Array(0);
  let cut = new Uint8Array(0); // column blocks of a chunk, packed
  for (const [tensor, list] of byTensor) {
    const info = source.info(tensor);
    const type = list[0]!.desc.type;
    const { blockValues, blockBytes } = typeInfo(type);
    const rows = info.shape[0]!;
    const cols = info.shape[1] ?? 1;
    const colsP = pad32(cols);
    const rb = rowBytes(type, colsP);
    const chunk = Math.max(1, Math.floor(stagingFloats / colsP));
    // already in the slice's type and layout (a GGUF's blocks): copied, not re-quantized
    const direct = info.dtype === type && source.readRawRows !== undefined && cols === colsP;
    const needAll = list.some((x) => x.desc.kind === "cols");
    for (let r0 = 0; r0 < rows; r0 += chunk) {
      const n = Math.min(chunk, rows - r0);
      if (!needAll && !list.some((x) => x.desc.r0 < r0 + n && x.desc.r1 > r0)) continue;
      const q = arena.u8(qPtr, n * rb);
      if (direct) {
        source.readRawRows!(tensor, r0, n, q);
        const bad = firstNonFiniteRow(type, q, n, colsP);
        if (bad >= 0) throw nonFiniteError(info.file, tensor, r0 + bad);
      } else {
        const staging = arena.f32(fPtr, n * colsP);
        if (cols === colsP) {
          source.readRows(tensor, r0, n, staging);
        } else {
          if (host.length < n * cols) host = new Float32Array(n * cols);
          source.readRows(tensor, r0, n, host);
          staging.fill(0);
          for (let r = 0; r < n; r++) staging.set(host.subarray(r * cols, (r + 1) * cols), r * colsP);
        }
        const bad = firstNonFinite(staging);
        if (bad >= 0) throw nonFiniteError(info.file, tensor, r0 + Math.floor(bad / colsP));
        k.quantizeWeights(type, qPtr, fPtr, n * colsP);
      }
      for (const { node, desc } of list) {
        if (desc.kind === "rows") {
          const a = Math.max(desc.r0, r0);
          const b = Math.min(desc.r1, r0 + n);
          if (a >= b) continue;
          await sink(node, desc, (a - desc.r0) * rb, q.subarray((a - r0) * rb, (b - r0) * rb));
        } else {
          const b0 = (desc.c0 / blockValues) * blockBytes;
          const w = ((desc.c1 - desc.c0) / blockValues) * blockBytes;
          if (w === rb) {
            await sink(node, desc, r0 * w, q); // every column: the rows as they are
            continue;
          }
          if (cut.length < n * w) cut = new Uint8Array(n * w);
          for (let r = 0; r < n; r++) cut.set(q.subarray(r * rb + b0, r * rb + b0 + w), r * w);
          await sink(node, desc, r0 * w, cut.subarray(0, n * w));
        }
      }
      done += (info.nbytes * n) / rows;
      onProgress?.(done, total);
    }
  }
}
