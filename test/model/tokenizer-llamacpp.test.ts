/**
 * Our GGUF tokenizer against llama.cpp itself:
 * - llama.cpp (node-llama-cpp's prebuilt binary, vocabulary-only load) tokenizing the GGUF files our
 *   writer makes from the Llama 3.1 and Qwen3 tokenizers gives the ids our reader gives;
 * - the vocabulary files llama.cpp ships for its own tokenizer tests (models/ggml-vocab-*.gguf,
 *   written by its converter, with the ids transformers gives in *.gguf.out) read by our reader.
 * node-llama-cpp is never installed by the tests: install it as bench/compare.ts does
 * (npm install node-llama-cpp@3.22.1 in <cache>/llama-cpp, <cache> = $LLAMESH_CACHE or ../cache);
 * llama.cpp's source is the git bundle inside that package (`git clone
 * <cache>/llama-cpp/node_modules/node-llama-cpp/llama/gitRelease.bundle <cache>/llama.cpp`).
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { readGgufMetadata, tokenizerFromGguf } from "../../src/model/gguf-tokenizer.js";
import { loadTokenizerSync } from "../../src/model/tokenizer.js";
import { tokenizerSpecFromFolder, writeTokenizerGguf } from "../../src/synthetic/gguf-writer.js";
import { SHARED_MODELS, tempDir } from "../helpers/models.js";
import { BPE_TRICKY } from "./tokenizer-strings.js";

const CACHES = [process.env["LLAMESH_CACHE"], path.resolve("../cache"), path.resolve(".cache")].filter((d): d is string => d !== undefined);
const NLC_ENTRY = CACHES.map((d) => path.join(d, "llama-cpp", "node_modules", "node-llama-cpp", "dist", "index.js")).find((f) => fs.existsSync(f));
const LLAMACPP_MODELS = CACHES.map((d) => path.join(d, "llama.cpp", "models")).find((d) => fs.existsSync(path.join(d, "ggml-vocab-qwen2.gguf")));
const skipNlc = NLC_ENTRY === undefined ? `node-llama-cpp is not installed in ${CACHES.map((d) => path.join(d, "llama-cpp")).join(" or ")} (see bench/compare.ts)` : false;
const skipSrc = LLAMACPP_MODELS === undefined ? `llama.cpp's source (models/ggml-vocab-*.gguf) is not in ${CACHES.map((d) => path.join(d, "llama.cpp")).join(" or ")}` : false;

const FAMILIES = [
  { name: "llama3.1", dir: path.join(SHARED_MODELS, "tokenizers", "llama3.1"), vocabSize: 128256 },
  { name: "qwen3", dir: path.join(SHARED_MODELS, "tokenizers", "qwen3"), vocabSize: 151936 },
];
const skipShared = FAMILIES.every((f) => fs.existsSync(path.join(f.dir, "tokenizer.json"))) ? false : `${SHARED_MODELS}/tokenizers is absent`;

interface NlcModel {
  tokenize(text: string, specialTokens?: boolean): readonly unknown[];
  dispose(): Promise<void>;
}
interface NlcLlama {
  loadModel(o: { modelPath: string; vocabOnly: boolean }): Promise<NlcModel>;
  dispose(): Promise<void>;
}
interface NlcModule {
  getLlama(o: { gpu: false; build: "never"; logLevel: "disabled" }): Promise<NlcLlama>;
}

let llama: NlcLlama | undefined;
async function llamaCpp(): Promise<NlcLlama> {
  if (llama === undefined) {
    const nlc = (await import(pathToFileURL(NLC_ENTRY!).href)) as NlcModule;
    llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: "disabled" });
  }
  return llama;
}
after(async () => {
  await llama?.dispose();
});

test("llama.cpp tokenizes our Llama 3.1 and Qwen3 GGUF vocabularies to the ids our reader gives", { skip: skipNlc || skipShared }, async () => {
  const l = await llamaCpp();
  for (const f of FAMILIES) {
    const file = path.join(tempDir(), `${f.name}.gguf`);
    writeTokenizerGguf(file, tokenizerSpecFromFolder(f.dir), f.vocabSize);
    const ours = tokenizerFromGguf(readGgufMetadata(file));
    const folder = loadTokenizerSync(f.dir);
    const model = await l.loadModel({ modelPath: file, vocabOnly: true });
    try {
      // llama.cpp does not normalize to NFC (Qwen's tokenizer.json does): compare on NFC text
      for (const text of BPE_TRICKY.filter((t) => t === t.normalize("NFC"))) {
        // specialTokens: true matches special-token strings in the text, as the Hugging Face tokenizer does
        const theirs = Array.from(model.tokenize(text, true), Number);
        assert.deepEqual(ours.encode(text, false), theirs, `${f.name}: ${JSON.stringify(text.slice(0, 60))}`);
        assert.deepEqual(folder.encode(text, false), theirs, `${f.name} folder: ${JSON.stringify(text.slice(0, 60))}`);
      }
    } finally {
      await model.dispose();
    }
  }
});

test("llama.cpp's own vocabulary test files (converted by llama.cpp, ids from transformers) through our reader", { skip: skipSrc }, () => {
  for (const name of ["llama-bpe", "qwen2", "gpt-2", "llama-spm"]) {
    const file = path.join(LLAMACPP_MODELS!, `ggml-vocab-${name}.gguf`);
    const tok = tokenizerFromGguf(readGgufMetadata(file));
    // llama.cpp's tests/test-tokenizer-0: cases separated by this line, expected ids one line per case
    const inputs = fs.readFileSync(file + ".inp", "utf8").split("\n__ggml_vocab_test__\n");
    const outputs = fs.readFileSync(file + ".out", "utf8").split("\n");
    assert.ok(inputs.length > 30, `${name}: ${inputs.length} cases`);
    inputs.forEach((text, i) => {
      const line = outputs[i]!.trim();
      const want = line === "" ? [] : line.split(/\s+/).map(Number);
      assert.deepEqual(tok.encode(text, false), want, `${name} case ${i}: ${JSON.stringify(text.slice(0, 60))}`);
    });
  }
});
