/**
 * Loads the tokenizer of a Hugging Face model folder: `tokenizer.json` through
 * @huggingface/tokenizers when present, else `tokenizer.model` through the hand-written
 * SentencePiece reader. BOS handling and the end-of-generation rule live here, in one place, for
 * every path (folders and GGUF files alike; see open-tokenizer.ts for "a folder or a .gguf").
 */
import { readFileSync, statSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { LlameshError } from "../core/errors.js";
import { PieceType, SentencePieceTokenizer, type SentencePieceOptions } from "./sentencepiece.js";
import type { Tokenizer } from "./tokenizer-types.js";

/** What a concrete tokenizer gives before BOS/EOS configuration is applied. */
interface RawTokenizer {
  readonly vocabSize: number;
  /** Ids for `text` without any special tokens. */
  encodeRaw(text: string): number[];
  tokenBytes(id: number): Uint8Array;
  /** Id of a token string (for resolving bos_token / eos_token names), if known. */
  tokenToId(token: string): number | undefined;
  /** Id of `text` when it is a special token (an added token, a CONTROL or USER_DEFINED piece). */
  specialTokenId(text: string): number | undefined;
}

/**
 * End-of-turn tokens of the families we run: Llama 3 (`<|eot_id|>`, `<|eom_id|>` after a tool
 * call, `<|end_of_text|>`), Qwen (`<|im_end|>`, `<|endoftext|>`). Generation stops at them when
 * the vocabulary has them as special tokens, whatever eos_token_id says, as llama.cpp does (its
 * end-of-generation list is built from token texts too, and includes these).
 */
export const END_OF_TURN_TOKENS: readonly string[] = ["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>"];

/** `ids` (valid ones, first occurrence) followed by the end-of-turn tokens `raw` has. */
function endOfGenerationIds(raw: RawTokenizer, ids: readonly (number | null | undefined)[]): number[] {
  const out: number[] = [];
  const add = (id: number | null | undefined): void => {
    if (typeof id === "number" && Number.isInteger(id) && id >= 0 && id < raw.vocabSize && !out.includes(id)) out.push(id);
  };
  for (const id of ids) add(id);
  for (const t of END_OF_TURN_TOKENS) add(raw.specialTokenId(t));
  return out;
}

/** The tokenizer returned by the loaders: a raw tokenizer plus BOS/EOS settings. */
export class ConfiguredTokenizer implements Tokenizer {
  constructor(
    private readonly raw: RawTokenizer,
    readonly source: string,
    readonly bosId: number | null,
    readonly eosIds: readonly number[],
    /** add_bos_token: when false, encode() never prepends BOS. */
    readonly addBosToken: boolean,
  ) {}

  get vocabSize(): number {
    return this.raw.vocabSize;
  }

  encode(text: string, addBos: boolean): number[] {
    const ids = this.raw.encodeRaw(text);
    if (addBos && this.addBosToken && this.bosId !== null) ids.unshift(this.bosId);
    return ids;
  }

  tokenBytes(id: number): Uint8Array {
    return this.raw.tokenBytes(id);
  }

  tokenToId(token: string): number | undefined {
    return this.raw.tokenToId(token);
  }
}

// ---------------------------------------------------------------------------------------------
// SentencePiece path
// ---------------------------------------------------------------------------------------------

class SentencePieceRaw implements RawTokenizer {
  constructor(readonly sp: SentencePieceTokenizer) {}
  get vocabSize(): number {
    return this.sp.vocabSize;
  }
  encodeRaw(text: string): number[] {
    return this.sp.encode(text, false);
  }
  tokenBytes(id: number): Uint8Array {
    return this.sp.tokenBytes(id);
  }
  tokenToId(token: string): number | undefined {
    return this.sp.pieceToId(token);
  }
  specialTokenId(text: string): number | undefined {
    const id = this.sp.pieceToId(text);
    if (id === undefined) return undefined;
    const type = this.sp.pieceType(id);
    return type === PieceType.CONTROL || type === PieceType.USER_DEFINED ? id : undefined;
  }
}

export interface SpecialTokenOptions {
  /** Overrides the BOS id (null: no BOS). Default: the model's own. */
  bosId?: number | null;
  /** Overrides the EOS ids (the end-of-turn tokens are added to them). Default: the model's own. */
  eosIds?: readonly number[];
  /** add_bos_token; default true. */
  addBosToken?: boolean;
}

export interface SentencePieceLoadOptions extends SpecialTokenOptions {
  /** Names the origin in error messages (e.g. the file path). */
  fileName?: string;
  /** Tokenizer.source; default "tokenizer.model" for bytes, "gguf" for arrays. */
  source?: string;
  /**
   * Encode CONTROL/UNKNOWN piece strings found in the text ("<s>", "</s>", "<unk>") as those
   * tokens, like the Hugging Face tokenizer does with its special tokens. Default true.
   */
  parseSpecial?: boolean;
}

/**
 * A SentencePiece tokenizer from the bytes of a `tokenizer.model` file, or from arrays of
 * pieces/scores/types plus normalizer flags (as a GGUF file stores them).
 */
export function tokenizerFromSentencePiece(
  model: Uint8Array | SentencePieceOptions,
  options: SentencePieceLoadOptions = {},
): ConfiguredTokenizer {
  const source = options.source ?? (model instanceof Uint8Array ? "tokenizer.model" : (model.source ?? "gguf"));
  const fileName = options.fileName ?? source;
  const parseSpecial = options.parseSpecial ?? true;
  const sp =
    model instanceof Uint8Array
      ? SentencePieceTokenizer.fromModelBytes(model, fileName, { source, parseSpecial })
      : new SentencePieceTokenizer({ ...model, source, fileName: model.fileName ?? fileName, parseSpecial });
  const bosId = options.bosId !== undefined ? options.bosId : sp.bosId;
  const raw = new SentencePieceRaw(sp);
  const eosIds = endOfGenerationIds(raw, options.eosIds ?? sp.eosIds);
  return new ConfiguredTokenizer(raw, source, bosId, eosIds, options.addBosToken ?? true);
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json path
// ---------------------------------------------------------------------------------------------

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** GPT-2's byte <-> printable-unicode table, inverted: code point -> byte. */
const BYTE_LEVEL_DECODE: Map<number, number> = (() => {
  const map = new Map<number, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    map.set(printable ? b : 256 + extra++, b);
  }
  return map;
})();

const BYTE_PIECE_RE = /^<0x([0-9A-Fa-f]{2})>$/;
const EMPTY = new Uint8Array(0);
const utf8 = new TextEncoder();

interface DecoderLayout {
  byteLevel: boolean;
  byteFallback: boolean;
  /** Character the decoder turns back into a space ("▁" for Llama / Metaspace), if any. */
  spaceChar: string | null;
}

function collectComponents(node: unknown, listKey: string, out: Json[]): void {
  if (!isObject(node)) return;
  out.push(node);
  const list = node[listKey];
  if (node.type === "Sequence" && Array.isArray(list)) for (const c of list) collectComponents(c, listKey, out);
}

function decoderLayout(json: Json): DecoderLayout {
  const decoders: Json[] = [];
  collectComponents(json.decoder, "decoders", decoders);
  const preTokenizers: Json[] = [];
  collectComponents(json.pre_tokenizer, "pretokenizers", preTokenizers);
  const model = isObject(json.model) ? json.model : {};
  let byteLevel = decoders.some((d) => d.type === "ByteLevel");
  if (decoders.length === 0) byteLevel = preTokenizers.some((p) => p.type === "ByteLevel");
  const byteFallback = decoders.some((d) => d.type === "ByteFallback") || model.byte_fallback === true;
  let spaceChar: string | null = null;
  for (const d of decoders) {
    if (d.type === "Metaspace") spaceChar = typeof d.replacement === "string" ? d.replacement : "\u2581";
    if (d.type === "Replace" && d.content === " " && isObject(d.pattern) && typeof d.pattern.String === "string") {
      spaceChar = d.pattern.String;
    }
  }
  if (spaceChar === null && !byteLevel && decoders.length === 0) {
    // No decoder: a Metaspace pre-tokenizer still marks spaces with its replacement.
    const meta = preTokenizers.find((p) => p.type === "Metaspace");
    if (meta !== undefined) spaceChar = typeof meta.replacement === "string" ? meta.replacement : "\u2581";
  }
  return { byteLevel, byteFallback, spaceChar };
}

/** Whether the post-processor's single-sequence template starts with a special token, and which. */
function templateBos(json: Json): { present: boolean; token: string | null } {
  const processors: Json[] = [];
  collectComponents(json.post_processor, "processors", processors);
  for (const p of processors) {
    if (p.type !== "TemplateProcessing" || !Array.isArray(p.single)) continue;
    const first: unknown = p.single[0];
    if (isObject(first) && isObject(first.SpecialToken) && typeof first.SpecialToken.id === "string") {
      return { present: true, token: first.SpecialToken.id };
    }
    return { present: false, token: null };
  }
  return { present: false, token: null };
}

class HfJsonRaw implements RawTokenizer {
  readonly vocabSize: number;
  private readonly tokens: (string | undefined)[];
  private readonly vocab: Map<string, number>;
  private readonly special = new Set<number>();
  private readonly addedText = new Set<number>();
  private readonly addedIds = new Map<string, number>();
  private readonly layout: DecoderLayout;
  private readonly cache: (Uint8Array | undefined)[];

  /** `vocabSize`: at least this many ids (a GGUF file counts its unused padding tokens). */
  constructor(
    private readonly hf: HfTokenizer,
    json: Json,
    vocabSize = 0,
  ) {
    this.vocab = hf.get_vocab(true);
    let max = vocabSize - 1;
    for (const id of this.vocab.values()) if (id > max) max = id;
    const added = Array.isArray(json.added_tokens) ? json.added_tokens : [];
    for (const t of added) {
      if (!isObject(t) || typeof t.id !== "number") continue;
      if (t.id > max) max = t.id;
      if (t.special === true) this.special.add(t.id);
      else this.addedText.add(t.id);
      if (typeof t.content === "string") this.addedIds.set(t.content, t.id);
    }
    this.vocabSize = max + 1;
    this.tokens = new Array(this.vocabSize);
    for (const [tok, id] of this.vocab) this.tokens[id] = tok;
    this.cache = new Array(this.vocabSize);
    this.layout = decoderLayout(json);
  }

  encodeRaw(text: string): number[] {
    return this.hf.encode(text, { add_special_tokens: false }).ids.slice();
  }

  tokenToId(token: string): number | undefined {
    return this.vocab.get(token);
  }

  specialTokenId(text: string): number | undefined {
    return this.addedIds.get(text);
  }

  tokenBytes(id: number): Uint8Array {
    if (!(id >= 0 && id < this.vocabSize)) return EMPTY;
    const cached = this.cache[id];
    if (cached !== undefined) return cached;
    const out = this.computeBytes(id);
    this.cache[id] = out;
    return out;
  }

  private computeBytes(id: number): Uint8Array {
    const tok = this.tokens[id];
    if (tok === undefined || this.special.has(id)) return EMPTY;
    if (this.addedText.has(id)) return utf8.encode(tok);
    const { byteLevel, byteFallback, spaceChar } = this.layout;
    if (byteFallback) {
      const m = BYTE_PIECE_RE.exec(tok);
      if (m !== null) return Uint8Array.of(parseInt(m[1]!, 16));
    }
    if (byteLevel) {
      const bytes: number[] = [];
      for (const ch of tok) {
        const b = BYTE_LEVEL_DECODE.get(ch.codePointAt(0)!);
        if (b !== undefined) bytes.push(b);
        else bytes.push(...utf8.encode(ch));
      }
      return Uint8Array.from(bytes);
    }
    return utf8.encode(spaceChar !== null ? tok.replaceAll(spaceChar, " ") : tok);
  }
}

/** @huggingface/tokenizers on a parsed tokenizer.json; a load failure names `file`. */
function hfRaw(json: Json, tokenizerConfig: Json | null, file: string, vocabSize = 0): HfJsonRaw {
  if (!isObject(json.model)) throw new LlameshError(`${file}: expected a Hugging Face tokenizer with a "model" object`);
  let hf: HfTokenizer;
  try {
    hf = new HfTokenizer(json, tokenizerConfig ?? {});
  } catch (e) {
    throw new LlameshError(`${file}: cannot load the tokenizer (${(e as Error).message.split("\n")[0]})`);
  }
  // The BPE model caches the pieces of every "word" under 256 characters, up to 10,000 of them.
  // Without a pre-tokenizer (Llama 2's and TinyLlama's tokenizer.json) a word is the whole text
  // between special tokens, so a server's cache filled with its prompts: 27 MiB of heap after
  // 10,000 distinct 250-character prompts, for hits only on an exactly repeated prompt. Such texts
  // are not cached (a miss costs what one BPE pass costs: 0.04 ms on a short prompt); the words
  // of a pre-tokenizer (Llama 3, Qwen) still are.
  // (the BPE class is missing from the package's ESM type declarations, hence the structural check)
  const bpe = hf.model as unknown as { max_length_to_cache?: unknown } | null;
  if (json.pre_tokenizer == null && typeof bpe?.max_length_to_cache === "number") bpe.max_length_to_cache = 0;
  return new HfJsonRaw(hf, json, vocabSize);
}

export interface HfJsonLoadOptions extends SpecialTokenOptions {
  /** Names the origin in error messages. */
  fileName: string;
  /** Tokenizer.source; default "tokenizer.json". */
  source?: string;
  /** At least this many ids (GGUF: the token count, padding included). */
  vocabSize?: number;
}

/**
 * A tokenizer from a tokenizer.json object (as another loader builds it, e.g. from a GGUF
 * vocabulary). BOS, EOS and add_bos_token come from `options` only (default: none, none, true);
 * the end-of-turn tokens are added to the EOS ids.
 */
export function tokenizerFromHfJson(json: Json, options: HfJsonLoadOptions): ConfiguredTokenizer {
  const raw = hfRaw(json, null, options.fileName, options.vocabSize);
  const bosId = options.bosId ?? null;
  return new ConfiguredTokenizer(raw, options.source ?? "tokenizer.json", bosId, endOfGenerationIds(raw, options.eosIds ?? []), options.addBosToken ?? true);
}

// ---------------------------------------------------------------------------------------------
// Folder loading
// ---------------------------------------------------------------------------------------------

/** Raw contents of the tokenizer-related files of a model folder (null when absent). */
interface FolderFiles {
  dir: string;
  tokenizerJson: Buffer | null;
  tokenizerModel: Buffer | null;
  tokenizerConfig: Buffer | null;
  generationConfig: Buffer | null;
  config: Buffer | null;
}

function parseJson(buf: Buffer | null, file: string): Json | null {
  if (buf === null) return null;
  let v: unknown;
  try {
    v = JSON.parse(buf.toString("utf8"));
  } catch (e) {
    throw new LlameshError(`${file}: invalid JSON (${(e as Error).message})`);
  }
  if (!isObject(v)) throw new LlameshError(`${file}: expected a JSON object`);
  return v;
}

function tokenName(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (isObject(v) && typeof v.content === "string") return v.content;
  return null;
}

function idList(v: unknown): number[] {
  if (typeof v === "number") return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === "number");
  return [];
}

