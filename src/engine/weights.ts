/**
 * The model in memory: every matrix quantized to Q8_0, norms in f32, the BF16 KV cache and the
 * scratch activations, laid out in one or more Arenas (see kernels/arena.ts for why several).
 *
 * Every vector dimension is zero-padded to a multiple of 32 (the Q8_0 block), and every matrix to
 * [pad32(rows)] x [pad32(cols)]: the padding holds zeros, so each product stays exact and the
 * padded entries of every activation stay zero (stories260K has intermediate_size 172 -> 192).
 */
import { Arena, MAX_ARENA_BYTES } from "../kernels/arena.js";
import type { KernelBackend, Kernels, Ptr } from "../kernels/kernels.js";
import { pad32, q8RowBytes } from "../kernels/q8.js";
import type { LlamaConfig } from "../model/config.js";
import { LlameshError } from "../model/errors.js";
import type { TensorSource } from "../model/safetensors.js";

export interface Matrix {
  ptr: Ptr;
  /** Real (unpadded) shape as in the checkpoint. */
  rows: number;
  cols: number;
  /** Padded shape as stored. */
  rowsP: number;
  colsP: number;
}

export interface LayerWeights {
  /** Index of the arena holding this layer. */
  arena: number;
  attnNorm: Ptr;
  wq: Matrix;
  wk: Matrix;
  wv: Matrix;
  wo: Matrix;
  ffnNorm: Ptr;
  gate: Matrix;
  up: Matrix;
  down: Matrix;
  kCache: Ptr;
  vCache: Ptr;
}

/** Activations of one arena, each sized for `batch` tokens. */
export interface Scratch {
  x: Ptr; // residual stream [batch][dimP]
  xb: Ptr; // normalised input [batch][dimP]
  xq: Ptr; // quantized input of the current product [batch][q8 row of max(dimP, hiddenP)]
  q: Ptr; // [batch][dimP]
  k: Ptr; // [batch][kvDimP]
  v: Ptr; // [batch][kvDimP]
  attOut: Ptr; // [batch][dimP]
  scores: Ptr; // [nHeads][seqLen]
  hb: Ptr; // [batch][hiddenP]
  hb2: Ptr; // [batch][hiddenP]
  logits: Ptr; // [vocab]
  cosSin: Ptr; // [seqLen][headDim]: headDim/2 cosines then headDim/2 sines
  staging: Ptr; // f32 rows being quantized at load
  stagingFloats: number;
}

export interface Dims {
  dimP: number;
  kvDim: number;
  kvDimP: number;
  hiddenP: number;
}

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
}

export interface ModelWeights {
  config: LlamaConfig;
  dims: Dims;
  /** Context length the KV cache holds. */
  seqLen: number;
  /** Most tokens one forward call processes (prompt batches). */
  batch: number;
  arenas: Arena[];
  kernels: Kernels[];
  scratch: Scratch[];
  layers: LayerWeights[];
  /** Embedding table, classifier and final norm live in the last arena. */
  embedding: Matrix;
  classifier: Matrix;
  finalNorm: Ptr;
  memory: { byType: MemoryRow[]; runState: number; kvCache: number; model: number };
  /** Multiply-accumulates of the matrices per token (what the GMAC figure counts). */
  macsPerToken: number;
  tensorsLoaded: number;
}

export interface LoadOptions {
  seqLen: number;
  batch?: number;
  /** Called as bytes of checkpoint data are processed. */
  onProgress?: (done: number, total: number) => void;
  /** Largest arena to create (tests use small values to exercise several arenas). */
  maxArenaBytes?: number;
}

function matrixBytes(rows: number, cols: number): number {
  return pad32(rows) * q8RowBytes(pad32(cols));
}

/** Hugging Face Llama tensor names. */
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
    ffnNorm: `model.layers.${i}.post_attention_layernorm.weight`,
    gate: `model.layers.${i}.mlp.gate_proj.weight`,
    up: `model.layers.${i}.mlp.up_proj.weight`,
    down: `model.layers.${i}.mlp.down_proj.weight`,
  }),
};

/**
 * Room left in every arena for the kernel backend's own scratch (bind() allocates it): the WASM
 * kernels keep activations widened to int16 per thread.
 */
export function backendScratchBytes(threads: number): number {
  return 1024 * 1024 + threads * 512 * 1024;
}
const STAGING_FLOATS = 1 << 20;

