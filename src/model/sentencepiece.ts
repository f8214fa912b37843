/**
 * SentencePiece: a hand-written reader for `tokenizer.model` (the ModelProto message of
 * sentencepiece_model.proto, protobuf wire format) and a tokenizer that reproduces
 * SentencePiece's own encoding (normalizer + BPE / unigram model + byte fallback).
 *
 * The tokenizer can also be built from plain arrays (pieces, scores, types), which is how a
 * GGUF file stores the same vocabulary.
 */
import { LlameshError } from "../core/errors.js";
import type { Tokenizer } from "./tokenizer-types.js";

/** ModelProto.SentencePiece.Type */
export const PieceType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** TrainerSpec.ModelType */
export const ModelType = {
  UNIGRAM: 1,
  BPE: 2,
  WORD: 3,
  CHAR: 4,
} as const;

export type ModelTypeName = "unigram" | "bpe" | "word" | "char";

const MODEL_TYPE_NAMES: Record<number, ModelTypeName> = {
  1: "unigram",
  2: "bpe",
  3: "word",
  4: "char",
};

export interface SentencePieceEntry {
  piece: string;
  score: number;
  type: number;
}

export interface TrainerSpecInfo {
  modelType: ModelTypeName;
  vocabSize: number | null;
  byteFallback: boolean;
  treatWhitespaceAsSuffix: boolean;
  unkId: number;
  bosId: number;
  eosId: number;
  padId: number;
}

export interface NormalizerSpecInfo {
  name: string;
  precompiledCharsmap: Uint8Array;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
}

export interface SentencePieceModelProto {
  pieces: SentencePieceEntry[];
  trainerSpec: TrainerSpecInfo;
  normalizerSpec: NormalizerSpecInfo;
}

// ---------------------------------------------------------------------------------------------
// Protobuf wire format
// ---------------------------------------------------------------------------------------------

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

class CorruptProto extends Error {}

const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A minimal reader over one protobuf message (a byte range of the file). */
class ProtoReader {
  pos: number;
  private readonly view: DataView;

  constructor(
    private readonly buf: Uint8Array,
    start: number,
    private readonly end: number,
  ) {
    this.pos = start;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  done(): boolean {
    return this.pos >= this.end;
  }

  /**
   * Reads a varint. Returns its low 32 bits (as a signed int32, which is what int32/enum/bool
   * fields need: -1 is written as ten bytes whose low 32 bits are 0xffffffff) and whether the
   * value fits in 31 bits (for lengths and tags).
   */
  private varint(): { lo: number; small: boolean } {
    let lo = 0;
    let small = true;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new CorruptProto("truncated varint");
      const b = this.buf[this.pos++]!;
      const bits = b & 0x7f;
      if (i < 5) lo |= bits << (7 * i);
      if ((i === 4 && bits > 0x07) || (i > 4 && bits !== 0)) small = false;
      if ((b & 0x80) === 0) return { lo, small: small && lo >= 0 };
    }
    throw new CorruptProto("varint longer than 10 bytes");
  }

  int32(): number {
    return this.varint().lo | 0;
  }

  bool(): boolean {
    return this.varint().lo !== 0;
  }

  /** Tag: field number and wire type. */
  tag(): { field: number; wire: number } {
    const { lo, small } = this.varint();
    if (!small) throw new CorruptProto("bad field tag");
    const field = lo >>> 3;
    if (field === 0) throw new CorruptProto("field number 0");
    return { field, wire: lo & 7 };
  }

  /** A length-delimited field: returns [start, end) and moves past it. */
  lengthDelimited(): [number, number] {
    const { lo, small } = this.varint();
    if (!small) throw new CorruptProto("bad length");
    const start = this.pos;
    const end = start + lo;
    if (end > this.end) throw new CorruptProto("truncated field");
    this.pos = end;
    return [start, end];
  }

  string(): string {
    const [s, e] = this.lengthDelimited();
    try {
      return utf8Strict.decode(this.buf.subarray(s, e));
    } catch {
      throw new CorruptProto("string field is not valid UTF-8");
    }
  }

