/**
 * Byte-level BPE tokenizers (Llama 3.x, Qwen2.5/3): the tokenizer.json folder path and the GGUF
 * vocabulary path (tokenizer.ggml.model "gpt2") against the reference, @huggingface/tokenizers
 * run directly on the published tokenizer.json (no llamesh code in between), and against ids
 * that the Hugging Face tokenizers library (Rust, the Python package) gives for the same files.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { LlameshError } from "../../src/core/errors.js";
import { readGgufMetadata, tokenizerFromGguf } from "../../src/model/gguf-tokenizer.js";
import { loadTokenizerFor, loadTokenizerForSync } from "../../src/model/open-tokenizer.js";
import { loadTokenizerSync, type ConfiguredTokenizer } from "../../src/model/tokenizer.js";
import { PieceType } from "../../src/model/sentencepiece.js";
import { tokenizerSpecFromFolder, writeGguf, writeTokenizerGguf, tokenizerMetadata, type GgufKV } from "../../src/synthetic/gguf-writer.js";
import { runCli } from "../helpers/cli.js";
import { SHARED_MODELS, tempDir } from "../helpers/models.js";
import { BPE_TRICKY as TRICKY } from "./tokenizer-strings.js";

const LLAMA3 = path.join(SHARED_MODELS, "tokenizers", "llama3.1");
const QWEN3 = path.join(SHARED_MODELS, "tokenizers", "qwen3");
const skipOf = (dir: string): string | false =>
  fs.existsSync(path.join(dir, "tokenizer.json")) ? false : `${dir}/tokenizer.json is absent (the shared test models are not on this machine)`;

/**
 * The published config.json / generation_config.json values of meta-llama/Llama-3.1-8B-Instruct
 * and Qwen/Qwen3-8B (only the token ids; the shared folders hold the tokenizer files alone).
 */
const FAMILIES = {
  llama3: {
    dir: LLAMA3,
    skip: skipOf(LLAMA3),
    vocabSize: 128256,
    config: { bos_token_id: 128000, eos_token_id: [128001, 128008, 128009], vocab_size: 128256 },
    generation: { bos_token_id: 128000, eos_token_id: [128001, 128008, 128009] },
  },
  qwen3: {
    dir: QWEN3,
    skip: skipOf(QWEN3),
    vocabSize: 151936,
    config: { bos_token_id: 151643, eos_token_id: 151645, vocab_size: 151936 },
    generation: { bos_token_id: 151643, eos_token_id: [151645, 151643], pad_token_id: 151643 },
  },
} as const;
type Family = keyof typeof FAMILIES;

/** A model folder: the shared tokenizer files plus the published configs. */
const folders = new Map<Family, string>();
function folder(f: Family): string {
  let dir = folders.get(f);
  if (dir === undefined) {
    dir = tempDir(`llamesh-${f}-`);
    for (const n of ["tokenizer.json", "tokenizer_config.json"]) fs.copyFileSync(path.join(FAMILIES[f].dir, n), path.join(dir, n));
    fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(FAMILIES[f].config));
    fs.writeFileSync(path.join(dir, "generation_config.json"), JSON.stringify(FAMILIES[f].generation));
    folders.set(f, dir);
  }
  return dir;
}

/** A vocabulary-only GGUF written from the folder, as llama.cpp's converter writes one. */
const ggufs = new Map<Family, string>();
function gguf(f: Family): string {
  let file = ggufs.get(f);
  if (file === undefined) {
    file = path.join(tempDir(), `${f}.gguf`);
    writeTokenizerGguf(file, tokenizerSpecFromFolder(folder(f)), FAMILIES[f].vocabSize);
    ggufs.set(f, file);
  }
  return file;
}

const toks = new Map<string, ConfiguredTokenizer>();
function tok(f: Family, via: "folder" | "gguf"): ConfiguredTokenizer {
  const key = `${f}/${via}`;
  let t = toks.get(key);
  if (t === undefined) {
    t = loadTokenizerForSync(via === "folder" ? folder(f) : gguf(f));
    toks.set(key, t);
  }
  return t;
}

