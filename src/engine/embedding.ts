/**
 * The token embedding table: vocabSize Q8_0 rows of dimP values, in host memory (one row is read
 * per token, so it needs no kernel and no place in the 4 GiB of an arena). Filled by the same pass
 * over the checkpoint as the matrices (extractSlices with EmbeddingTable.desc), so its bytes are
 * exactly those of a quantized classifier row when the embeddings are tied.
 */
import { pad32, q8RowBytes, QK8_0, Q8_0_BLOCK_BYTES } from "../kernels/q8.js";
import { F16_TO_F32 } from "../core/numbers.js";
import type { LlamaConfig } from "../model/config.js";
import type { SliceDesc } from "./slice.js";
import { hfNames } from "./weights.js";

export class EmbeddingTable {
  readonly dimP: number;
  readonly rowBytes: number;

  /** `rows`: vocabSize x q8RowBytes(dimP) bytes (see desc). */
  constructor(readonly config: LlamaConfig, readonly rows: Uint8Array) {
    this.dimP = pad32(config.dim);
    this.rowBytes = q8RowBytes(this.dimP);
    if (rows.length !== config.vocabSize * this.rowBytes) throw new RangeError(`embedding table of ${rows.length} bytes, expected ${config.vocabSize * this.rowBytes}`);
  }

  /** The slice that extractSlices fills: every row of the embedding tensor. */
  static desc(c: LlamaConfig): SliceDesc {
    const dimP = pad32(c.dim);
    return {
      id: "embedding", tensor: hfNames.embedding, kind: "rows", r0: 0, r1: c.vocabSize, c0: 0, c1: dimP,
      srcRows: c.vocabSize, srcCols: c.dim, bytes: c.vocabSize * q8RowBytes(dimP), key: "",
    };
  }

  /** out[0..dimP) = the embedding of token `id` (the same values as the kernels' dequantQ8). */
  lookup(id: number, out: Float32Array): void {
    const c = this.config;
    if (!(Number.isInteger(id) && id >= 0 && id < c.vocabSize)) throw new RangeError(`token id ${id} outside the vocabulary (0..${c.vocabSize - 1})`);
    const base = id * this.rowBytes;
    const r = this.rows;
    for (let b = 0; b < this.dimP / QK8_0; b++) {
      const o = base + b * Q8_0_BLOCK_BYTES;
      const d = F16_TO_F32[r[o]! | (r[o + 1]! << 8)]!;
      for (let i = 0; i < QK8_0; i++) {
        const q = r[o + 2 + i]!;
        out[b * QK8_0 + i] = d * (q > 127 ? q - 256 : q);
      }
    }
  }
}