  bytes(): Uint8Array {
    const [s, e] = this.lengthDelimited();
    return this.buf.slice(s, e);
  }

  float(): number {
    if (this.pos + 4 > this.end) throw new CorruptProto("truncated float");
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  sub(): ProtoReader {
    const [s, e] = this.lengthDelimited();
    return new ProtoReader(this.buf, s, e);
  }

  skip(wire: number): void {
    switch (wire) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_FIXED64:
        this.advance(8);
        return;
      case WIRE_LEN:
        this.lengthDelimited();
        return;
      case WIRE_FIXED32:
        this.advance(4);
        return;
      default:
        throw new CorruptProto(`unsupported wire type ${wire}`);
    }
  }

  private advance(n: number): void {
    if (this.pos + n > this.end) throw new CorruptProto("truncated field");
    this.pos += n;
  }
}

function expectWire(actual: number, expected: number, what: string): void {
  if (actual !== expected) throw new CorruptProto(`field ${what} has wire type ${actual}`);
}

function parsePiece(r: ProtoReader): SentencePieceEntry {
  let piece = "";
  let score = 0;
  let type: number = PieceType.NORMAL;
  while (!r.done()) {
    const { field, wire } = r.tag();
    if (field === 1) {
      expectWire(wire, WIRE_LEN, "piece");
      piece = r.string();
    } else if (field === 2) {
      expectWire(wire, WIRE_FIXED32, "score");
      score = r.float();
    } else if (field === 3) {
      expectWire(wire, WIRE_VARINT, "type");
      type = r.int32();
      if (type < 1 || type > 6) throw new CorruptProto(`unknown piece type ${type}`);
    } else {
      r.skip(wire);
    }
  }
  return { piece, score, type };
}

function parseTrainerSpec(r: ProtoReader, spec: TrainerSpecInfo): void {
  while (!r.done()) {
    const { field, wire } = r.tag();
    switch (field) {
      case 3: {
        expectWire(wire, WIRE_VARINT, "model_type");
        const t = r.int32();
        const name = MODEL_TYPE_NAMES[t];
        if (name === undefined) throw new CorruptProto(`unknown model_type ${t}`);
        spec.modelType = name;
        break;
      }
      case 4:
        expectWire(wire, WIRE_VARINT, "vocab_size");
        spec.vocabSize = r.int32();
        break;
      case 24:
        expectWire(wire, WIRE_VARINT, "treat_whitespace_as_suffix");
        spec.treatWhitespaceAsSuffix = r.bool();
        break;
      case 35:
        expectWire(wire, WIRE_VARINT, "byte_fallback");
        spec.byteFallback = r.bool();
        break;
      case 40:
        expectWire(wire, WIRE_VARINT, "unk_id");
        spec.unkId = r.int32();
        break;
      case 41:
        expectWire(wire, WIRE_VARINT, "bos_id");
        spec.bosId = r.int32();
        break;
      case 42:
        expectWire(wire, WIRE_VARINT, "eos_id");
        spec.eosId = r.int32();
        break;
      case 43:
        expectWire(wire, WIRE_VARINT, "pad_id");
        spec.padId = r.int32();
        break;
      default:
        r.skip(wire);
    }
  }
}

function parseNormalizerSpec(r: ProtoReader, spec: NormalizerSpecInfo): void {
  while (!r.done()) {
    const { field, wire } = r.tag();
    switch (field) {
      case 1:
        expectWire(wire, WIRE_LEN, "name");
        spec.name = r.string();
        break;
      case 2:
        expectWire(wire, WIRE_LEN, "precompiled_charsmap");
        spec.precompiledCharsmap = r.bytes();
        break;
      case 3:
        expectWire(wire, WIRE_VARINT, "add_dummy_prefix");
        spec.addDummyPrefix = r.bool();
        break;
      case 4:
        expectWire(wire, WIRE_VARINT, "remove_extra_whitespaces");
        spec.removeExtraWhitespaces = r.bool();
        break;
      case 5:
        expectWire(wire, WIRE_VARINT, "escape_whitespaces");
        spec.escapeWhitespaces = r.bool();
        break;
      default:
        r.skip(wire);
    }
  }
}