/** The reference: @huggingface/tokenizers on the published files, nothing of ours in between. */
const refs = new Map<Family, HfTokenizer>();
function reference(f: Family): HfTokenizer {
  let r = refs.get(f);
  if (r === undefined) {
    const read = (n: string): Record<string, unknown> => JSON.parse(fs.readFileSync(path.join(FAMILIES[f].dir, n), "utf8")) as Record<string, unknown>;
    r = new HfTokenizer(read("tokenizer.json"), read("tokenizer_config.json"));
    refs.set(f, r);
  }
  return r;
}
const refIds = (f: Family, text: string, addSpecial: boolean): number[] => reference(f).encode(text, { add_special_tokens: addSpecial }).ids.slice();

function detok(t: ConfiguredTokenizer, ids: readonly number[]): string {
  return Buffer.concat(ids.map((id) => t.tokenBytes(id))).toString("utf8");
}

function assertLlamesh(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LlameshError, `expected LlameshError, got ${String(e)}`);
    for (const s of fragments) assert.ok(e.message.includes(s), `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(s)}`);
    assert.ok(!e.message.includes("\n"), `one-line message: ${JSON.stringify(e.message)}`);
    return true;
  });
}


for (const f of ["llama3", "qwen3"] as const) {
  const skip = FAMILIES[f].skip;

  test(`${f}: folder and GGUF paths give the reference ids on tricky strings, with and without BOS`, { skip }, () => {
    for (const via of ["folder", "gguf"] as const) {
      const t = tok(f, via);
      for (const text of TRICKY) {
        assert.deepEqual(t.encode(text, false), refIds(f, text, false), `${via}, no BOS: ${JSON.stringify(text.slice(0, 60))}`);
        // the reference adds BOS the way the model's tokenizer does (Llama 3's post-processor; Qwen: none)
        assert.deepEqual(t.encode(text, true), refIds(f, text, true), `${via}, BOS: ${JSON.stringify(text.slice(0, 60))}`);
      }
    }
  });

  test(`${f}: tokenBytes of the ids give the text back (streaming), special tokens give nothing`, { skip }, () => {
    for (const via of ["folder", "gguf"] as const) {
      const t = tok(f, via);
      for (const text of TRICKY) {
        if (text.includes("<|") || text.includes("\u0000")) continue;
        assert.equal(detok(t, t.encode(text, true)), text, `${via}: ${JSON.stringify(text.slice(0, 60))}`);
      }
      const special = f === "llama3" ? ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>"] : ["<|im_start|>", "<|im_end|>", "<|endoftext|>"];
      for (const s of special) {
        const ids = t.encode(s, false);
        assert.equal(ids.length, 1, `${via}: ${s} is one token`);
        assert.equal(t.tokenBytes(ids[0]!).length, 0, `${via}: ${s} prints nothing`);
      }
      // one emoji over several tokens: the first carries an incomplete UTF-8 sequence
      const ids = t.encode("👩‍👩‍👧", false);
      assert.ok(ids.length > 1);
      assert.deepEqual([...t.tokenBytes(ids[0]!)], [...Buffer.from("👩", "utf8")].slice(0, t.tokenBytes(ids[0]!).length));
      assert.equal(t.tokenBytes(-1).length, 0);
      assert.equal(t.tokenBytes(t.vocabSize).length, 0);
    }
  });
}

