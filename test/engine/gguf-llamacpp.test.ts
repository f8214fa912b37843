/**
 * The GGUF files llama.cpp's own llama-quantize wrote (../shared/models/gguf-llamacpp: Q8_0, Q6_K,
 * Q5_K_M, Q4_K_M, Q4_0 of stories260K-256), read as they are: for each file and two prompts, the
 * first 40 greedy tokens equal llama.cpp's own (node-llama-cpp, BF16 KV cache as `-ctk bf16 -ctv
 * bf16`, its standard attention path), on one machine and through 2 loopback workers. Also the
 * example the issue gives for the Q4_K_M file.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel } from "../../src/engine/open.js";
import { greedyTokens } from "../../src/engine/generate.js";
import { openDistributedModel } from "../../src/cluster/client.js";
import { TextStream } from "../../src/engine/text-stream.js";
import { GGUF_LLAMACPP, skipUnless, tempDir } from "../helpers/models.js";
import { llamaCppRun, llamaCppSkip } from "../helpers/llamacpp.js";
import { spawnWorker } from "../cluster/helpers.js";

const FILES = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"].map((q) => path.join(GGUF_LLAMACPP, `stories260K-256-${q}.gguf`));
const PROMPTS = ["Once upon a time", "The little dog"];
const N = 40;
const backend = await createBackend({ threads: 2 });
after(() => backend.close());


test("the Q4_K_M file continues \"Once upon a time\" as the issue says llama.cpp does", { skip: skipUnless(GGUF_LLAMACPP) }, async () => {
  const m = await openModel(FILES[3]!, { backend, maxSeqLen: 128 });
  const s = new TextStream(m.tokenizer);
  const text = (await greedyTokens(m, m.tokenizer.encode("Once upon a time", true), 30)).map((t) => s.push(t)).join("") + s.end();
  assert.ok(text.startsWith(", there was a little girl named Lily. She loved to play with her toys and her friends."), text);
});

test("llama.cpp's GGUF files: 40 greedy tokens equal llama.cpp's, one machine and 2 workers", { skip: skipUnless(GGUF_LLAMACPP) || llamaCppSkip }, async () => {
  const ws = await Promise.all([0, 1].map((i) => spawnWorker(["--cache-dir", `${tempDir("llamesh-cache-")}/w${i}`])));
  try {
    for (const file of FILES) {
      const one = await openModel(file, { backend, maxSeqLen: 128 });
      const two = await openDistributedModel(file, { workers: ws.map((w) => ({ host: "127.0.0.1", port: w.port })), backend, maxSeqLen: 128, log: () => undefined });
      try {
        for (const prompt of PROMPTS) {
          const ids = one.tokenizer.encode(prompt, true);
          const theirs = (await llamaCppRun(file, ids, { generate: N, vocabSize: one.config.vocabSize })).generated;
          assert.equal(theirs.length, N);
          assert.deepEqual(await greedyTokens(one, ids, N), theirs, `${path.basename(file)}, ${JSON.stringify(prompt)}: one machine`);
          assert.deepEqual(await greedyTokens(two, ids, N), theirs, `${path.basename(file)}, ${JSON.stringify(prompt)}: 2 workers`);
        }
      } finally {
        await two.close();
      }
    }
  } finally {
    await Promise.all(ws.map((w) => w.stop()));
  }
});
