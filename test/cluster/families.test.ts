/**
 * Every family over loopback workers: the same greedy tokens as one machine, with 2 workers and
 * with 3 (one share on the client), mesh and star. Biases and q/k norms travel with their rows
 * (vector slices), RoPE scaling and the sliding window are part of the config every node gets.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel, type LoadedModel } from "../../src/engine/open.js";
import { openDistributedModel } from "../../src/cluster/client.js";
import { tempDir, tinyModel } from "../helpers/models.js";
import { FAMILY_CASES } from "../helpers/families.js";
import { spawnWorker } from "./helpers.js";

const backend = await createBackend({ threads: 1 });
after(() => backend.close());

async function greedy(m: LoadedModel, n: number): Promise<number[]> {
  const argmax = (l: Float32Array): number => l.reduce((b, v, i, a) => (v > a[b]! ? i : b), 0);
  const out = [argmax(await m.forward([1, 300, 261, 259], 0))];
  while (out.length < n) out.push(argmax(await m.forward([out[out.length - 1]!], 3 + out.length)));
  return out;
}

test("each family: greedy tokens over 2 and 3 nodes equal one machine's (mesh and star)", async () => {
  const cache = tempDir("llamesh-cache-");
  const ws = await Promise.all([0, 1].map((i) => spawnWorker(["--cache-dir", `${cache}/w${i}`])));
  try {
    for (const c of FAMILY_CASES) {
      const dir = tinyModel(c.shape);
      const expected = await greedy(await openModel(dir, { backend, maxSeqLen: 48 }), 24);
      for (const setup of [
        { workers: ws.map((w) => ({ host: "127.0.0.1", port: w.port, share: 50 })), localShare: 0, topology: "mesh" as const },
        { workers: ws.map((w) => ({ host: "127.0.0.1", port: w.port, share: 30 })), localShare: 40, topology: "star" as const },
      ]) {
        const m = await openDistributedModel(dir, { ...setup, backend, maxSeqLen: 48, log: () => undefined });
        try {
          assert.deepEqual(await greedy(m, 24), expected, `${c.name}: ${setup.workers.length + (setup.localShare > 0 ? 1 : 0)} nodes, ${setup.topology}`);
        } finally {
          await m.close();
        }
      }
    }
  } finally {
    await Promise.all(ws.map((w) => w.stop()));
  }
});