test("ids that the Hugging Face tokenizers library (Rust) gives for the same files", { skip: FAMILIES.llama3.skip || FAMILIES.qwen3.skip }, () => {
  // produced by `tokenizers` 0.23 (Python): Tokenizer.from_file(...).encode(text, add_special_tokens=False).ids
  const llama3: [string, number[]][] = [
    ["Hello world", [9906, 1917]],
    ["12345678", [4513, 10961, 2495]], // digits in groups of three: 123 456 78
    ["I'm HE'S", [40, 2846, 11947, 13575]],
    ["你好", [57668, 53901]],
    ["👩‍👩‍👧", [9468, 239, 102, 102470, 9468, 239, 102, 102470, 9468, 239, 100]],
    ["a\r\n\r\nb", [64, 881, 65]],
    ["  x", [220, 865]],
    ["<|begin_of_text|>hi<|eot_id|>", [128000, 6151, 128009]],
    ["<|im_start|>user", [27, 91, 318, 5011, 91, 29, 882]], // not a Llama 3 token: plain text
  ];
  const qwen3: [string, number[]][] = [
    ["Hello world", [9707, 1879]],
    ["12345678", [16, 17, 18, 19, 20, 21, 22, 23]], // one token per digit
    ["I'm HE'S", [40, 2776, 11685, 13272]],
    ["你好", [108386]],
    ["👩‍👩‍👧", [145233, 378, 235, 145233, 378, 235, 145665]],
    ["a\r\n\r\nb", [64, 871, 65]],
    ["  x", [220, 856]],
    ["<|im_start|>user\nhi<|im_end|>", [151644, 872, 198, 6023, 151645]],
    ["e\u0301", [963]], // NFC first: e + combining acute is é
  ];
  for (const via of ["folder", "gguf"] as const) {
    for (const [text, ids] of llama3) assert.deepEqual(tok("llama3", via).encode(text, false), ids, `llama3 ${via} ${JSON.stringify(text)}`);
    for (const [text, ids] of qwen3) assert.deepEqual(tok("qwen3", via).encode(text, false), ids, `qwen3 ${via} ${JSON.stringify(text)}`);
    assert.deepEqual(tok("llama3", via).encode("Hello world", true), [128000, 9906, 1917]);
    assert.deepEqual(tok("llama3", via).encode("", true), [128000]);
    assert.deepEqual(tok("qwen3", via).encode("Hello world", true), [9707, 1879]); // Qwen adds no BOS
    assert.deepEqual(tok("qwen3", via).encode("", true), []);
  }
});

test("BOS, EOS and end-of-turn ids of both families, folder and GGUF", { skip: FAMILIES.llama3.skip || FAMILIES.qwen3.skip }, () => {
  for (const via of ["folder", "gguf"] as const) {
    const l = tok("llama3", via);
    assert.equal(l.bosId, 128000);
    assert.equal(l.addBosToken, true);
    // <|eot_id|> (tokenizer_config eos_token / GGUF eos), <|end_of_text|>, and 128008 from eos_token_id
    for (const id of [128009, 128001]) assert.ok(l.eosIds.includes(id), `${via}: llama3 eosIds ${l.eosIds} lack ${id}`);
    if (via === "folder") assert.ok(l.eosIds.includes(128008), `folder: eos_token_id lists 128008`);
    assert.equal(l.eosIds[0], 128009);
    assert.equal(l.vocabSize, 128256);
    const q = tok("qwen3", via);
    assert.equal(q.addBosToken, false);
    assert.deepEqual([...q.eosIds].sort(), [151643, 151645]); // <|endoftext|>, <|im_end|>
    assert.equal(q.eosIds[0], 151645);
    assert.equal(q.vocabSize, via === "gguf" ? 151936 : 151669); // the GGUF counts its padding
  }
  // the shared folders alone (no config.json): the end-of-turn rule still finds them
  const bare = loadTokenizerSync(LLAMA3);
  assert.deepEqual(bare.eosIds, [128009, 128001]);
  assert.deepEqual(loadTokenizerSync(QWEN3).eosIds, [151645, 151643]);
});

test("the GGUF vocabulary as llama.cpp's converter writes it: gpt2, pre-tokenizer name, token types", { skip: FAMILIES.llama3.skip || FAMILIES.qwen3.skip }, () => {
  const l = readGgufMetadata(gguf("llama3")).metadata;
  assert.equal(l.get("tokenizer.ggml.model"), "gpt2");
  assert.equal(l.get("tokenizer.ggml.pre"), "llama-bpe");
  assert.equal(l.get("tokenizer.ggml.bos_token_id"), 128000);
  assert.equal(l.get("tokenizer.ggml.eos_token_id"), 128009); // tokenizer_config's eos_token first, as the converter
  assert.equal(l.get("tokenizer.ggml.add_bos_token"), true); // from the post-processor template
  const lt = l.get("tokenizer.ggml.tokens") as string[];
  const ltype = l.get("tokenizer.ggml.token_type") as Int32Array;
  assert.equal(lt.length, 128256);
  assert.equal(lt[9906], "Hello");
  assert.equal(lt[1917], "Ġworld");
  assert.equal(ltype[128009], PieceType.CONTROL);
  assert.equal((l.get("tokenizer.ggml.merges") as string[])[0], "Ġ Ġ");
  const q = readGgufMetadata(gguf("qwen3")).metadata;
  assert.equal(q.get("tokenizer.ggml.pre"), "qwen2");
  assert.equal(q.get("tokenizer.ggml.add_bos_token"), false);
  assert.equal(q.get("tokenizer.ggml.eos_token_id"), 151645);
  assert.equal(q.get("tokenizer.ggml.padding_token_id"), 151643);
  const qt = q.get("tokenizer.ggml.tokens") as string[];
  const qtype = q.get("tokenizer.ggml.token_type") as Int32Array;
  assert.equal(qt.length, 151936);
  assert.equal(qt[151667], "<think>");
  assert.equal(qtype[151667], PieceType.USER_DEFINED); // added, not special, not <|...|>
  assert.equal(qtype[151659], PieceType.CONTROL); // <|fim_prefix|>: not special, but looks special
  assert.equal(qt[151935], "[PAD151935]");
  assert.equal(qtype[151935], PieceType.UNUSED);
  assert.equal(typeof q.get("tokenizer.chat_template"), "string");
});

