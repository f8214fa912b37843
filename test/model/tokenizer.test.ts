import { test, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync, mkdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { LlameshError } from "../../src/core/errors.js";
import {
  PieceType,
  SentencePieceTokenizer,
  parseSentencePieceModel,
} from "../../src/model/sentencepiece.js";
import {
  loadTokenizer,
  loadTokenizerSync,
  tokenizerFromSentencePiece,
  type ConfiguredTokenizer,
} from "../../src/model/tokenizer.js";
import type { Tokenizer } from "../../src/model/tokenizer-types.js";

const MODELS = path.resolve(process.cwd(), "../shared/models");
const LLAMA2 = path.join(MODELS, "llama2-tokenizer");
const STORIES = path.join(MODELS, "stories260K");
const haveLlama2 = existsSync(path.join(LLAMA2, "tokenizer.json")) && existsSync(path.join(LLAMA2, "tokenizer.model"));
const haveStories =
  existsSync(path.join(STORIES, "tokenizer.json")) && existsSync(path.join(STORIES, "tokenizer.model"));
const skipLlama2 = haveLlama2 ? false : `shared test model missing: ${LLAMA2} (tokenizer.json + tokenizer.model)`;
const skipStories = haveStories ? false : `shared test model missing: ${STORIES} (tokenizer.json + tokenizer.model)`;

const tmpRoot = mkdtempSync(path.join(os.tmpdir(), "llamesh-tokenizer-test-"));
after(() => rmSync(tmpRoot, { recursive: true, force: true }));
let tmpCount = 0;
function tmpDir(files: Record<string, string | Uint8Array> = {}): string {
  const dir = path.join(tmpRoot, `d${tmpCount++}`);
  mkdirSync(dir);
  for (const [name, content] of Object.entries(files)) writeFileSync(path.join(dir, name), content);
  return dir;
}

/** Concatenated tokenBytes of `ids`, decoded as UTF-8. */
function detok(tok: Tokenizer, ids: readonly number[]): string {
  return Buffer.concat(ids.map((id) => tok.tokenBytes(id))).toString("utf8");
}

function assertLlamesh(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LlameshError, `expected LlameshError, got ${String(e)}`);
    for (const f of fragments) assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${f}`);
    assert.ok(!e.message.includes("\n"), "one-line message");
    return true;
  });
}

async function assertLlameshAsync(p: Promise<unknown>, ...fragments: string[]): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof LlameshError, `expected LlameshError, got ${String(e)}`);
    for (const f of fragments) assert.ok(e.message.includes(f), `message ${JSON.stringify(e.message)} lacks ${f}`);
    return true;
  });
}

const TRICKY = [
  "",
  " ",
  "   ",
  "Hello world",
  " Hello",
  "  leading two",
  "trailing ",
  "runs   of    spaces",
  "line one\nline two\n\n\nafter blank lines\n",
  "\ttabbed\tcolumns\t",
  "\r\nwindows\r\n",
  "emoji 😀🎉👩‍👩‍👧 and flags 🇫🇷",
  "café naïve Ångström façade résumé",
  "e\u0301 composed vs é precomposed",
  "Привет, мир! Как дела?",
  "你好，世界。日本語のテキスト、한국어",
  "mixed: 123 + 4.56 = ∑ 𝔘 ✓ «quotes» — dash",
  "code: function f(x) { return x * 2; } // comment",
  "\u200bzero\u200bwidth\ufeffbom",
  "▁literal metaspace▁",
  "<s>[INST] hi [/INST]</s><unk>",
  "The quick brown fox jumps over the lazy dog. ".repeat(40) +
    "Il était une fois, dans un pays lointain, une petite fille. Однажды в студёную зимнюю пору. 昔々あるところに。",
];

function randomStrings(count: number): string[] {
  let s = 0x9e3779b9;
  const rnd = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const parts = [" ", " ", "  ", "\n", "\t", "e", "th", "ing", "The", "é", "ö", "П", "ри", "中", "😀", "𝔘", ".", ",", "'", "0", "1", "ア", "한", "ا", "<", ">", "s", "/"];
  const words = "the quick brown fox jumps over lazy dog return hello world tokenizer encoding".split(" ");
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    let str = "";
    const n = Math.floor(rnd() * 30);
    for (let j = 0; j < n; j++) {
      str += rnd() < 0.5 ? parts[Math.floor(rnd() * parts.length)] : words[Math.floor(rnd() * words.length)]!;
    }
    out.push(str);
  }
  return out;
}

// -------------------------------------------------------------------------------------------
// Llama 2 tokenizer: tokenizer.json and tokenizer.model agree
// -------------------------------------------------------------------------------------------

let llamaJson: ConfiguredTokenizer | undefined;
let llamaModel: ConfiguredTokenizer | undefined;
function llama(): { json: ConfiguredTokenizer; model: ConfiguredTokenizer } {
  llamaJson ??= loadTokenizerSync(LLAMA2);
  llamaModel ??= tokenizerFromSentencePiece(readFileSync(path.join(LLAMA2, "tokenizer.model")), {
    fileName: path.join(LLAMA2, "tokenizer.model"),
  });
  return { json: llamaJson, model: llamaModel };
}

test("llama2: metadata of both paths", { skip: skipLlama2 }, async () => {
  const { json, model } = llama();
  assert.equal(json.source, "tokenizer.json");
  assert.equal(model.source, "tokenizer.model");
  for (const t of [json, model]) {
    assert.equal(t.vocabSize, 32000);
    assert.equal(t.bosId, 1);
    assert.deepEqual(t.eosIds, [2]);
    assert.equal(t.addBosToken, true);
  }
  // The folder loader with a preference for tokenizer.model gives the same tokenizer.
  const viaLoader = await loadTokenizer(LLAMA2, { prefer: "tokenizer.model" });
  assert.equal(viaLoader.source, "tokenizer.model");
  assert.deepEqual(viaLoader.encode("Hello world", true), [1, 15043, 3186]);
});

test("llama2: known ids", { skip: skipLlama2 }, () => {
  const { json, model } = llama();
  for (const t of [json, model]) {
    assert.deepEqual(t.encode("Hello world", true), [1, 15043, 3186]);
    assert.deepEqual(t.encode("Hello world", false), [15043, 3186]);
    assert.deepEqual(t.encode("", true), [1]);
    assert.deepEqual(t.encode("", false), []);
    assert.deepEqual(t.encode(" Hello", false), [29871, 15043]);
    assert.deepEqual(t.encode("a\nb", false), [263, 13, 29890]);
  }
});

test("llama2: tokenizer.json and tokenizer.model give identical ids on tricky strings", { skip: skipLlama2 }, () => {
  const { json, model } = llama();
  for (const text of TRICKY) {
    for (const addBos of [false, true]) {
      assert.deepEqual(model.encode(text, addBos), json.encode(text, addBos), `text ${JSON.stringify(text)}`);
    }
  }
});

test("llama2: identical ids on 300 pseudo-random strings", { skip: skipLlama2 }, () => {
  const { json, model } = llama();
  for (const text of randomStrings(300)) {
    assert.deepEqual(model.encode(text, false), json.encode(text, false), `text ${JSON.stringify(text)}`);
  }
});

test("llama2: special token strings become their ids in both paths", { skip: skipLlama2 }, () => {
  const { json, model } = llama();
  const text = "a<s>b</s>";
  const ids = json.encode(text, false);
  assert.deepEqual(model.encode(text, false), ids);
  assert.ok(ids.includes(1) && ids.includes(2));
  // Plain SentencePiece (parseSpecial off) treats them as text, like the sentencepiece library.
  const plain = SentencePieceTokenizer.fromModelBytes(readFileSync(path.join(LLAMA2, "tokenizer.model")), "t");
  const plainIds = plain.encode(text, false);
  assert.ok(!plainIds.includes(1) && !plainIds.includes(2));
  assert.equal(detok(plain, plainIds), " a<s>b</s>");
});

test("llama2: tokenBytes round trip gives ' ' + text", { skip: skipLlama2 }, () => {
  const { json, model } = llama();
  const texts = ["Hello world", "emoji 😀🎉 ok", "🇫🇷", "café Привет 你好", "a\nb\tc", "  two leading", "x  y  "];
  for (const t of [json, model]) {
    for (const text of texts) {
      const ids = t.encode(text, true);
      assert.equal(detok(t, ids), " " + text, `${t.source}: ${JSON.stringify(text)}`);
    }
    // Emoji go through byte-fallback pieces: each one is a single byte.
    const emojiIds = t.encode("😀", false);
    assert.ok(emojiIds.length >= 4);
    assert.deepEqual(t.tokenBytes(emojiIds[emojiIds.length - 1]!), Uint8Array.of(0x80));
    assert.equal(t.tokenBytes(1).length, 0); // <s>
    assert.equal(t.tokenBytes(2).length, 0); // </s>
    assert.equal(t.tokenBytes(0).length, 0); // <unk>
    assert.equal(t.tokenBytes(-1).length, 0);
    assert.equal(t.tokenBytes(32000).length, 0);
  }
  for (const text of TRICKY.slice(1)) {
    if (text.includes("▁") || text.includes("<s>")) continue;
    assert.equal(detok(model, model.encode(text, false)), " " + text);
    assert.equal(detok(json, json.encode(text, false)), " " + text);
  }
});

test("llama2: a few thousand characters encode quickly", { skip: skipLlama2 }, () => {
  const { json, model } = llama();
  const text = TRICKY[TRICKY.length - 1]!.repeat(5) + "😀".repeat(500) + " ".repeat(2000) + "a".repeat(3000);
  const t0 = performance.now();
  const ids = model.encode(text, true);
  const ms = performance.now() - t0;
  assert.ok(ms < 1000, `took ${ms} ms`);
  assert.deepEqual(ids, json.encode(text, true));
});

// -------------------------------------------------------------------------------------------
// stories260K: the SentencePiece normalizer collapses whitespace, tokenizer.json does not
// -------------------------------------------------------------------------------------------

test("stories260K: both paths agree on simple text", { skip: skipStories }, async () => {
  const json = await loadTokenizer(STORIES);
  const model = await loadTokenizer(STORIES, { prefer: "tokenizer.model" });
  assert.equal(json.source, "tokenizer.json");
  assert.equal(model.source, "tokenizer.model");
  assert.equal(json.vocabSize, 512);
  assert.equal(model.vocabSize, 512);
  assert.equal(model.bosId, 1);
  assert.deepEqual(model.eosIds, [2]);
  for (const text of ["Once upon a time", "Once upon a time, there was a little girl named Lily.", "Hello world"]) {
    assert.deepEqual(model.encode(text, true), json.encode(text, true));
    assert.equal(detok(model, model.encode(text, true)), " " + text);
  }
  assert.deepEqual(model.encode("Once upon a time", true), [1, 403, 407, 261, 378]);
});

test("stories260K: remove_extra_whitespaces applies only to tokenizer.model", { skip: skipStories }, () => {
  const json = loadTokenizerSync(STORIES);
  const model = loadTokenizerSync(STORIES, { prefer: "tokenizer.model" });
  const proto = parseSentencePieceModel(readFileSync(path.join(STORIES, "tokenizer.model")), "stories");
  assert.equal(proto.normalizerSpec.removeExtraWhitespaces, true);
  assert.equal(proto.trainerSpec.byteFallback, true);
  assert.equal(proto.trainerSpec.modelType, "bpe");

  const collapsed = model.encode("Once upon", true);
  assert.deepEqual(model.encode("Once  upon", true), collapsed);
  assert.deepEqual(model.encode("  Once   upon  ", true), collapsed);
  assert.notDeepEqual(json.encode("Once  upon", true), json.encode("Once upon", true));
  assert.notDeepEqual(json.encode("Once  upon", true), model.encode("Once  upon", true));
  assert.equal(detok(json, json.encode("Once  upon", true)), " Once  upon");
  assert.equal(detok(model, model.encode("Once  upon", true)), " Once upon");
  // Only spaces: nothing left after normalization.
  assert.deepEqual(model.encode("   ", true), [1]);
});

// -------------------------------------------------------------------------------------------
// Folder loading and configuration
// -------------------------------------------------------------------------------------------

test("config files: add_bos_token false, eos ids unioned", { skip: skipStories }, () => {
  const dir = tmpDir({
    "tokenizer_config.json": JSON.stringify({ add_bos_token: false, bos_token: { content: "<s>" }, eos_token: "</s>" }),
    "generation_config.json": JSON.stringify({ eos_token_id: [2, 5] }),
    "config.json": JSON.stringify({ bos_token_id: 1, eos_token_id: 7 }),
  });
  copyFileSync(path.join(STORIES, "tokenizer.model"), path.join(dir, "tokenizer.model"));
  const t = loadTokenizerSync(dir);
  assert.equal(t.source, "tokenizer.model");
  assert.equal(t.addBosToken, false);
  assert.equal(t.bosId, 1);
  assert.deepEqual(t.eosIds, [2, 5, 7]);
  assert.equal(t.encode("Once upon", true)[0] === 1, false);
  assert.deepEqual(t.encode("Once upon", true), t.encode("Once upon", false));
});

test("missing directory -> LlameshError naming it", async () => {
  const missing = path.join(tmpRoot, "no-such-model");
  await assertLlameshAsync(loadTokenizer(missing), missing, "no such directory");
  assertLlamesh(() => loadTokenizerSync(missing), missing);
});

test("directory without tokenizer files -> LlameshError", async () => {
  const dir = tmpDir({ "config.json": "{}" });
  await assertLlameshAsync(loadTokenizer(dir), dir, "no tokenizer.json or tokenizer.model");
  assertLlamesh(() => loadTokenizerSync(dir), dir, "no tokenizer.json or tokenizer.model");
});

test("invalid JSON -> LlameshError naming the file", async () => {
  const dir = tmpDir({ "tokenizer.json": "{ not json" });
  await assertLlameshAsync(loadTokenizer(dir), path.join(dir, "tokenizer.json"), "invalid JSON");
  const dir2 = tmpDir({ "tokenizer_config.json": "[1,", "tokenizer.model": "x" });
  assertLlamesh(() => loadTokenizerSync(dir2), path.join(dir2, "tokenizer_config.json"), "invalid JSON");
});

test("truncated tokenizer.model -> LlameshError naming the file", { skip: skipLlama2 }, async () => {
  const bytes = readFileSync(path.join(LLAMA2, "tokenizer.model"));
  const dir = tmpDir({ "tokenizer.model": bytes.subarray(0, 1001) });
  const file = path.join(dir, "tokenizer.model");
  await assertLlameshAsync(loadTokenizer(dir), file, "not a valid SentencePiece model");
  assertLlamesh(() => tokenizerFromSentencePiece(bytes.subarray(0, bytes.length - 3), { fileName: "cut.model" }), "cut.model");
});

test("garbage and empty tokenizer.model -> LlameshError naming the file", () => {
  const garbage = new Uint8Array(4096);
  let x = 7;
  for (let i = 0; i < garbage.length; i++) garbage[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  assertLlamesh(() => parseSentencePieceModel(garbage, "garbage.model"), "garbage.model", "SentencePiece");
  assertLlamesh(() => parseSentencePieceModel(new Uint8Array(0), "empty.model"), "empty.model", "no pieces");
  const json = new TextEncoder().encode('{"model": {"type": "BPE"}}');
  assertLlamesh(() => parseSentencePieceModel(json, "json.model"), "json.model");
  const dir = tmpDir({ "tokenizer.model": garbage });
  assertLlamesh(() => loadTokenizerSync(dir), path.join(dir, "tokenizer.model"));
});

// -------------------------------------------------------------------------------------------
// Hand-made SentencePiece models (protobuf written here) for the less common features
// -------------------------------------------------------------------------------------------

function varint(v: number): number[] {
  let b = BigInt.asUintN(64, BigInt(v));
  const out: number[] = [];
  do {
    let byte = Number(b & 0x7fn);
    b >>= 7n;
    if (b !== 0n) byte |= 0x80;
    out.push(byte);
  } while (b !== 0n);
  return out;
}
const utf8 = (s: string): number[] => [...new TextEncoder().encode(s)];
const lenField = (field: number, payload: number[]): number[] => [...varint((field << 3) | 2), ...varint(payload.length), ...payload];
const varField = (field: number, v: number): number[] => [...varint(field << 3), ...varint(v)];
function floatField(field: number, v: number): number[] {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, v, true);
  return [...varint((field << 3) | 5), ...b];
}

interface FakePiece {
  piece: string;
  score?: number;
  type?: number;
}
function buildModel(pieces: FakePiece[], trainer: number[] = [], normalizer: number[] | null = null): Uint8Array {
  const out: number[] = [];
  for (const p of pieces) {
    const body = [...lenField(1, utf8(p.piece)), ...floatField(2, p.score ?? 0)];
    if (p.type !== undefined) body.push(...varField(3, p.type));
    out.push(...lenField(1, body));
  }
  if (trainer.length > 0) out.push(...lenField(2, trainer));
  if (normalizer !== null) out.push(...lenField(3, normalizer));
  return Uint8Array.from(out);
}

const BASE: FakePiece[] = [
  { piece: "<unk>", type: PieceType.UNKNOWN },
  { piece: "<s>", type: PieceType.CONTROL },
  { piece: "</s>", type: PieceType.CONTROL },
];

test("protobuf defaults when fields are absent; negative ids", () => {
  const proto = parseSentencePieceModel(buildModel([...BASE, { piece: "a" }]), "defaults.model");
  assert.equal(proto.pieces.length, 4);
  assert.deepEqual(proto.pieces[3], { piece: "a", score: 0, type: PieceType.NORMAL });
  assert.equal(proto.trainerSpec.modelType, "unigram");
  assert.equal(proto.trainerSpec.unkId, 0);
  assert.equal(proto.trainerSpec.bosId, 1);
  assert.equal(proto.trainerSpec.eosId, 2);
  assert.equal(proto.trainerSpec.padId, -1);
  assert.equal(proto.trainerSpec.byteFallback, false);
  assert.equal(proto.normalizerSpec.addDummyPrefix, true);
  assert.equal(proto.normalizerSpec.removeExtraWhitespaces, true);
  assert.equal(proto.normalizerSpec.escapeWhitespaces, true);

  const withSpecs = parseSentencePieceModel(
    buildModel(
      [...BASE, { piece: "a", score: -1.5 }],
      [...varField(3, 2), ...varField(35, 1), ...varField(41, -1), ...varField(42, 1), ...varField(43, 3), ...lenField(2, utf8("x"))],
      [...lenField(1, utf8("identity")), ...varField(3, 0), ...varField(4, 0)],
    ),
    "specs.model",
  );
  assert.equal(withSpecs.trainerSpec.modelType, "bpe");
  assert.equal(withSpecs.trainerSpec.byteFallback, true);
  assert.equal(withSpecs.trainerSpec.bosId, -1);
  assert.equal(withSpecs.trainerSpec.eosId, 1);
  assert.equal(withSpecs.trainerSpec.padId, 3);
  assert.equal(withSpecs.pieces[3]!.score, -1.5);
  assert.equal(withSpecs.normalizerSpec.name, "identity");
  assert.equal(withSpecs.normalizerSpec.addDummyPrefix, false);
  assert.equal(withSpecs.normalizerSpec.removeExtraWhitespaces, false);
  const t = tokenizerFromSentencePiece(
    buildModel([...BASE, { piece: "a" }], [...varField(3, 2), ...varField(41, -1), ...varField(42, 1)]),
  );
  assert.equal(t.bosId, null);
  assert.deepEqual(t.eosIds, [1]);
  assert.deepEqual(t.encode("a", true), [0, 3]); // "▁" is unknown, no byte fallback

  assertLlamesh(() => parseSentencePieceModel(buildModel([{ piece: "a", type: 9 }]), "type.model"), "type.model", "type 9");
});

test("BPE: highest score merges first, UNUSED pieces are split back, USER_DEFINED match whole", () => {
  const pieces: FakePiece[] = [
    ...BASE,
    { piece: "▁", score: -1 },
    { piece: "h", score: -2 },
    { piece: "e", score: -2 },
    { piece: "l", score: -2 },
    { piece: "o", score: -2 },
    { piece: "x", score: -2 },
    { piece: "y", score: -2 },
    { piece: "ll", score: -0.5 }, // 10
    { piece: "he", score: -0.7 }, // 11
    { piece: "hell", score: -0.8 }, // 12
    { piece: "hello", score: -0.9 }, // 13
    { piece: "▁hello", score: -1.0 }, // 14
    { piece: "el", score: -0.1 }, // 15: best first merge in "hello" would be e+l...
    { piece: "xy", score: 5, type: PieceType.UNUSED }, // 16
    { piece: "<tag>", type: PieceType.USER_DEFINED }, // 17
    { piece: "▁x", score: -3 }, // 18
  ];
  const model = buildModel(pieces, [...varField(3, 2)]);
  const t = SentencePieceTokenizer.fromModelBytes(model, "bpe.model");
  // "▁hello": e+l (-0.1) first -> h,el,l,o; no "hel"/"ell" piece, so it stops: ▁ h el l o.
  assert.deepEqual(t.encode("hello", false), [3, 4, 15, 6, 7]);
  const noEl = SentencePieceTokenizer.fromModelBytes(
    buildModel(pieces.map((p) => (p.piece === "el" ? { ...p, piece: "zz" } : p)), [...varField(3, 2)]),
    "bpe2.model",
  );
  // ll, he, hell, hello, ▁hello.
  assert.deepEqual(noEl.encode("hello", false), [14]);
  assert.deepEqual(noEl.encode("hello hello", true), [1, 14, 14]);
  // xy (UNUSED, score 5) merges first, so ▁x cannot form, then is split back into x y.
  assert.deepEqual(t.encode("xy", false), [3, 8, 9]);
  // User-defined piece is one symbol.
  assert.deepEqual(t.encode("x<tag>y", false), [18, 17, 9]);
  // No byte fallback: unknown characters become <unk>, consecutive ones fused.
  assert.deepEqual(t.encode("hq€o", false), [3, 4, 0, 7]);
  assert.equal(detok(t, [3, 4, 0, 7, 17, 1]), " h" + "o<tag>");
});

test("normalizer flags: remove_extra_whitespaces, add_dummy_prefix, escape_whitespaces", () => {
  const pieces = ["<unk>", "<s>", "</s>", "▁", "a", "b", " "];
  const types = [2, 3, 3, 1, 1, 1, 1];
  const scores = pieces.map(() => 0);
  const mk = (o: object): SentencePieceTokenizer =>
    new SentencePieceTokenizer({ pieces, scores, types, modelType: "bpe", ...o });
  const collapse = mk({ removeExtraWhitespaces: true });
  assert.equal(collapse.normalize("  a   b  "), "▁a▁b");
  assert.equal(collapse.normalize("   "), "");
  assert.equal(collapse.normalize(""), "");
  assert.equal(collapse.normalize("a\t b"), "▁a\t▁b");
  const keep = mk({ removeExtraWhitespaces: false });
  assert.equal(keep.normalize("  a   b  "), "▁▁▁a▁▁▁b▁▁");
  assert.equal(keep.normalize(""), "");
  const noPrefix = mk({ removeExtraWhitespaces: false, addDummyPrefix: false });
  assert.equal(noPrefix.normalize("a b"), "a▁b");
  const noEscape = mk({ removeExtraWhitespaces: true, escapeWhitespaces: false });
  assert.equal(noEscape.normalize(" a  b "), " a b");
  assert.deepEqual(noEscape.encode("a b", false), [6, 4, 6, 5]);
  const nfkc = mk({ normalization: "nfkc" });
  assert.equal(nfkc.normalize("ﬁ①"), "▁fi1");
  // Arrays path (as a GGUF loader would use it).
  const viaArrays = tokenizerFromSentencePiece({ pieces, scores, types, modelType: "bpe" });
  assert.equal(viaArrays.source, "gguf");
  assert.deepEqual(viaArrays.encode("a b", true), [1, 3, 4, 3, 5]);
});

test("unigram: Viterbi picks the best-scoring segmentation", () => {
  const pieces: FakePiece[] = [
    ...BASE,
    { piece: "▁", score: -1 }, // 3
    { piece: "a", score: -2 }, // 4
    { piece: "b", score: -2 }, // 5
    { piece: "ab", score: -3 }, // 6
    { piece: "▁a", score: -2.5 }, // 7
    { piece: "▁ab", score: -6 }, // 8
  ];
  const t = tokenizerFromSentencePiece(buildModel(pieces, [...varField(3, 1)]), { fileName: "uni.model" });
  // ▁ab: -6; ▁a+b: -4.5; ▁+ab: -4; ▁+a+b: -5.
  assert.deepEqual(t.encode("ab", false), [3, 6]);
  // "c" is unknown (score min - 10); consecutive unknowns fuse into one <unk>.
  assert.deepEqual(t.encode("abcc", false), [3, 6, 0]);
  assert.deepEqual(t.encode("a", true), [1, 7]);
});

// -------------------------------------------------------------------------------------------
// tokenizer.json with a byte-level (GPT-2 style) decoder
// -------------------------------------------------------------------------------------------

function byteLevelAlphabet(): string[] {
  const chars: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    chars.push(String.fromCodePoint(printable ? b : 256 + extra++));
  }
  return chars;
}

test("tokenizer.json with ByteLevel decoder: tokenBytes maps the byte alphabet back", async () => {
  const alphabet = byteLevelAlphabet();
  const vocab: Record<string, number> = {};
  alphabet.forEach((c, i) => (vocab[c] = i));
  vocab["Ġw"] = 256;
  vocab["Ġwo"] = 257;
  vocab["<|begin|>"] = 258;
  vocab["<|end|>"] = 259;
  const json = {
    version: "1.0",
    added_tokens: [
      { id: 258, content: "<|begin|>", special: true, single_word: false, lstrip: false, rstrip: false, normalized: false },
      { id: 259, content: "<|end|>", special: true, single_word: false, lstrip: false, rstrip: false, normalized: false },
    ],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<|begin|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [],
      special_tokens: { "<|begin|>": { id: "<|begin|>", ids: [258], tokens: ["<|begin|>"] } },
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", vocab, merges: ["Ġ w", "Ġw o"], dropout: null, unk_token: null, byte_fallback: false },
  };
  const dir = tmpDir({
    "tokenizer.json": JSON.stringify(json),
    "config.json": JSON.stringify({ eos_token_id: [259, 258] }),
  });
  const t = await loadTokenizer(dir);
  assert.equal(t.source, "tokenizer.json");
  assert.equal(t.vocabSize, 260);
  assert.equal(t.bosId, 258); // from the post-processor template
  assert.equal(t.addBosToken, true);
  assert.deepEqual(t.eosIds, [259, 258]);
  const text = "hello world, wörld 😀\n";
  const ids = t.encode(text, true);
  assert.equal(ids[0], 258);
  assert.ok(ids.includes(257));
  assert.equal(detok(t, ids), text);
  assert.equal(t.tokenBytes(259).length, 0);
  assert.deepEqual(t.tokenBytes(257), new TextEncoder().encode(" wo"));
});
