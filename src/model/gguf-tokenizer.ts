/**
 * The tokenizer a GGUF file carries in its metadata (tokenizer.ggml.*): SentencePiece-style
 * ("llama": Llama 2, Mistral) through the hand-written SentencePiece code, byte-level BPE
 * ("gpt2": Llama 3, Qwen2/2.5/3) through @huggingface/tokenizers on the equivalent tokenizer.json.
 */
import { LlameshError } from "../core/errors.js";
import { describeValue, metaTokenId, readGguf } from "../gguf/reader.js";
import { SUPPORTED_PRE_TOKENIZERS, preTokenizerDef, tokenizerJsonFromByteLevelVocab } from "./gguf-bpe.js";
import { PieceType } from "./sentencepiece.js";
import { tokenizerFromHfJson, tokenizerFromSentencePiece, type ConfiguredTokenizer } from "./tokenizer.js";

/** What the tokenizer needs of a GGUF file (a GgufFile is one). */
export interface GgufMetadata {
  file: string;
  metadata: Map<string, unknown>;
}

class MetadataRead {
  constructor(readonly metadata: Map<string, unknown>) {}
}

/**
 * The header and metadata of a GGUF file, without looking at its tensors (so a file whose
 * tensor types llamesh cannot run still gives its tokenizer and chat template).
 */
export function readGgufMetadata(file: string): GgufMetadata {
  try {
    // readGguf hands the metadata to the check before it reads the tensor infos: stop there
    readGguf(file, (metadata) => {
      throw new MetadataRead(metadata);
    });
  } catch (e) {
    if (e instanceof MetadataRead) return { file, metadata: e.metadata };
    throw e;
  }
  throw new Error("readGguf returned without calling its metadata check");
}

function stringArray(g: GgufMetadata, key: string): string[] {
  const v = g.metadata.get(key);
  if (!Array.isArray(v) || v.length === 0 || !v.every((t) => typeof t === "string")) {
    throw new LlameshError(`${g.file}: metadata ${key} is ${v === undefined ? "missing" : describeValue(v)}, expected a non-empty array of strings`);
  }
  return v as string[];
}

/** A per-token number array of length `n`, or undefined when the key is absent. */
function perToken(g: GgufMetadata, key: string, n: number): ArrayLike<number> | undefined {
  if (!g.metadata.has(key)) return undefined;
  const v = g.metadata.get(key);
  const ok = (ArrayBuffer.isView(v) && !(v instanceof DataView)) || (Array.isArray(v) && v.every((x) => typeof x === "number"));
  if (!ok || (v as ArrayLike<number>).length !== n) {
    throw new LlameshError(`${g.file}: metadata ${key} is ${describeValue(v)}, expected ${n} numbers (one per token)`);
  }
  return v as ArrayLike<number>;
}

function flag(g: GgufMetadata, key: string, fallback: boolean): boolean {
  if (!g.metadata.has(key)) return fallback;
  const v = g.metadata.get(key);
  if (typeof v !== "boolean") throw new LlameshError(`${g.file}: metadata ${key} is ${describeValue(v)}, expected true or false`);
  return v;
}

/** A special token id that lies in the vocabulary, or null (llama.cpp ignores out-of-range ids too). */
function tokenId(g: GgufMetadata, key: string, n: number): number | null {
  const id = metaTokenId(g.metadata, key, g.file);
  return id !== null && id < n ? id : null;
}

const present = (ids: (number | null)[]): number[] => ids.filter((x): x is number => x !== null);

/**
 * The tokenizer of a GGUF file. EOS ids: tokenizer.ggml.eos_token_id, eot_token_id and
 * eom_token_id, then the end-of-turn tokens (END_OF_TURN_TOKENS) found among its special tokens.
 * add_bos: tokenizer.ggml.add_bos_token, else llama.cpp's default for that tokenizer.
 */
export function tokenizerFromGguf(g: GgufMetadata): ConfiguredTokenizer {
  const { file } = g;
  const model = g.metadata.get("tokenizer.ggml.model");
  if (model !== "llama" && model !== "gpt2") {
    throw new LlameshError(
      `${file}: metadata tokenizer.ggml.model is ${model === undefined ? "missing" : describeValue(model)}, expected "llama" (SentencePiece) or "gpt2" (byte-level BPE)`,
    );
  }
  const tokens = stringArray(g, "tokenizer.ggml.tokens");
  const n = tokens.length;
  const types = perToken(g, "tokenizer.ggml.token_type", n);
  const bos = tokenId(g, "tokenizer.ggml.bos_token_id", n);
  const eos = tokenId(g, "tokenizer.ggml.eos_token_id", n);
  const eosIds = present([
    eos,
    tokenId(g, "tokenizer.ggml.eot_token_id", n),
    tokenId(g, "tokenizer.ggml.eom_token_id", n),
  ]);
  if (model === "gpt2") {
    const preValue = g.metadata.has("tokenizer.ggml.pre") ? g.metadata.get("tokenizer.ggml.pre") : "default";
    if (typeof preValue !== "string") {
      throw new LlameshError(`${file}: metadata tokenizer.ggml.pre is ${describeValue(preValue)}, expected one of ${SUPPORTED_PRE_TOKENIZERS.join(", ")}`);
    }
    const def = preTokenizerDef(preValue, file);
    const merges = stringArray(g, "tokenizer.ggml.merges");
    const json = tokenizerJsonFromByteLevelVocab({ tokens, types, merges, pre: preValue }, file);
    return tokenizerFromHfJson(json, {
      fileName: file,
      source: "gguf",
      vocabSize: n,
      bosId: bos,
      eosIds,
      addBosToken: flag(g, "tokenizer.ggml.add_bos_token", def.addBosDefault),
    });
  }
  const scores = perToken(g, "tokenizer.ggml.scores", n) ?? new Float32Array(n);
  const unk = tokenId(g, "tokenizer.ggml.unknown_token_id", n);
  const hasByte = types !== undefined && Array.from(types).some((t) => t === PieceType.BYTE);
  return tokenizerFromSentencePiece(
    {
      pieces: tokens,
      scores,
      types,
      modelType: "bpe",
      byteFallback: hasByte,
      unkId: unk ?? undefined,
      bosId: bos ?? -1,
      eosId: eos ?? -1,
      // llama.cpp's SentencePiece tokenizer: a dummy prefix, spaces as "▁", no whitespace collapsing
      addDummyPrefix: flag(g, "tokenizer.ggml.add_space_prefix", true),
      removeExtraWhitespaces: false,
      escapeWhitespaces: true,
      normalization: "identity",
    },
    {
      fileName: file,
      source: "gguf",
      bosId: bos,
      eosIds,
      addBosToken: flag(g, "tokenizer.ggml.add_bos_token", true),
    },
  );
}

/** tokenizer.chat_template of a GGUF file, or null when it has none. */
export function chatTemplateFromGguf(g: GgufMetadata): string | null {
  if (!g.metadata.has("tokenizer.chat_template")) return null;
  const v = g.metadata.get("tokenizer.chat_template");
  if (typeof v !== "string") throw new LlameshError(`${g.file}: metadata tokenizer.chat_template is ${describeValue(v)}, expected a string`);
  return v.trim() === "" ? null : v;
}

/** The text of token `key`'s id (tokenizer.ggml.bos_token_id ...), for a chat template's bos_token / eos_token. */
export function specialTokenText(g: GgufMetadata, key: string): string | undefined {
  const tokens = g.metadata.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens)) return undefined;
  const id = tokenId(g, key, tokens.length);
  const t: unknown = id === null ? undefined : tokens[id];
  return typeof t === "string" ? t : undefined;
}