test("Qwen: text that is not NFC is normalized as its tokenizer.json says (llama.cpp does not)", { skip: FAMILIES.qwen3.skip }, () => {
  const nfd = "Ame\u0301lie, Åland (A\u030aland), \u1100\u1161 Hangul jamo";
  const ids = tok("qwen3", "gguf").encode(nfd, false);
  assert.deepEqual(ids, refIds("qwen3", nfd, false));
  assert.deepEqual(ids, refIds("qwen3", nfd.normalize("NFC"), false));
});

test("a 1 MB text tokenizes in a few seconds and gives the reference ids (GGUF path)", { skip: FAMILIES.llama3.skip || FAMILIES.qwen3.skip }, (t) => {
  const base = TRICKY.join(" ") + " Ünïcödé 𝔘𝔫𝔦 😀😀 12345678 ";
  let text = "";
  while (text.length < 1 << 20) text += base;
  text = text.slice(0, 1 << 20);
  for (const f of ["llama3", "qwen3"] as const) {
    const tk = tok(f, "gguf");
    const t0 = performance.now();
    const ids = tk.encode(text, false);
    const ms = performance.now() - t0;
    t.diagnostic(`${f}: ${Buffer.byteLength(text)} bytes -> ${ids.length} tokens in ${ms.toFixed(0)} ms`);
    assert.ok(ms < 30_000, `${f}: ${ms.toFixed(0)} ms for 1 MB`);
    assert.deepEqual(ids, refIds(f, text, false), f);
  }
});

// ---------------------------------------------------------------------------------------------
// Bad GGUF tokenizer metadata
// ---------------------------------------------------------------------------------------------

/** A tiny gpt2 vocabulary: the 256 byte-level characters, one merge, two special tokens. */
function tinyGpt2(over: Partial<Record<string, GgufKV["value"] | null>> = {}): string {
  const chars: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    chars.push(String.fromCodePoint(printable ? b : 256 + extra++));
  }
  const pieces = [...chars, "Ġw", "<|im_end|>", "<|x|>"];
  const types = pieces.map((_, i) => (i >= 257 ? PieceType.CONTROL : PieceType.NORMAL));
  const kvs = tokenizerMetadata({ model: "gpt2", pre: "qwen2", pieces, types, merges: ["Ġ w"], bos: null, eos: 258 }, pieces.length);
  const byKey = new Map(kvs.map((kv) => [kv.key, kv]));
  for (const [key, value] of Object.entries(over)) {
    if (value === null) byKey.delete(key);
    else byKey.set(key, { key, value: value! });
  }
  const file = path.join(tempDir(), "tiny.gguf");
  writeGguf(file, [...byKey.values()], []);
  return file;
}

test("a tiny gpt2 vocabulary: ids, end-of-turn by name, no BOS", () => {
  const t = tokenizerFromGguf(readGgufMetadata(tinyGpt2()));
  assert.equal(t.source, "gguf");
  assert.deepEqual(t.encode(" w<|im_end|>", true), [256, 257]);
  assert.deepEqual(t.eosIds, [258, 257]); // eos_token_id, then <|im_end|> by its text
  assert.equal(t.bosId, null);
  assert.equal(t.addBosToken, false); // qwen2's default when add_bos_token is absent
});