/**
 * Parses the bytes of a SentencePiece `tokenizer.model`. `fileName` names the file in errors.
 * Throws LlameshError when the bytes are not a usable ModelProto.
 */
export function parseSentencePieceModel(bytes: Uint8Array, fileName: string): SentencePieceModelProto {
  const pieces: SentencePieceEntry[] = [];
  const trainerSpec: TrainerSpecInfo = {
    modelType: "unigram",
    vocabSize: null,
    byteFallback: false,
    treatWhitespaceAsSuffix: false,
    unkId: 0,
    bosId: 1,
    eosId: 2,
    padId: -1,
  };
  const normalizerSpec: NormalizerSpecInfo = {
    name: "",
    precompiledCharsmap: new Uint8Array(0),
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
    escapeWhitespaces: true,
  };
  try {
    const r = new ProtoReader(bytes, 0, bytes.length);
    while (!r.done()) {
      const { field, wire } = r.tag();
      if (field === 1) {
        expectWire(wire, WIRE_LEN, "pieces");
        pieces.push(parsePiece(r.sub()));
      } else if (field === 2) {
        expectWire(wire, WIRE_LEN, "trainer_spec");
        parseTrainerSpec(r.sub(), trainerSpec);
      } else if (field === 3) {
        expectWire(wire, WIRE_LEN, "normalizer_spec");
        parseNormalizerSpec(r.sub(), normalizerSpec);
      } else {
        r.skip(wire);
      }
    }
  } catch (e) {
    if (e instanceof CorruptProto) {
      throw new LlameshError(
        `${fileName}: not a valid SentencePiece model (${e.message}); expected a tokenizer.model protobuf`,
      );
    }
    throw e;
  }
  if (pieces.length === 0) {
    throw new LlameshError(
      `${fileName}: not a valid SentencePiece model (no pieces); expected a tokenizer.model protobuf`,
    );
  }
  for (let i = 0; i < pieces.length; i++) {
    if (pieces[i]!.piece.length === 0) {
      throw new LlameshError(`${fileName}: not a valid SentencePiece model (piece ${i} is empty)`);
    }
  }
  return { pieces, trainerSpec, normalizerSpec };
}

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

/** How the text is normalized before segmentation. */
export type NormalizationKind = "identity" | "nfkc" | "nmt_nfkc" | "nfkc_cf" | "nmt_nfkc_cf";

export interface SentencePieceOptions {
  pieces: readonly string[];
  scores: ArrayLike<number>;
  /** PieceType values; NORMAL when absent. */
  types?: ArrayLike<number>;
  modelType?: ModelTypeName;
  /** Default: true when the vocabulary has BYTE pieces. */
  byteFallback?: boolean;
  /** Default: the first UNKNOWN piece, else 0 if < pieces.length, else none. */
  unkId?: number;
  /** Negative or out of range: no BOS. Default 1 (if in range). */
  bosId?: number;
  /** Negative or out of range: no EOS. Default 2 (if in range). */
  eosId?: number;
  addDummyPrefix?: boolean;
  removeExtraWhitespaces?: boolean;
  escapeWhitespaces?: boolean;
  treatWhitespaceAsSuffix?: boolean;
  normalization?: NormalizationKind;
  /** Tokenizer.source; default "tokenizer.model". */
  source?: string;
  /** Names the origin in error messages; default `source`. */
  fileName?: string;
  /**
   * When true, CONTROL and UNKNOWN piece strings in the text (e.g. "<s>", "</s>") are encoded
   * as those tokens, and the text between them is encoded piece by piece, as the Hugging Face
   * tokenizer does with its special added tokens. SentencePiece itself never does this, so the
   * default is false.
   */
  parseSpecial?: boolean;
}

const SPACE_SYMBOL = "\u2581";
const BYTE_PIECE_RE = /^<0x([0-9A-Fa-f]{2})>$/;
/** SentencePiece's unigram penalty for unknown characters. */
const UNK_PENALTY = 10;
const EMPTY = new Uint8Array(0);
const utf8Encoder = new TextEncoder();

