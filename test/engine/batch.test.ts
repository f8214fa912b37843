/**
 * Batched steps (several sequences, each in its own KV region, in one forward pass): a sequence's
 * logits are the same, bit for bit, whether it runs alone or among others, whatever the others
 * do (prompt chunks, single tokens, joining and leaving between steps), on one machine and on a
 * cluster. Every product is integer block dots scaled per row, and the kernels give the reference's
 * bits whatever the number of tokens, so a batch cannot change a row's result.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel, type LoadedModel } from "../../src/engine/open.js";
import type { SequenceChunk } from "../../src/engine/forward.js";
import { openDistributedModel } from "../../src/cluster/client.js";
import { GGUF_LLAMACPP, STORIES, skipUnless, tempDir } from "../helpers/models.js";
import { spawnWorker } from "../cluster/helpers.js";

const backend = await createBackend({ threads: 2 });
after(() => backend.close());

const argmax = (l: Float32Array): number => l.reduce((b, v, i, a) => (v > a[b]! ? i : b), 0);

/** Greedy tokens of one sequence run alone in slot 0, and the logits after each step. */
async function alone(m: LoadedModel, prompt: number[], n: number): Promise<{ tokens: number[]; logits: Float32Array[] }> {
  const logits: Float32Array[] = [Float32Array.from((await m.forwardBatch([{ slot: 0, pos: 0, tokens: prompt }]))[0]!)];
  const tokens = [argmax(logits[0]!)];
  while (tokens.length < n) {
    const l = (await m.forwardBatch([{ slot: 0, pos: prompt.length + tokens.length - 1, tokens: [tokens[tokens.length - 1]!] }]))[0]!;
    logits.push(Float32Array.from(l));
    tokens.push(argmax(l));
  }
  return { tokens, logits };
}

/**
 * Sequence `a` in slot 2 among three others that start later, stop earlier and send their prompts
 * in chunks (a prompt chunk and single tokens in one step); `a`'s logits after each of its steps.
 */
async function crowded(m: LoadedModel, a: number[], others: number[][], n: number): Promise<{ tokens: number[]; logits: Float32Array[] }> {
  interface Seq { slot: number; prompt: number[]; fed: number; out: number[]; start: number; stop: number }
  const seqs: Seq[] = [
    { slot: 2, prompt: a, fed: 0, out: [], start: 0, stop: Infinity },
    { slot: 0, prompt: others[0]!, fed: 0, out: [], start: 1, stop: 9 },
    { slot: 1, prompt: others[1]!, fed: 0, out: [], start: 0, stop: 5 },
    { slot: 3, prompt: others[2]!, fed: 0, out: [], start: 3, stop: 14 },
  ];
  const logits: Float32Array[] = [];
  for (let step = 0; seqs[0]!.out.length < n; step++) {
    const chunks: SequenceChunk[] = [];
    const who: Seq[] = [];
    for (const s of seqs) {
      if (step < s.start || step >= s.stop) continue;
      if (s.fed < s.prompt.length) {
        // the others' prompts in chunks of 3; a's prompt whole
        const take = s === seqs[0] ? s.prompt.length : Math.min(3, s.prompt.length - s.fed);
        chunks.push({ slot: s.slot, pos: s.fed, tokens: s.prompt.slice(s.fed, s.fed + take) });
        s.fed += take;
      } else {
        chunks.push({ slot: s.slot, pos: s.prompt.length + s.out.length - 1, tokens: [s.out[s.out.length - 1]!] });
      }
      who.push(s);
    }
    const out = await m.forwardBatch(chunks);
    who.forEach((s, i) => {
      if (s.fed < s.prompt.length) return; // mid-prompt: no token yet
      if (s === seqs[0]) logits.push(Float32Array.from(out[i]!));
      s.out.push(argmax(out[i]!));
    });
  }
  return { tokens: seqs[0]!.out, logits };
}

async function check(m: LoadedModel, what: string): Promise<void> {
  const enc = (t: string): number[] => m.tokenizer.encode(t, true);
  const a = enc("Once upon a time, in a small town,");
  const others = [enc("The little dog ran"), enc("Lily and Ben went to the park to play"), enc("One day")];
  const one = await alone(m, a, 24);
  const many = await crowded(m, a, others, 24);
  assert.deepEqual(many.tokens, one.tokens, `${what}: greedy tokens`);
  many.logits.forEach((l, i) => assert.deepEqual(l, one.logits[i], `${what}: logits after step ${i}`));
}

test("one machine: a sequence's logits alone and among three others are bit-identical (Q8_0 folder, Q4_K_M GGUF)", { skip: skipUnless(STORIES) || skipUnless(GGUF_LLAMACPP) }, async () => {
  for (const model of [STORIES, path.join(GGUF_LLAMACPP, "stories260K-256-Q4_K_M.gguf")]) {
    const m = await openModel(model, { backend, maxSeqLen: 96, slots: 4 });
    assert.equal(m.slots, 4);
    await check(m, path.basename(model));
  }
});

test("cluster (2 workers, mesh and star): a sequence's logits alone and among three others are bit-identical", { skip: skipUnless(STORIES) }, async () => {
  const ws = await Promise.all([0, 1].map((i) => spawnWorker(["--cache-dir", `${tempDir("llamesh-cache-")}/w${i}`])));
  try {
    for (const topology of ["mesh", "star"] as const) {
      const m = await openDistributedModel(STORIES, { workers: ws.map((w) => ({ host: "127.0.0.1", port: w.port })), topology, backend, maxSeqLen: 96, slots: 4, log: () => undefined });
      try {
        await check(m, topology);
      } finally {
        await m.close();
      }
    }
  } finally {
    await Promise.all(ws.map((w) => w.stop()));
  }
});

test("a step's chunks are checked: one chunk per slot, inside the context and the batch", { skip: skipUnless(STORIES) }, async () => {
  const m = await openModel(STORIES, { backend, maxSeqLen: 16, slots: 2 });
  await assert.rejects(() => m.forwardBatch([{ slot: 0, pos: 0, tokens: [1] }, { slot: 0, pos: 1, tokens: [2] }]), /slot 0 twice/);
  await assert.rejects(() => m.forwardBatch([{ slot: 2, pos: 0, tokens: [1] }]), /slot 2 twice or outside 0..1/);
  await assert.rejects(() => m.forwardBatch([{ slot: 1, pos: 15, tokens: [1, 2] }]), /exceed the context 16/);
});