function buildFromFiles(f: FolderFiles): ConfiguredTokenizer {
  const tcFile = path.join(f.dir, "tokenizer_config.json");
  const tokenizerConfig = parseJson(f.tokenizerConfig, tcFile);
  const generationConfig = parseJson(f.generationConfig, path.join(f.dir, "generation_config.json"));
  const config = parseJson(f.config, path.join(f.dir, "config.json"));

  let raw: RawTokenizer;
  let source: string;
  let nativeBos: number | null = null;
  let nativeEos: readonly number[] = [];
  let templateAddsBos: boolean | null = null;
  let templateBosToken: string | null = null;

  if (f.tokenizerJson !== null) {
    const file = path.join(f.dir, "tokenizer.json");
    const json = parseJson(f.tokenizerJson, file)!;
    raw = hfRaw(json, tokenizerConfig, file);
    source = "tokenizer.json";
    if (json.post_processor !== undefined && json.post_processor !== null) {
      const t = templateBos(json);
      templateAddsBos = t.present;
      templateBosToken = t.token;
    }
  } else if (f.tokenizerModel !== null) {
    const file = path.join(f.dir, "tokenizer.model");
    const sp = SentencePieceTokenizer.fromModelBytes(f.tokenizerModel, file, { parseSpecial: true });
    raw = new SentencePieceRaw(sp);
    source = "tokenizer.model";
    nativeBos = sp.bosId;
    nativeEos = sp.eosIds;
  } else {
    throw new LlameshError(
      `${f.dir}: no tokenizer.json or tokenizer.model (expected the Hugging Face tokenizer files)`,
    );
  }

  const valid = (id: number | null | undefined): id is number =>
    typeof id === "number" && Number.isInteger(id) && id >= 0 && id < raw.vocabSize;
  const lookup = (name: string | null): number | undefined => (name === null ? undefined : raw.tokenToId(name));

  // BOS: the tokenizer's own token first, then the model configs.
  const bosCandidates: (number | null | undefined)[] = [
    lookup(tokenName(tokenizerConfig?.bos_token)),
    lookup(templateBosToken),
    nativeBos,
    ...idList(generationConfig?.bos_token_id),
    ...idList(config?.bos_token_id),
  ];
  const bosId = bosCandidates.find(valid) ?? null;

  // EOS: the union of everything that says what ends a generation, then the end-of-turn tokens.
  const eosIds = endOfGenerationIds(raw, [
    lookup(tokenName(tokenizerConfig?.eos_token)),
    ...nativeEos,
    ...idList(generationConfig?.eos_token_id),
    ...idList(config?.eos_token_id),
  ]);

  let addBosToken: boolean;
  if (typeof tokenizerConfig?.add_bos_token === "boolean") addBosToken = tokenizerConfig.add_bos_token;
  else if (templateAddsBos !== null) addBosToken = templateAddsBos;
  else addBosToken = true;

  return new ConfiguredTokenizer(raw, source, bosId, eosIds, addBosToken);
}

