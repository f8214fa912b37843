/**
 * Byte-level BPE vocabularies as GGUF stores them (tokenizer.ggml.model "gpt2": tokens,
 * token_type, merges, and the pre-tokenizer named by tokenizer.ggml.pre), rebuilt as the
 * equivalent Hugging Face tokenizer.json so that @huggingface/tokenizers does the tokenizing.
 *
 * Each supported pre-tokenizer name maps to the normalizer / pre-tokenizer / merge rule of the
 * tokenizer.json it was converted from (the Split regexes are the ones the models' own
 * tokenizer.json files carry, and the ones llama.cpp's llama-vocab.cpp quotes for that name).
 * The GGUF writer uses the same table the other way round (preTokenizerNameOf).
 */
import { LlameshError } from "../core/errors.js";
import { PieceType } from "./sentencepiece.js";

export type Json = Record<string, unknown>;

/** Llama 3's split: contractions, letters, numbers in runs of up to 3 digits, punctuation, newlines, spaces. */
export const LLAMA3_SPLIT_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/** Qwen2 / Qwen2.5 / Qwen3: the same with single digits. */
export const QWEN2_SPLIT_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/**
 * llama.cpp's "default" BPE pre-tokenizer (no Hugging Face tokenizer has it): these four regexes
 * applied one after the other, each splitting the pieces of the one before.
 */
export const DEFAULT_SPLIT_REGEXES = [
  "[\\p{P}\\$\\+<=>\\^~\\|]+",
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
  "\\p{N}+",
  "[0-9][0-9][0-9]",
] as const;

const split = (regex: string): Json => ({ type: "Split", pattern: { Regex: regex }, behavior: "Isolated", invert: false });
/** Bytes to the GPT-2 printable alphabet, after the Split pieces (the regex is already applied). */
const BYTE_LEVEL_NO_REGEX: Json = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };

interface PreTokenizerDef {
  normalizer: Json | null;
  preTokenizer: Json;
  /** BPE ignore_merges: a whole pre-token that is in the vocabulary is one token (Llama 3). */
  ignoreMerges: boolean;
  /** llama.cpp's add_bos when tokenizer.ggml.add_bos_token is absent. */
  addBosDefault: boolean;
}

const LLAMA3: PreTokenizerDef = {
  normalizer: null,
  preTokenizer: { type: "Sequence", pretokenizers: [split(LLAMA3_SPLIT_REGEX), BYTE_LEVEL_NO_REGEX] },
  ignoreMerges: true,
  addBosDefault: true,
};

/**
 * The tokenizer.ggml.pre names we read, as llama.cpp spells them. Qwen2's tokenizer.json
 * normalizes to NFC; llama.cpp does not, so on text that is not in NFC llama.cpp's ids differ
 * from the model's own tokenizer, and ours follow the model's tokenizer.json.
 */
export const PRE_TOKENIZERS: Readonly<Record<string, PreTokenizerDef>> = {
  "llama-bpe": LLAMA3,
  llama3: LLAMA3,
  "llama-v3": LLAMA3,
  qwen2: {
    normalizer: { type: "NFC" },
    preTokenizer: { type: "Sequence", pretokenizers: [split(QWEN2_SPLIT_REGEX), BYTE_LEVEL_NO_REGEX] },
    ignoreMerges: false,
    addBosDefault: false,
  },
  "gpt-2": {
    normalizer: null,
    // GPT-2's own tokenizer.json: the ByteLevel pre-tokenizer with its built-in regex
    preTokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    ignoreMerges: false,
    addBosDefault: false,
  },
  default: {
    normalizer: null,
    preTokenizer: { type: "Sequence", pretokenizers: [...DEFAULT_SPLIT_REGEXES.map(split), BYTE_LEVEL_NO_REGEX] },
    ignoreMerges: false,
    addBosDefault: false,
  },
};

export const SUPPORTED_PRE_TOKENIZERS = Object.keys(PRE_TOKENIZERS);

export function preTokenizerDef(pre: string, file: string): PreTokenizerDef {
  const def = Object.hasOwn(PRE_TOKENIZERS, pre) ? PRE_TOKENIZERS[pre] : undefined;
  if (def === undefined) {
    throw new LlameshError(
      `${file}: tokenizer.ggml.pre is ${JSON.stringify(pre)}, which llamesh does not support (supported: ${SUPPORTED_PRE_TOKENIZERS.map((p) => JSON.stringify(p)).join(", ")})`,
    );
  }
  return def;
}