interface BpeSymbol {
  start: number;
  end: number;
  prev: number;
  next: number;
}

interface PairEntry {
  score: number;
  left: number;
  right: number;
  size: number;
}

/** Binary max-heap of pairs: highest score first, ties to the leftmost pair. */
class PairHeap {
  private readonly items: PairEntry[] = [];

  get size(): number {
    return this.items.length;
  }

  private static before(a: PairEntry, b: PairEntry): boolean {
    return a.score > b.score || (a.score === b.score && a.left < b.left);
  }

  push(e: PairEntry): void {
    const items = this.items;
    let i = items.length;
    items.push(e);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!PairHeap.before(e, items[parent]!)) break;
      items[i] = items[parent]!;
      i = parent;
    }
    items[i] = e;
  }

  pop(): PairEntry | undefined {
    const items = this.items;
    if (items.length === 0) return undefined;
    const top = items[0]!;
    const last = items.pop()!;
    const n = items.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && PairHeap.before(items[r]!, items[l]!) ? r : l;
        if (!PairHeap.before(items[c]!, last)) break;
        items[i] = items[c]!;
        i = c;
      }
      items[i] = last;
    }
    return top;
  }
}

/**
 * A SentencePiece tokenizer (BPE, unigram or char model) that reproduces the ids of the
 * SentencePiece library for the same model.
 */
export class SentencePieceTokenizer implements Tokenizer {
  readonly source: string;
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosIds: readonly number[];
  readonly unkId: number | null;
  readonly modelType: ModelTypeName;
  readonly byteFallback: boolean;
  readonly addDummyPrefix: boolean;
  readonly removeExtraWhitespaces: boolean;
  readonly escapeWhitespaces: boolean;
  readonly treatWhitespaceAsSuffix: boolean;
  readonly normalization: NormalizationKind;
  readonly parseSpecial: boolean;

  private readonly pieces: readonly string[];
  private readonly scores: Float64Array;
  private readonly types: Uint8Array;
  /** Pieces usable for segmentation (NORMAL, USER_DEFINED, UNUSED) -> id. */
  private readonly normalIds = new Map<string, number>();
  /** CONTROL, UNKNOWN and BYTE pieces -> id (looked up first, as SentencePiece does). */
  private readonly reservedIds = new Map<string, number>();
  /** byte value -> id of its <0xXX> piece, or -1. */
  private readonly byteIds = new Int32Array(256).fill(-1);
  /** USER_DEFINED pieces grouped by their first UTF-16 unit, longest first. */
  private readonly userDefined = new Map<string, string[]>();
  private readonly maxPieceChars: number;
  private readonly unigramMinScore: number;
  private readonly unigramMaxScore: number;
  private readonly bytesCache: (Uint8Array | undefined)[];
  /** Matches CONTROL/UNKNOWN piece strings (longest first), when parseSpecial. */
  private readonly specialRe: RegExp | null = null;