function missingDir(dir: string, e: unknown): never {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOENT" || code === "ENOTDIR") {
    throw new LlameshError(`${dir}: no such directory (expected a model folder with tokenizer files)`);
  }
  throw new LlameshError(`${dir}: cannot read (${(e as Error).message})`);
}

const FILE_NAMES = {
  tokenizerJson: "tokenizer.json",
  tokenizerModel: "tokenizer.model",
  tokenizerConfig: "tokenizer_config.json",
  generationConfig: "generation_config.json",
  config: "config.json",
} as const;

function readError(file: string, e: unknown): never {
  throw new LlameshError(`${file}: cannot read (${(e as Error).message})`);
}

export interface LoadTokenizerOptions {
  /**
   * Which file to use when the folder has both: "tokenizer.json" (the default) or
   * "tokenizer.model". Falls back to the other when the preferred one is absent.
   */
  prefer?: "tokenizer.json" | "tokenizer.model";
}

/** Loads the tokenizer of a Hugging Face model folder. */
export async function loadTokenizer(
  modelDir: string,
  options: LoadTokenizerOptions = {},
): Promise<ConfiguredTokenizer> {
  try {
    const s = await stat(modelDir);
    if (!s.isDirectory()) throw new LlameshError(`${modelDir}: not a directory (expected a model folder)`);
  } catch (e) {
    if (e instanceof LlameshError) throw e;
    missingDir(modelDir, e);
  }
  const readOptional = async (name: string): Promise<Buffer | null> => {
    const file = path.join(modelDir, name);
    try {
      return await readFile(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
      readError(file, e);
    }
  };
  const preferModel = options.prefer === "tokenizer.model";
  const tokenizerModel = preferModel ? await readOptional(FILE_NAMES.tokenizerModel) : null;
  const tokenizerJson = tokenizerModel === null ? await readOptional(FILE_NAMES.tokenizerJson) : null;
  const files: FolderFiles = {
    dir: modelDir,
    tokenizerJson,
    tokenizerModel:
      tokenizerModel ?? (tokenizerJson === null ? await readOptional(FILE_NAMES.tokenizerModel) : null),
    tokenizerConfig: await readOptional(FILE_NAMES.tokenizerConfig),
    generationConfig: await readOptional(FILE_NAMES.generationConfig),
    config: await readOptional(FILE_NAMES.config),
  };
  return buildFromFiles(files);
}

/** Synchronous variant of loadTokenizer. */
export function loadTokenizerSync(modelDir: string, options: LoadTokenizerOptions = {}): ConfiguredTokenizer {
  try {
    const s = statSync(modelDir);
    if (!s.isDirectory()) throw new LlameshError(`${modelDir}: not a directory (expected a model folder)`);
  } catch (e) {
    if (e instanceof LlameshError) throw e;
    missingDir(modelDir, e);
  }
  const readOptional = (name: string): Buffer | null => {
    const file = path.join(modelDir, name);
    try {
      return readFileSync(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
      readError(file, e);
    }
  };
  const preferModel = options.prefer === "tokenizer.model";
  const tokenizerModel = preferModel ? readOptional(FILE_NAMES.tokenizerModel) : null;
  const tokenizerJson = tokenizerModel === null ? readOptional(FILE_NAMES.tokenizerJson) : null;
  return buildFromFiles({
    dir: modelDir,
    tokenizerJson,
    tokenizerModel: tokenizerModel ?? (tokenizerJson === null ? readOptional(FILE_NAMES.tokenizerModel) : null),
    tokenizerConfig: readOptional(FILE_NAMES.tokenizerConfig),
    generationConfig: readOptional(FILE_NAMES.generationConfig),
    config: readOptional(FILE_NAMES.config),
  });
}