/** A byte-level BPE vocabulary as the GGUF keys hold it. */
export interface ByteLevelVocab {
  /** tokenizer.ggml.tokens: byte-level strings ("Ġhello"); added tokens as their plain text. */
  tokens: readonly string[];
  /** tokenizer.ggml.token_type (PieceType numbers); absent: all NORMAL. */
  types?: ArrayLike<number>;
  /** tokenizer.ggml.merges: "left right", in rank order. */
  merges: readonly string[];
  /** tokenizer.ggml.pre */
  pre: string;
}

/**
 * The tokenizer.json equivalent of a GGUF byte-level vocabulary. NORMAL (and BYTE) tokens form
 * the BPE vocabulary; CONTROL and UNKNOWN tokens become special added tokens and USER_DEFINED
 * tokens non-special added tokens (both are matched in the text as whole tokens, as llama.cpp
 * does when parsing special tokens); UNUSED tokens (padding) are left out. No post-processor: BOS
 * is added by ConfiguredTokenizer.
 */
export function tokenizerJsonFromByteLevelVocab(v: ByteLevelVocab, file: string): Json {
  const def = preTokenizerDef(v.pre, file);
  const vocab: Record<string, number> = {};
  const added: Json[] = [];
  for (let id = 0; id < v.tokens.length; id++) {
    const text = v.tokens[id]!;
    const type = v.types?.[id] ?? PieceType.NORMAL;
    if (type === PieceType.UNUSED) continue;
    if (type === PieceType.CONTROL || type === PieceType.USER_DEFINED || type === PieceType.UNKNOWN) {
      if (text === "") throw new LlameshError(`${file}: metadata tokenizer.ggml.tokens[${id}] is an empty ${type === PieceType.USER_DEFINED ? "user-defined" : "control"} token`);
      added.push({ id, content: text, single_word: false, lstrip: false, rstrip: false, normalized: false, special: type !== PieceType.USER_DEFINED });
    } else {
      vocab[text] = id; // a later duplicate wins, as in llama.cpp's token_to_id
    }
  }
  const merges: [string, string][] = new Array(v.merges.length);
  for (let i = 0; i < v.merges.length; i++) {
    const m = v.merges[i]!;
    // llama.cpp splits at the first space after the first character
    const at = m.indexOf(" ", 1);
    if (at < 0) throw new LlameshError(`${file}: metadata tokenizer.ggml.merges[${i}] is ${JSON.stringify(m)}, expected "left right"`);
    merges[i] = [m.slice(0, at), m.slice(at + 1)];
  }
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: def.normalizer,
    pre_tokenizer: def.preTokenizer,
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: def.ignoreMerges,
      vocab,
      merges,
    },
  };
}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The pre-tokenizer of a byte-level tokenizer.json, reduced to what identifies it. */
function preTokenizerShape(json: Json): { regexes: string[]; byteLevelRegex: boolean; nfc: boolean } | null {
  const list: unknown[] = [];
  const pt = json["pre_tokenizer"];
  if (isObject(pt) && pt["type"] === "Sequence" && Array.isArray(pt["pretokenizers"])) list.push(...pt["pretokenizers"]);
  else list.push(pt);
  const regexes: string[] = [];
  let byteLevel: Json | null = null;
  for (const p of list) {
    if (!isObject(p)) return null;
    if (p["type"] === "Split" && isObject(p["pattern"]) && typeof p["pattern"]["Regex"] === "string" && p["behavior"] === "Isolated" && p["invert"] !== true) {
      regexes.push(p["pattern"]["Regex"]);
    } else if (p["type"] === "ByteLevel" && byteLevel === null && p["add_prefix_space"] !== true) {
      byteLevel = p;
    } else {
      return null;
    }
  }
  if (byteLevel === null) return null;
  const n = json["normalizer"];
  const nfc = isObject(n) && n["type"] === "NFC";
  if (n !== null && n !== undefined && !nfc) return null;
  return { regexes, byteLevelRegex: byteLevel["use_regex"] !== false, nfc };
}

/**
 * The tokenizer.ggml.pre name for a byte-level tokenizer.json (Llama 3, Qwen2/3, GPT-2), found by
 * its pre-tokenizer (llama.cpp's converter finds it by hashing token ids of a test text; the
 * pre-tokenizer is what that hash stands for). Null when it is none of the supported ones.
 */
export function preTokenizerNameOf(json: Json): string | null {
  const s = preTokenizerShape(json);
  if (s === null) return null;
  // llama.cpp's converter names the pre-tokenizer by what it does to a test text, so ignore_merges
  // and the normalizer do not change the name (its reader applies the name's own rule)
  if (!s.byteLevelRegex && s.regexes.length === 1) {
    if (s.regexes[0] === LLAMA3_SPLIT_REGEX) return "llama-bpe";
    if (s.regexes[0] === QWEN2_SPLIT_REGEX) return "qwen2";
  }
  if (s.byteLevelRegex && s.regexes.length === 0) return "gpt-2";
  return null;
}