  constructor(opts: SentencePieceOptions) {
    const n = opts.pieces.length;
    this.source = opts.source ?? "tokenizer.model";
    const where = opts.fileName ?? this.source;
    if (n === 0) throw new LlameshError(`${where}: the SentencePiece vocabulary is empty`);
    if (opts.scores.length !== n || (opts.types !== undefined && opts.types.length !== n)) {
      throw new LlameshError(
        `${where}: SentencePiece vocabulary arrays differ in length (${n} pieces, ` +
          `${opts.scores.length} scores${opts.types !== undefined ? `, ${opts.types.length} types` : ""})`,
      );
    }
    this.pieces = opts.pieces;
    this.vocabSize = n;
    this.scores = Float64Array.from(opts.scores as ArrayLike<number>);
    this.types = new Uint8Array(n);
    this.modelType = opts.modelType ?? "bpe";
    this.addDummyPrefix = opts.addDummyPrefix ?? true;
    this.removeExtraWhitespaces = opts.removeExtraWhitespaces ?? true;
    this.escapeWhitespaces = opts.escapeWhitespaces ?? true;
    this.treatWhitespaceAsSuffix = opts.treatWhitespaceAsSuffix ?? false;
    this.normalization = opts.normalization ?? "identity";
    this.bytesCache = new Array(n);

    if (this.modelType === "word") {
      throw new LlameshError(`${where}: SentencePiece model type word is not supported`);
    }

    let firstUnk = -1;
    let hasByte = false;
    let maxChars = 1;
    let minScore = Infinity;
    let maxScore = 1.1754943508222875e-38; // FLT_MIN, as in SentencePiece
    for (let id = 0; id < n; id++) {
      const piece = opts.pieces[id]!;
      let type = opts.types === undefined ? PieceType.NORMAL : opts.types[id]!;
      if (!(type >= 1 && type <= 6)) type = PieceType.NORMAL;
      this.types[id] = type;
      const normal = type === PieceType.NORMAL || type === PieceType.USER_DEFINED || type === PieceType.UNUSED;
      const map = normal ? this.normalIds : this.reservedIds;
      if (!map.has(piece)) map.set(piece, id);
      if (type === PieceType.UNKNOWN && firstUnk < 0) firstUnk = id;
      if (type === PieceType.BYTE) {
        hasByte = true;
        const m = BYTE_PIECE_RE.exec(piece);
        if (m !== null) {
          const b = parseInt(m[1]!, 16);
          if (this.byteIds[b] === -1) this.byteIds[b] = id;
        }
      }
      if (type === PieceType.USER_DEFINED) {
        const key = piece[0]!;
        let list = this.userDefined.get(key);
        if (list === undefined) this.userDefined.set(key, (list = []));
        list.push(piece);
      }
      if (type === PieceType.NORMAL) {
        const s = this.scores[id]!;
        if (s < minScore) minScore = s;
        if (s > maxScore) maxScore = s;
      }
      if (normal) {
        let chars = 0;
        for (const _ of piece) chars++;
        if (chars > maxChars) maxChars = chars;
      }
    }
    for (const list of this.userDefined.values()) list.sort((a, b) => b.length - a.length);
    this.maxPieceChars = maxChars;
    this.unigramMinScore = minScore === Infinity ? 0 : minScore;
    this.unigramMaxScore = maxScore;
    this.byteFallback = opts.byteFallback ?? hasByte;
    this.parseSpecial = opts.parseSpecial ?? false;
    if (this.parseSpecial) {
      const specials: string[] = [];
      for (let id = 0; id < n; id++) {
        const t = this.types[id];
        if (t === PieceType.CONTROL || t === PieceType.UNKNOWN) specials.push(this.pieces[id]!);
      }
      if (specials.length > 0) {
        specials.sort((a, b) => b.length - a.length);
        this.specialRe = new RegExp(specials.map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"), "gu");
      }
    }

    const inRange = (id: number | undefined): id is number =>
      id !== undefined && Number.isInteger(id) && id >= 0 && id < n;
    if (opts.unkId !== undefined) this.unkId = inRange(opts.unkId) ? opts.unkId : null;
    else this.unkId = firstUnk >= 0 ? firstUnk : inRange(0) ? 0 : null;
    const bos = opts.bosId ?? 1;
    const eos = opts.eosId ?? 2;
    this.bosId = inRange(bos) ? bos : null;
    this.eosIds = inRange(eos) ? [eos] : [];
  }

  /** Builds a tokenizer from the bytes of a `tokenizer.model` file. */
  static fromModelBytes(
    bytes: Uint8Array,
    fileName: string,
    overrides: Partial<SentencePieceOptions> = {},
  ): SentencePieceTokenizer {
    const proto = parseSentencePieceModel(bytes, fileName);
    return SentencePieceTokenizer.fromModelProto(proto, fileName, overrides);
  }

  /** `overrides` replace the settings read from the model (e.g. source, parseSpecial). */
  static fromModelProto(
    proto: SentencePieceModelProto,
    fileName: string,
    overrides: Partial<SentencePieceOptions> = {},
  ): SentencePieceTokenizer {
    const { pieces, trainerSpec: t, normalizerSpec: ns } = proto;
    return new SentencePieceTokenizer({
      pieces: pieces.map((p) => p.piece),
      scores: pieces.map((p) => p.score),
      types: pieces.map((p) => p.type),
      modelType: t.modelType,
      byteFallback: t.byteFallback,
      unkId: t.unkId,
      bosId: t.bosId,
      eosId: t.eosId,
      treatWhitespaceAsSuffix: t.treatWhitespaceAsSuffix,
      addDummyPrefix: ns.addDummyPrefix,
      removeExtraWhitespaces: ns.removeExtraWhitespaces,
      escapeWhitespaces: ns.escapeWhitespaces,
      normalization: normalizationFromSpec(ns),
      source: "tokenizer.model",
      fileName,
      ...overrides,
    });
  }

  /** The piece string of `id` (as stored in the model). */
  piece(id: number): string | undefined {
    return this.pieces[id];
  }

  pieceType(id: number): number | undefined {
    return id >= 0 && id < this.vocabSize ? this.types[id] : undefined;
  }

  /** Id of a piece string (any type), or undefined. */
  pieceToId(piece: string): number | undefined {
    return this.reservedIds.get(piece) ?? this.normalIds.get(piece);
  }

  encode(text: string, addBos: boolean): number[] {
    const ids: number[] = [];
    if (addBos && this.bosId !== null) ids.push(this.bosId);
    if (this.specialRe === null) {
      this.encodeSection(text, ids);
      return ids;
    }
    let last = 0;
    for (const m of text.matchAll(this.specialRe)) {
      const id = this.reservedIds.get(m[0]);
      if (id === undefined) continue;
      this.encodeSection(text.slice(last, m.index), ids);
      ids.push(id);
      last = m.index! + m[0].length;
    }
    this.encodeSection(text.slice(last), ids);
    return ids;
  }

  /** Encodes text that contains no special tokens to handle, appending to `ids`. */
  private encodeSection(text: string, ids: number[]): void {
    const normalized = this.normalize(text);
    if (normalized.length === 0) return;
    const segments =
      this.modelType === "bpe"
        ? this.segmentBpe(normalized)
        : this.modelType === "unigram"
          ? this.segmentUnigram(normalized)
          : this.segmentChars(normalized);
    this.emit(segments, ids);
  }

  tokenBytes(id: number): Uint8Array {
    if (!(id >= 0 && id < this.vocabSize)) return EMPTY;
    const cached = this.bytesCache[id];
    if (cached !== undefined) return cached;
    let out: Uint8Array;
    const type = this.types[id]!;
    const piece = this.pieces[id]!;
    if (type === PieceType.CONTROL || type === PieceType.UNKNOWN) {
      out = EMPTY;
    } else if (type === PieceType.BYTE) {
      const m = BYTE_PIECE_RE.exec(piece);
      out = m !== null ? Uint8Array.of(parseInt(m[1]!, 16)) : utf8Encoder.encode(piece);
    } else {
      out = utf8Encoder.encode(piece.replaceAll(SPACE_SYMBOL, " "));
    }
    this.bytesCache[id] = out;
    return out;
  }

  /**
   * SentencePiece's normalizer: character normalization, then whitespace handling
   * (remove_extra_whitespaces, add_dummy_prefix, escape_whitespaces).
   */
  normalize(text: string): string {
    if (text.length === 0) return "";
    switch (this.normalization) {
      case "identity":
        break;
      case "nfkc":
        text = text.normalize("NFKC");
        break;
      case "nfkc_cf":
        text = text.normalize("NFKC").toLowerCase();
        break;
      case "nmt_nfkc":
        text = nmtRules(text).normalize("NFKC");
        break;
      case "nmt_nfkc_cf":
        text = nmtRules(text).normalize("NFKC").toLowerCase();
        break;
    }
    const space = this.escapeWhitespaces ? SPACE_SYMBOL : " ";
    const removeExtra = this.removeExtraWhitespaces;
    let i = 0;
    if (removeExtra) {
      while (i < text.length && text.charCodeAt(i) === 0x20) i++;
    }
    if (i >= text.length) return "";
    let out = "";
    if (this.addDummyPrefix && !this.treatWhitespaceAsSuffix) out += space;
    let prevSpace = removeExtra;
    let runStart = i;
    // Copy runs of non-space characters in one go.
    for (; i < text.length; i++) {
      if (text.charCodeAt(i) !== 0x20) {
        prevSpace = false;
        continue;
      }
      out += text.slice(runStart, i);
      runStart = i + 1;
      if (removeExtra && prevSpace) continue;
      out += space;
      prevSpace = true;
    }
    out += text.slice(runStart);
    if (removeExtra) {
      let end = out.length;
      while (end >= space.length && out.endsWith(space, end)) end -= space.length;
      out = out.slice(0, end);
    }
    if (this.addDummyPrefix && this.treatWhitespaceAsSuffix) out += space;
    return out;
  }

  /** Initial symbols: user-defined pieces (longest match) or single code points. */
  private initialSymbols(text: string): BpeSymbol[] {
    const symbols: BpeSymbol[] = [];
    const hasUser = this.userDefined.size > 0;
    let pos = 0;
    while (pos < text.length) {
      let len = 0;
      if (hasUser) {
        const list = this.userDefined.get(text[pos]!);
        if (list !== undefined) {
          for (const p of list) {
            if (text.startsWith(p, pos)) {
              len = p.length;
              break;
            }
          }
        }
      }
      if (len === 0) {
        const c = text.charCodeAt(pos);
        len =
          c >= 0xd800 && c <= 0xdbff && pos + 1 < text.length && (text.charCodeAt(pos + 1) & 0xfc00) === 0xdc00
            ? 2
            : 1;
      }
      const index = symbols.length;
      symbols.push({ start: pos, end: pos + len, prev: index - 1, next: -1 });
      pos += len;
      if (pos < text.length) symbols[index]!.next = index + 1;
    }
    return symbols;
  }

  /** SentencePiece BPE: merge the best-scoring adjacent pair until none is in the vocabulary. */
  private segmentBpe(text: string): string[] {
    const symbols = this.initialSymbols(text);
    const heap = new PairHeap();
    /** merged UNUSED piece -> the two pieces it came from (SentencePiece re-splits those). */
    let revMerge: Map<string, [string, string]> | null = null;

    const addPair = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const l = symbols[left]!;
      const r = symbols[right]!;
      const piece = text.slice(l.start, r.end);
      const id = this.normalIds.get(piece);
      if (id === undefined) return;
      heap.push({ score: this.scores[id]!, left, right, size: r.end - l.start });
      if (this.types[id] === PieceType.UNUSED) {
        (revMerge ??= new Map()).set(piece, [text.slice(l.start, l.end), text.slice(r.start, r.end)]);
      }
    };

    for (let i = 1; i < symbols.length; i++) addPair(i - 1, i);

    for (let top = heap.pop(); top !== undefined; top = heap.pop()) {
      const l = symbols[top.left]!;
      const r = symbols[top.right]!;
      // Stale entry: one side was merged away or grew since this pair was queued.
      if (l.end === l.start || r.end === r.start || l.end !== r.start || r.end - l.start !== top.size) continue;
      l.end = r.end;
      l.next = r.next;
      if (r.next >= 0) symbols[r.next]!.prev = top.left;
      r.start = r.end; // mark empty
      addPair(l.prev, top.left);
      addPair(top.left, l.next);
    }

    const out: string[] = [];
    const resegment = (w: string): void => {
      const id = this.normalIds.get(w);
      const split = id !== undefined && this.types[id] === PieceType.UNUSED ? revMerge?.get(w) : undefined;
      if (split === undefined) {
        out.push(w);
        return;
      }
      resegment(split[0]);
      resegment(split[1]);
    };
    for (let i = symbols.length > 0 ? 0 : -1; i >= 0; i = symbols[i]!.next) {
      const s = symbols[i]!;
      const w = text.slice(s.start, s.end);
      if (revMerge === null) out.push(w);
      else resegment(w);
    }
    return out;
  }

