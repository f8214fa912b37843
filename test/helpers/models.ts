/** Shared by tests: temporary folders, tiny synthetic checkpoints, and the shared real models. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { writeSyntheticModel, BYTE_TOKENIZER_VOCAB, type SyntheticShape } from "../../src/synthetic/checkpoint.js";
import type { SafetensorsDtype } from "../../src/model/safetensors.js";

export const SHARED_MODELS = path.resolve(process.cwd(), "../shared/models");
export const STORIES = path.join(SHARED_MODELS, "stories260K");
/** stories260K embedded in a 256-aligned shape (every row whole K-quant blocks). */
export const STORIES_256 = path.join(SHARED_MODELS, "stories260K-256");
/** stories260K-256 quantized by llama.cpp's llama-quantize: Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0. */
export const GGUF_LLAMACPP = path.join(SHARED_MODELS, "gguf-llamacpp");
export const LLAMA2_TOKENIZER = path.join(SHARED_MODELS, "llama2-tokenizer");

/** A reason to skip, or false when the folder is there. */
export function skipUnless(dir: string): string | false {
  return fs.existsSync(dir) ? false : `${dir} is absent (the shared test models are not on this machine)`;
}

const made: string[] = [];
process.on("exit", () => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

export function tempDir(prefix = "llamesh-test-"): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(d);
  return d;
}

export function tinyShape(over: Partial<SyntheticShape> = {}): SyntheticShape {
  return { dim: 64, hiddenDim: 100, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: BYTE_TOKENIZER_VOCAB, seqLen: 64, tied: false, ...over };
}

export function tinyModel(shape: SyntheticShape, dtype: SafetensorsDtype = "F32", shards = 1, seed = 7): string {
  const dir = path.join(tempDir(), "model");
  writeSyntheticModel(dir, shape, { seed, dtype, shards, weightStd: 0.08 });
  return dir;
}
