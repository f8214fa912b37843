/**
 * The tokenizer of a model path, whichever kind it is: a Hugging Face folder (tokenizer.json or
 * tokenizer.model plus the config files) or a .gguf file (its tokenizer.ggml.* metadata). Only
 * the tokenizer is read: no weights, and a GGUF file's tensors are not looked at.
 */
import { LlameshError } from "../core/errors.js";
import { isGgufPath } from "./chat.js";
import { readGgufMetadata, tokenizerFromGguf } from "./gguf-tokenizer.js";
import { loadTokenizer, loadTokenizerSync, type ConfiguredTokenizer, type LoadTokenizerOptions } from "./tokenizer.js";

export { isGgufPath };

/** The tokenizer of a folder or a .gguf file. `options.prefer` applies to folders only. */
export function loadTokenizerForSync(modelPath: string, options: LoadTokenizerOptions = {}): ConfiguredTokenizer {
  if (!isGgufPath(modelPath)) return loadTokenizerSync(modelPath, options);
  if (options.prefer === "tokenizer.model") {
    throw new LlameshError(`${modelPath}: a GGUF file carries one tokenizer; choosing tokenizer.model applies to model folders`);
  }
  return tokenizerFromGguf(readGgufMetadata(modelPath));
}

/** Async variant of loadTokenizerForSync (a GGUF file is read synchronously either way). */
export async function loadTokenizerFor(modelPath: string, options: LoadTokenizerOptions = {}): Promise<ConfiguredTokenizer> {
  if (!isGgufPath(modelPath)) return loadTokenizer(modelPath, options);
  return loadTokenizerForSync(modelPath, options);
}