  /** SentencePiece unigram: Viterbi over the lattice of vocabulary pieces. */
  private segmentUnigram(text: string): string[] {
    // Code point boundaries (UTF-16 offsets).
    const bounds: number[] = [0];
    for (let i = 0; i < text.length; ) {
      const c = text.charCodeAt(i);
      i += c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00 ? 2 : 1;
      bounds.push(i);
    }
    const m = bounds.length - 1;
    const bestScore = new Float64Array(m + 1);
    const startsAt = new Int32Array(m + 1).fill(-1);
    const unkScore = this.unigramMinScore - UNK_PENALTY;
    for (let s = 0; s < m; s++) {
      if (s > 0 && startsAt[s] === -1) continue; // unreachable (cannot happen: unk covers each char)
      const base = bestScore[s]!;
      let hasSingle = false;
      const maxE = Math.min(m, s + this.maxPieceChars);
      for (let e = s + 1; e <= maxE; e++) {
        const piece = text.slice(bounds[s]!, bounds[e]!);
        const id = this.normalIds.get(piece);
        if (id === undefined) continue;
        const type = this.types[id]!;
        if (type === PieceType.UNUSED) continue;
        const score =
          type === PieceType.USER_DEFINED
            ? utf8Encoder.encode(piece).length * this.unigramMaxScore - 0.1
            : this.scores[id]!;
        const cand = base + score;
        if (startsAt[e] === -1 || cand > bestScore[e]!) {
          bestScore[e] = cand;
          startsAt[e] = s;
        }
        if (e === s + 1) hasSingle = true;
      }
      if (!hasSingle) {
        const cand = base + unkScore;
        if (startsAt[s + 1] === -1 || cand > bestScore[s + 1]!) {
          bestScore[s + 1] = cand;
          startsAt[s + 1] = s;
        }
      }
    }
    const out: string[] = [];
    for (let e = m; e > 0; e = startsAt[e]!) out.push(text.slice(bounds[startsAt[e]!]!, bounds[e]!));
    return out.reverse();
  }

