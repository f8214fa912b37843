/**
 * The token embedding table: vocabSize rows of dimP values in the embedding tensor's type (the type
 * plan's: a GGUF's own, e.g. Q6_K, or --quant's), in host memory (one row is read per token, so it
 * needs no kernel and no place in the 4 GiB of an arena). Filled by the same pass over the
 * checkpoint as the matrices (extractSlices with EmbeddingTable.desc), so its bytes are exactly
 * those of a classifier row when the embeddings are tied.
 */
import { rowBytes, type TensorType } from "../kernels/formats.js";
import { dequantizeRow } from "../kernels/quant/index.js";
import { pad32 } from "../kernels/q8.js";
import type { LlamaConfig } from "../model/config.js";
import type { SliceDesc } from "./slice.js";
import type { TypePlan } from "./types.js";
import { hfNames } from "./weights.js";

export class EmbeddingTable {
  readonly dimP: number;
  readonly rowBytes: number;
  readonly type: TensorType;

  /** `rows`: vocabSize rows of the plan's embedding type (see desc). */
  constructor(readonly config: LlamaConfig, plan: TypePlan, readonly rows: Uint8Array) {
    this.dimP = pad32(config.dim);
    this.type = plan[hfNames.embedding]!;
    this.rowBytes = rowBytes(this.type, this.dimP);
    if (rows.length !== config.vocabSize * this.rowBytes) throw new RangeError(`embedding table of ${rows.length} bytes, expected ${config.vocabSize * this.rowBytes}`);
  }

  /** The slice that extractSlices fills: every row of the embedding tensor. */
  static desc(c: LlamaConfig, plan: TypePlan): SliceDesc {
    const dimP = pad32(c.dim);
    const type = plan[hfNames.embedding]!;
    return {
      id: "embedding", tensor: hfNames.embedding, kind: "rows", type, r0: 0, r1: c.vocabSize, c0: 0, c1: dimP,
      srcRows: c.vocabSize, srcCols: c.dim, bytes: c.vocabSize * rowBytes(type, dimP), key: "",
    };
  }

  /** out[0..dimP) = the embedding of token `id` (ggml's dequantization of its row). */
  lookup(id: number, out: Float32Array): void {
    const c = this.config;
    if (!(Number.isInteger(id) && id >= 0 && id < c.vocabSize)) throw new RangeError(`token id ${id} outside the vocabulary (0..${c.vocabSize - 1})`);
    dequantizeRow(this.type, this.rows, id * this.rowBytes, out, 0, this.dimP);
  }
}
