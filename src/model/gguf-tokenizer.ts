/**
 * The tokenizer a GGUF file carries in its metadata (tokenizer.ggml.*).
 */
import { LlameshError } from "../core/errors.js";
import { describeValue, metaTokenId, type GgufFile } from "../gguf/reader.js";
import { PieceType } from "./sentencepiece.js";
import { tokenizerFromSentencePiece, type ConfiguredTokenizer } from "./tokenizer.js";

/** The SentencePiece tokenizer a llama GGUF carries (tokenizer.ggml.model "llama"). */
export function tokenizerFromGguf(g: GgufFile): ConfiguredTokenizer {
  const { file, metadata: meta } = g;
  const model = meta.get("tokenizer.ggml.model");
  if (model !== "llama") {
    throw new LlameshError(
      `${file}: tokenizer.ggml.model is ${model === undefined ? "missing" : describeValue(model)}, expected "llama" (SentencePiece; other GGUF tokenizers are not supported)`,
    );
  }
  const tokens = meta.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || tokens.length === 0 || !tokens.every((t) => typeof t === "string")) {
    throw new LlameshError(`${file}: metadata tokenizer.ggml.tokens is ${tokens === undefined ? "missing" : describeValue(tokens)}, expected an array of strings`);
  }
  const n = tokens.length;
  const numbers = (key: string): ArrayLike<number> | undefined => {
    if (!meta.has(key)) return undefined;
    const v = meta.get(key);
    const ok = (ArrayBuffer.isView(v) && !(v instanceof DataView)) || (Array.isArray(v) && v.every((x) => typeof x === "number"));
    if (!ok || (v as ArrayLike<number>).length !== n) {
      throw new LlameshError(`${file}: metadata ${key} is ${describeValue(v)}, expected ${n} numbers (one per token)`);
    }
    return v as ArrayLike<number>;
  };
  const scores = numbers("tokenizer.ggml.scores") ?? new Float32Array(n);
  const types = numbers("tokenizer.ggml.token_type");
  const bos = metaTokenId(meta, "tokenizer.ggml.bos_token_id", file);
  const eos = metaTokenId(meta, "tokenizer.ggml.eos_token_id", file);
  const eot = metaTokenId(meta, "tokenizer.ggml.eot_token_id", file);
  const unk = metaTokenId(meta, "tokenizer.ggml.unknown_token_id", file);
  const flag = (key: string, fallback: boolean): boolean => {
    const v = meta.get(key);
    return typeof v === "boolean" ? v : fallback;
  };
  const eosIds = [eos, eot].filter((x, i, a): x is number => x !== null && x < n && a.indexOf(x) === i);
  const hasByte = types !== undefined && Array.from(types).some((t) => t === PieceType.BYTE);
  return tokenizerFromSentencePiece(
    {
      pieces: tokens as string[],
      scores,
      types,
      modelType: "bpe",
      byteFallback: hasByte,
      unkId: unk ?? undefined,
      bosId: bos ?? -1,
      eosId: eos ?? -1,
      // llama.cpp's SentencePiece tokenizer: a dummy prefix, spaces as "▁", no whitespace collapsing
      addDummyPrefix: flag("tokenizer.ggml.add_space_prefix", true),
      removeExtraWhitespaces: false,
      escapeWhitespaces: true,
      normalization: "identity",
    },
    {
      fileName: file,
      source: "gguf",
      bosId: bos !== null && bos < n ? bos : null,
      eosIds,
      addBosToken: flag("tokenizer.ggml.add_bos_token", true),
    },
  );
}