/** Multiply-accumulates of all the matrices for one token (the GMAC figure's numerator). */
export function modelMacsPerToken(c: LlamaConfig): number {
  const kvDim = c.nKvHeads * c.headDim;
  return c.nLayers * (2 * c.dim * c.dim + 2 * kvDim * c.dim + 3 * c.dim * c.hiddenDim) + c.vocabSize * c.dim;
}

export function dimsOf(c: LlamaConfig): Dims {
  const kvDim = c.nKvHeads * c.headDim;
  return { dimP: pad32(c.dim), kvDim, kvDimP: pad32(kvDim), hiddenP: pad32(c.hiddenDim) };
}

function layerBytes(c: LlamaConfig, seqLen: number): number {
  const d = dimsOf(c);
  const mats =
    matrixBytes(c.dim, c.dim) * 2 + matrixBytes(d.kvDim, c.dim) * 2 + matrixBytes(c.hiddenDim, c.dim) * 2 + matrixBytes(c.dim, c.hiddenDim);
  return mats + 2 * d.dimP * 4 + 2 * seqLen * d.kvDim * 2 + 64 * 12;
}

function scratchBytes(c: LlamaConfig, seqLen: number, batch: number, stagingFloats: number): number {
  const d = dimsOf(c);
  const f = 4;
  return (
    batch * (d.dimP * 4 + d.kvDimP * 2 + d.hiddenP * 2) * f +
    batch * q8RowBytes(Math.max(d.dimP, d.hiddenP)) +
    c.nHeads * seqLen * f +
    pad32(c.vocabSize) * f +
    seqLen * c.headDim * f +
    stagingFloats * f +
    64 * 16
  );
}

/** Split layers into arenas under the size limit; the last one also holds embedding and classifier. */
/** Bytes every arena needs besides its layers: scratch activations, staging, backend scratch. */
export function arenaFixedBytes(c: LlamaConfig, seqLen: number, batch: number, threads: number): number {
  return scratchBytes(c, seqLen, batch, stagingFloatsFor(c)) + backendScratchBytes(threads);
}

/** Staging for quantization at load: 4 MB, or one padded row if larger; less for tiny models. */
function stagingFloatsFor(c: LlamaConfig): number {
  const d = dimsOf(c);
  const widest = Math.max(d.hiddenP, d.dimP);
  const biggest = pad32(c.vocabSize) * d.dimP;
  return Math.max(widest, Math.min(STAGING_FLOATS, biggest));
}

export function layerBytesFor(c: LlamaConfig, seqLen: number): number {
  return layerBytes(c, seqLen);
}

export function planArenas(c: LlamaConfig, seqLen: number, batch: number, maxArena: number, threads = 1): number[][] {
  const d = dimsOf(c);
  const fixed = arenaFixedBytes(c, seqLen, batch, threads);
  const head = matrixBytes(c.vocabSize, c.dim) * (c.tiedEmbeddings ? 1 : 2) + d.dimP * 4;
  const per = layerBytes(c, seqLen);
  if (fixed + per > maxArena || fixed + head > maxArena) {
    throw new LlameshError(`model too large: one layer needs ${fixed + per} bytes, over the ${maxArena}-byte arena limit`);
  }
  const groups: number[][] = [[]];
  let used = fixed;
  for (let i = 0; i < c.nLayers; i++) {
    if (used + per > maxArena) {
      groups.push([]);
      used = fixed;
    }
    groups[groups.length - 1]!.push(i);
    used += per;
  }
  if (used + head > maxArena) groups.push([]);
  return groups;
}

/** cos/sin table of RoPE (shared with the cluster nodes, which must compute it identically). */
export function ropeTable(arena: Arena, ptr: Ptr, c: LlamaConfig, seqLen: number): void {
  const half = c.headDim / 2;
  const t = arena.f32(ptr, seqLen * c.headDim);
  const freqs = Array.from({ length: half }, (_, i) => 1 / Math.pow(c.ropeTheta, (2 * i) / c.headDim));
  for (let p = 0; p < seqLen; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * freqs[i]!;
      t[p * c.headDim + i] = Math.cos(angle);
      t[p * c.headDim + half + i] = Math.sin(angle);
    }
  }
}

