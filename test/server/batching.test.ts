/**
 * Continuous batching on one machine and on a cluster (2 loopback workers), stories260K with 8
 * slots: a 200-token stream's first event arrives long before its last, /health answers within
 * 100 ms while 8 requests run, a dropped stream stops within 2 tokens, and a request's greedy text
 * is the same alone, among 7 concurrent others, and from the generation loop (helpers.ts).
 */
import { test, after } from "node:test";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel } from "../../src/engine/open.js";
import { openDistributedModel } from "../../src/cluster/client.js";
import { STORIES, skipUnless, tempDir } from "../helpers/models.js";
import { spawnWorker } from "../cluster/helpers.js";
import { checkServing } from "./helpers.js";

const skip = skipUnless(STORIES);
const backend = await createBackend({ threads: 1 });
after(() => backend.close());

test("one machine, 8 slots: streams stream, /health answers under load, a dropped stream stops, batched greedy text = alone", { skip }, async () => {
  const model = await openModel(STORIES, { backend, maxSeqLen: 256, slots: 8 });
  const ref = await openModel(STORIES, { backend, maxSeqLen: 256 });
  await checkServing(model, ref, "one machine");
});

test("cluster of 2 workers, 8 slots: the same", { skip }, async () => {
  const ws = await Promise.all([0, 1].map((i) => spawnWorker(["--cache-dir", `${tempDir("llamesh-cache-")}/w${i}`])));
  try {
    const model = await openDistributedModel(STORIES, { workers: ws.map((w) => ({ host: "127.0.0.1", port: w.port })), backend, maxSeqLen: 256, slots: 8, log: () => undefined });
    try {
      const ref = await openModel(STORIES, { backend, maxSeqLen: 256 });
      await checkServing(model, ref, "cluster");
    } finally {
      await model.close();
    }
  } finally {
    await Promise.all(ws.map((w) => w.stop()));
  }
});
