/**
 * The server's memory stays bounded (CI-sized parts of the soak, scripts/soak):
 * - the tokenizer keeps nothing per prompt (its BPE cache held every distinct prompt under 256
 *   characters, up to 10,000 of them, when tokenizer.json has no pre-tokenizer);
 * - the heap a finished request leaves behind (after a full GC) is flat over hundreds of
 *   streamed requests with distinct prompts, some dropped by their clients;
 * - serve started as bin/llamesh starts it has V8's young generation at its fixed size before the
 *   first request and keeps it there (V8 otherwise doubles it under load: the soak's +24 MiB).
 */
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import * as v8 from "node:v8";
import * as vm from "node:vm";
import { spawn } from "node:child_process";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel, type LoadedModel } from "../../src/engine/open.js";
import { loadTokenizerForSync } from "../../src/model/open-tokenizer.js";
import { PromptEncoder } from "../../src/server/tokenize.js";
import { SERVE_SEMI_SPACE_MIB, SERVE_V8_FLAGS, youngGeneration, youngGenerationReport } from "../../src/server/heap.js";
import { STORIES, skipUnless } from "../helpers/models.js";
import { serve, type Served } from "./helpers.js";

const skip = skipUnless(STORIES);
const MiB = 2 ** 20;

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

/** Heap in use after full collections (what is still reachable). */
async function retainedHeap(): Promise<number> {
  // let sockets close and timers fire before collecting
  await new Promise((r) => setTimeout(r, 50));
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/** A distinct text of about `chars` characters (its number first). */
function distinctText(i: number, chars: number): string {
  const words = ["the", "little", "dog", "ran", "to", "park", "and", "Lily", "saw", "a", "big", "tree", "happy", "sun"];
  let s = `${i}`;
  let x = i * 2654435761;
  while (s.length < chars - 8) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    s += " " + words[(x >>> 16) % words.length];
  }
  return s;
}

test("the tokenizer keeps nothing per prompt: 3,000 distinct 250-character prompts retain under 2 MiB of heap", { skip }, async () => {
  const encoder = new PromptEncoder(loadTokenizerForSync(STORIES), STORIES);
  for (let i = 0; i < 50; i++) await encoder.encode(distinctText(1e6 + i, 250), true); // compiled before measuring
  const before = await retainedHeap();
  for (let i = 0; i < 3000; i++) await encoder.encode(distinctText(i, 250), true);
  const grown = (await retainedHeap()) - before;
  // with the BPE cache holding whole texts this was about 8 MiB (2.7 KB per prompt)
  assert.ok(grown < 2 * MiB, `3,000 prompts left ${(grown / MiB).toFixed(2)} MiB of heap behind`);
  await encoder.close();
});

let model: LoadedModel;
let served: Served;
before(async () => {
  if (skip) return;
  model = await openModel(STORIES, { backend: await createBackend({ threads: 1 }), maxSeqLen: 128, slots: 4 });
  served = await serve(model);
});
after(async () => {
  await served?.close();
});

/** One streamed completion; `dropAfter` events: the client goes away there. */
async function streamed(i: number, dropAfter = Infinity): Promise<void> {
  const ac = new AbortController();
  const r = await fetch(`${served.base}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: distinctText(i, 200), max_tokens: 4, temperature: 0.8, seed: i, stream: true, stream_options: { include_usage: true } }),
    signal: ac.signal,
  });
  assert.equal(r.status, 200);
  const reader = r.body!.getReader();
  let reads = 0;
  try {
    for (;;) {
      const { done } = await reader.read();
      if (done) return;
      if (++reads >= dropAfter) return ac.abort();
    }
  } catch (e) {
    if ((e as Error).name !== "AbortError") throw e;
  }
}

/** `n` requests from `first` on, 4 at a time, one in 20 dropped after its first event. */
async function load(first: number, n: number): Promise<void> {
  let next = first;
  const lane = async (): Promise<void> => {
    while (next < first + n) {
      const i = next++;
      await streamed(i, i % 20 === 7 ? 1 : Infinity);
    }
  };
  await Promise.all([lane(), lane(), lane(), lane()]);
}

test("a finished request leaves no heap behind: 400 streamed requests with distinct prompts (20 dropped) after 400 retain under 1.5 KB each", { skip }, async () => {
  await load(0, 400); // compiled and optimized, caches of fixed size filled
  const before = await retainedHeap();
  await load(400, 400);
  const grown = (await retainedHeap()) - before;
  // measured: 47-177 KB (code still being optimized); 1,186 KB while the tokenizer cached whole prompts
  assert.ok(grown < 400 * 1536, `400 requests left ${(grown / 1024).toFixed(0)} KB of heap behind (${(grown / 400).toFixed(0)} bytes each)`);
  const s = await (await fetch(`${served.base}/health`)).json();
  assert.deepEqual(s, { status: "ok", slots: 4, slots_busy: 0, queued: 0 });
});

test("the young-generation flags: recognised in execArgv, named in serve's log", () => {
  assert.equal(youngGeneration([...SERVE_V8_FLAGS]).fixedMiB, SERVE_SEMI_SPACE_MIB);
  assert.equal(youngGeneration([]).fixedMiB, null);
  assert.equal(youngGeneration(["--min-semi-space-size=16"]).fixedMiB, null);
  assert.equal(youngGeneration(["--min_semi_space_size", "8", "--max-semi-space-size=8"]).fixedMiB, 8);
  assert.match(youngGenerationReport({ fixedMiB: null }), /not fixed.*--min-semi-space-size=16 --max-semi-space-size=16/);
});

test("`node bin/llamesh serve` (no flags) re-runs itself with them: the young generation is at its fixed 16 MiB semi-spaces before the first request and after 150, and the log says so", { skip, timeout: 120_000 }, async () => {
  const child = spawn(process.execPath, [path.resolve("bin", "llamesh"), "serve", STORIES, "--port", "0", "-t", "1", "--parallel", "4", "--slot-ctx", "128"], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /listening [^\s]*:(\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.on("exit", (c) => reject(new Error(`serve exited (${c}): ${stderr}`)));
    });
    const base = `http://127.0.0.1:${port}`;
    assert.match(stderr, /young generation: fixed at 2 x 16 MiB semi-spaces/);
    const newSpace = async (): Promise<number> => {
      const m = /^nodejs_heap_space_size_bytes\{space="new_space"\} (\d+)$/m.exec(await (await fetch(`${base}/metrics`)).text());
      assert.ok(m, "/metrics has no new_space size");
      return Number(m[1]) / MiB;
    };
    // V8 alone has 2 x 4 MiB when serve listens (grown while the model loaded) and doubles it as
    // survivors accumulate; fixed, it counts one semi-space until the first scavenge, both after
    const fixed = (mib: number): boolean => mib >= SERVE_SEMI_SPACE_MIB && mib <= 2 * SERVE_SEMI_SPACE_MIB;
    const atStart = await newSpace();
    assert.ok(fixed(atStart), `new space ${atStart} MiB at start`);
    const body = (i: number): string => JSON.stringify({ prompt: distinctText(i, 60), max_tokens: 16, temperature: 0.8, seed: i });
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < 150) {
        const r = await fetch(`${base}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: body(next++) });
        assert.equal(r.status, 200);
        await r.arrayBuffer();
      }
    };
    await Promise.all([lane(), lane(), lane(), lane()]);
    const atEnd = await newSpace();
    assert.ok(fixed(atEnd), `new space ${atEnd} MiB after 150 requests`);
  } finally {
    child.kill("SIGTERM");
  }
});