  private segmentChars(text: string): string[] {
    return this.initialSymbols(text).map((s) => text.slice(s.start, s.end));
  }

  /** Pieces -> ids: unknown pieces become byte pieces (byte fallback) or one fused unk id. */
  private emit(segments: string[], ids: number[]): void {
    let prevUnk = false;
    for (const w of segments) {
      const id = this.reservedIds.get(w) ?? this.normalIds.get(w);
      const isUnk = id === undefined || id === this.unkId;
      if (!isUnk) {
        ids.push(id);
        prevUnk = false;
        continue;
      }
      if (this.byteFallback) {
        for (const b of utf8Encoder.encode(w)) {
          const bid = this.byteIds[b]!;
          if (bid >= 0) ids.push(bid);
          else if (this.unkId !== null) ids.push(this.unkId);
        }
        prevUnk = false;
        continue;
      }
      if (this.unkId === null) continue;
      if (!prevUnk) ids.push(this.unkId);
      prevUnk = true;
    }
  }
}

/** Which approximation of the model's normalization rule to use. */
export function normalizationFromSpec(spec: NormalizerSpecInfo): NormalizationKind {
  if (spec.precompiledCharsmap.length === 0) return "identity";
  switch (spec.name) {
    case "nmt_nfkc":
    case "nfkc":
    case "nfkc_cf":
    case "nmt_nfkc_cf":
      return spec.name;
    default:
      return "nfkc";
  }
}

/**
 * The NMT part of nmt_nfkc: drop control characters, turn other whitespace-like characters
 * into a plain space (an approximation of SentencePiece's compiled rule).
 */
function nmtRules(text: string): string {
  return text
    .replace(/[\u0001-\u0008\u000B\u000E-\u001F\u007F\u008F\u009F]/g, "")
    .replace(/[\t\n\f\r]/g, " ");
}