test("bad GGUF tokenizer metadata gives one-line errors naming the file and the key", () => {
  const cases: [Partial<Record<string, GgufKV["value"] | null>>, string[]][] = [
    [{ "tokenizer.ggml.pre": { type: "string", value: "tekken" } }, ["tokenizer.ggml.pre", '"tekken"', '"llama-bpe"', '"qwen2"', '"gpt-2"', '"default"']],
    [{ "tokenizer.ggml.model": { type: "string", value: "bert" } }, ["tokenizer.ggml.model", '"bert"', '"gpt2"']],
    [{ "tokenizer.ggml.model": null }, ["tokenizer.ggml.model is missing"]],
    [{ "tokenizer.ggml.merges": null }, ["tokenizer.ggml.merges is missing"]],
    [{ "tokenizer.ggml.merges": { type: "string[]", value: ["Ġw"] } }, ["tokenizer.ggml.merges[0]", '"Ġw"']],
    [{ "tokenizer.ggml.token_type": { type: "i32[]", value: [1, 1, 1] } }, ["tokenizer.ggml.token_type", "259 numbers"]],
    [{ "tokenizer.ggml.tokens": { type: "f32[]", value: [1, 2] } }, ["tokenizer.ggml.tokens", "array of strings"]],
    [{ "tokenizer.ggml.add_bos_token": { type: "u32", value: 1 } }, ["tokenizer.ggml.add_bos_token", "true or false"]],
    [{ "tokenizer.ggml.eos_token_id": { type: "string", value: "x" } }, ["tokenizer.ggml.eos_token_id"]],
  ];
  for (const [over, fragments] of cases) {
    const file = tinyGpt2(over);
    assertLlamesh(() => tokenizerFromGguf(readGgufMetadata(file)), file, ...fragments);
    assertLlamesh(() => loadTokenizerForSync(file), file, ...fragments);
  }
  assertLlamesh(() => loadTokenizerForSync(path.join(tempDir(), "absent.gguf")), "absent.gguf");
});

test("loadTokenizerFor opens a folder or a .gguf file alike", { skip: FAMILIES.qwen3.skip }, async () => {
  const a = await loadTokenizerFor(folder("qwen3"));
  const b = await loadTokenizerFor(gguf("qwen3"));
  assert.equal(a.source, "tokenizer.json");
  assert.equal(b.source, "gguf");
  assert.deepEqual(a.encode("Hello world", true), b.encode("Hello world", true));
  await assert.rejects(loadTokenizerFor(gguf("qwen3"), { prefer: "tokenizer.model" }), /applies to model folders/);
});

test("llamesh tokenize takes a .gguf file and has --help", { skip: FAMILIES.llama3.skip || FAMILIES.qwen3.skip }, async () => {
  const l = await runCli("llamesh", ["tokenize", gguf("llama3"), "Hello world"]);
  assert.equal(l.code, 0, l.stderr);
  assert.equal(l.stdout, "128000 9906 1917\n");
  const noBos = await runCli("llamesh", ["tokenize", gguf("llama3"), "Hello world", "--no-bos"]);
  assert.equal(noBos.stdout, "9906 1917\n");
  const q = await runCli("llamesh", ["tokenize", gguf("qwen3"), "<|im_start|>user\nhi<|im_end|>"]);
  assert.equal(q.stdout, "151644 872 198 6023 151645\n");
  const folderRun = await runCli("llamesh", ["tokenize", FAMILIES.qwen3.dir, "Hello world"]);
  assert.equal(folderRun.stdout, "9707 1879\n");
  const help = await runCli("llamesh", ["tokenize", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /usage: llamesh tokenize <model-dir \| model\.gguf> <text>/);
  const bad = await runCli("llamesh", ["tokenize", gguf("qwen3"), "x", "--tokenizer", "model"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--tokenizer applies to model folders/);
  const missing = await runCli("llamesh", ["tokenize", "/nonexistent/model.gguf", "x"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /\/nonexistent\/model\.gguf/);
  assert.equal(missing.stderr.trim().split("\n").length, 1);
});