/** Build the in-memory model from a checkpoint: plan arenas, then read and quantize tensor by tensor. */
export function loadWeights(source: TensorSource, c: LlamaConfig, backend: KernelBackend, opts: LoadOptions): ModelWeights {
  const seqLen = opts.seqLen;
  const batch = Math.max(1, Math.min(opts.batch ?? 32, seqLen));
  const d = dimsOf(c);
  const stagingFloats = stagingFloatsFor(c);
  const groups = planArenas(c, seqLen, batch, opts.maxArenaBytes ?? MAX_ARENA_BYTES, backend.threads);
  const fixed = arenaFixedBytes(c, seqLen, batch, backend.threads);
  const head = matrixBytes(c.vocabSize, c.dim) * (c.tiedEmbeddings ? 1 : 2) + d.dimP * 4 + 1024;

  // Check every tensor exists with the right shape before allocating gigabytes.
  const expect = (name: string, shape: number[]): void => {
    if (!source.has(name)) throw new LlameshError(`${source.files.join(", ")}: missing tensor ${name} (expected shape [${shape.join(", ")}])`);
    const got = source.info(name).shape;
    if (got.length !== shape.length || got.some((v, i) => v !== shape[i])) {
      throw new LlameshError(`${source.info(name).file}: tensor ${name} has shape [${got.join(", ")}], expected [${shape.join(", ")}]`);
    }
  };
  expect(hfNames.embedding, [c.vocabSize, c.dim]);
  expect(hfNames.finalNorm, [c.dim]);
  if (!c.tiedEmbeddings) expect(hfNames.classifier, [c.vocabSize, c.dim]);
  for (let i = 0; i < c.nLayers; i++) {
    const n = hfNames.layer(i);
    expect(n.attnNorm, [c.dim]);
    expect(n.wq, [c.dim, c.dim]);
    expect(n.wk, [d.kvDim, c.dim]);
    expect(n.wv, [d.kvDim, c.dim]);
    expect(n.wo, [c.dim, c.dim]);
    expect(n.ffnNorm, [c.dim]);
    expect(n.gate, [c.hiddenDim, c.dim]);
    expect(n.up, [c.hiddenDim, c.dim]);
    expect(n.down, [c.dim, c.hiddenDim]);
  }

  const arenas: Arena[] = [];
  const kernels: Kernels[] = [];
  const scratch: Scratch[] = [];
  groups.forEach((g, a) => {
    const size = fixed + g.length * layerBytes(c, seqLen) + (a === groups.length - 1 ? head : 0);
    const arena = new Arena(size, `#${a}`);
    arenas.push(arena);
    kernels.push(backend.bind(arena));
    const f = 4;
    const s: Scratch = {
      x: arena.alloc(batch * d.dimP * f),
      xb: arena.alloc(batch * d.dimP * f),
      xq: arena.alloc(batch * q8RowBytes(Math.max(d.dimP, d.hiddenP))),
      q: arena.alloc(batch * d.dimP * f),
      k: arena.alloc(batch * d.kvDimP * f),
      v: arena.alloc(batch * d.kvDimP * f),
      attOut: arena.alloc(batch * d.dimP * f),
      scores: arena.alloc(c.nHeads * seqLen * f),
      hb: arena.alloc(batch * d.hiddenP * f),
      hb2: arena.alloc(batch * d.hiddenP * f),
      logits: arena.alloc(pad32(c.vocabSize) * f),
      cosSin: arena.alloc(seqLen * c.headDim * f),
      staging: arena.alloc(stagingFloats * f),
      stagingFloats,
    };
    ropeTable(arena, s.cosSin, c, seqLen);
    scratch.push(s);
  });

  // Progress counts bytes of checkpoint data.
  const names: string[] = [hfNames.embedding, hfNames.finalNorm];
  if (!c.tiedEmbeddings) names.push(hfNames.classifier);
  for (let i = 0; i < c.nLayers; i++) names.push(...Object.values(hfNames.layer(i)));
  const total = names.reduce((s, n) => s + source.info(n).nbytes, 0);
  let done = 0;
  const progress = (n: string): void => {
    done += source.info(n).nbytes;
    opts.onProgress?.(done, total);
  };

  let hostRows = new Float32Array(0);
  const loadMatrix = (a: number, name: string, rows: number, cols: number): Matrix => {
    const arena = arenas[a]!;
    const k = kernels[a]!;
    const s = scratch[a]!;
    const rowsP = pad32(rows);
    const colsP = pad32(cols);
    const rowBytes = q8RowBytes(colsP);
    const ptr = arena.alloc(rowsP * rowBytes);
    const chunk = Math.max(1, Math.floor(s.stagingFloats / colsP));
    if (source.info(name).dtype === "Q8_0" && source.readQ8Rows && cols === colsP) {
      // already in our block layout (GGUF): copy, no re-quantization
      for (let r0 = 0; r0 < rows; r0 += chunk) {
        const n = Math.min(chunk, rows - r0);
        source.readQ8Rows(name, r0, n, arena.u8(ptr + r0 * rowBytes, n * rowBytes));
      }
      progress(name);
      return { ptr, rows, cols, rowsP, colsP };
    }
    const staging = arena.f32(s.staging, s.stagingFloats);
    for (let r0 = 0; r0 < rows; r0 += chunk) {
      const n = Math.min(chunk, rows - r0);
      if (cols === colsP) {
        source.readRows(name, r0, n, staging.subarray(0, n * cols));
      } else {
        if (hostRows.length < n * cols) hostRows = new Float32Array(n * cols);
        source.readRows(name, r0, n, hostRows);
        staging.fill(0, 0, n * colsP);
        for (let r = 0; r < n; r++) staging.set(hostRows.subarray(r * cols, (r + 1) * cols), r * colsP);
      }
      k.quantizeQ8(ptr + r0 * rowBytes, s.staging, n * colsP);
    }
    // padding rows stay zero: the arena starts zeroed and q8 zero bytes are the value 0 with scale 0
    progress(name);
    return { ptr, rows, cols, rowsP, colsP };
  };
  const loadVector = (a: number, name: string, n: number): Ptr => {
    const arena = arenas[a]!;
    const ptr = arena.alloc(pad32(n) * 4);
    source.readRows(name, 0, 1, arena.f32(ptr, n));
    progress(name);
    return ptr;
  };

  const layers: LayerWeights[] = [];
  groups.forEach((g, a) => {
    for (const i of g) {
      const n = hfNames.layer(i);
      const arena = arenas[a]!;
      layers[i] = {
        arena: a,
        attnNorm: loadVector(a, n.attnNorm, c.dim),
        wq: loadMatrix(a, n.wq, c.dim, c.dim),
        wk: loadMatrix(a, n.wk, d.kvDim, c.dim),
        wv: loadMatrix(a, n.wv, d.kvDim, c.dim),
        wo: loadMatrix(a, n.wo, c.dim, c.dim),
        ffnNorm: loadVector(a, n.ffnNorm, c.dim),
        gate: loadMatrix(a, n.gate, c.hiddenDim, c.dim),
        up: loadMatrix(a, n.up, c.hiddenDim, c.dim),
        down: loadMatrix(a, n.down, c.dim, c.hiddenDim),
        kCache: arena.alloc(seqLen * d.kvDim * 2),
        vCache: arena.alloc(seqLen * d.kvDim * 2),
      };
    }
  });
  const last = arenas.length - 1;
  const embedding = loadMatrix(last, hfNames.embedding, c.vocabSize, c.dim);
  const classifier = c.tiedEmbeddings ? embedding : loadMatrix(last, hfNames.classifier, c.vocabSize, c.dim);
  const finalNorm = loadVector(last, hfNames.finalNorm, c.dim);

  const q8 = (rows: number, cols: number): number => matrixBytes(rows, cols);
  const L = c.nLayers;
  const attnParams = L * (2 * c.dim * c.dim + 2 * d.kvDim * c.dim);
  const ffnParams = L * 3 * c.dim * c.hiddenDim;
  const byType: MemoryRow[] = [
    { type: "embedding", quant: "Q8_0", bytes: q8(c.vocabSize, c.dim), params: c.vocabSize * c.dim },
    { type: "attention (q,k,v,o)", quant: "Q8_0", bytes: L * (2 * q8(c.dim, c.dim) + 2 * q8(d.kvDim, c.dim)), params: attnParams },
    { type: "feed-forward (gate,up,down)", quant: "Q8_0", bytes: L * (2 * q8(c.hiddenDim, c.dim) + q8(c.dim, c.hiddenDim)), params: ffnParams },
    { type: "norms", quant: "F32", bytes: (2 * L + 1) * d.dimP * 4, params: (2 * L + 1) * c.dim },
  ];
  if (!c.tiedEmbeddings) byType.push({ type: "classifier", quant: "Q8_0", bytes: q8(c.vocabSize, c.dim), params: c.vocabSize * c.dim });
  const model = byType.reduce((s, r) => s + r.bytes, 0);
  const kvCache = L * 2 * seqLen * d.kvDim * 2;
  const totalArena = arenas.reduce((s, a) => s + a.used, 0);
  return {
    config: c,
    dims: d,
    seqLen,
    batch,
    arenas,
    kernels,
    scratch,
    layers,
    embedding,
    classifier,
    finalNorm,
    memory: { byType, runState: Math.max(0, totalArena - model - kvCache), kvCache, model },
    macsPerToken: modelMacsPerToken(c),
    tensorsLoaded: names.length,
  };
}
