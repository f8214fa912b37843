/**
 * A worker that was lost and answers again at the same address is taken back in between tokens:
 * worker B is killed mid-generation (the cluster goes on without it), restarted on its port, and
 * from the next token on both workers compute again (the new B's step counter grows), with the
 * text of a single machine from start to end.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel } from "../../src/engine/open.js";
import { openDistributedModel } from "../../src/cluster/client.js";
import { STORIES, skipUnless, tempDir } from "../helpers/models.js";
import { spawnWorker, type SpawnedWorker } from "./helpers.js";

const backend = await createBackend({ threads: 1 });
after(() => backend.close());
const argmax = (l: Float32Array): number => l.reduce((b, v, i, a) => (v > a[b]! ? i : b), 0);

test("rejoin: worker B killed at a token and restarted is used again, the text stays the single-machine text", { skip: skipUnless(STORIES) }, async () => {
  const cache = tempDir("llamesh-cache-");
  const a = await spawnWorker(["--cache-dir", `${cache}/a`]);
  let b: SpawnedWorker = await spawnWorker(["--cache-dir", `${cache}/b`]);
  const portB = b.port;
  const single = await openModel(STORIES, { backend, maxSeqLen: 128 });
  const ids = single.tokenizer.encode("Once upon a time", true);
  const expected = [argmax(await single.forward(ids, 0))];
  while (expected.length < 40) expected.push(argmax(await single.forward([expected[expected.length - 1]!], ids.length + expected.length - 1)));

  const log: string[] = [];
  const m = await openDistributedModel(STORIES, { workers: [{ host: "127.0.0.1", port: a.port }, { host: "127.0.0.1", port: portB }], backend, maxSeqLen: 128, log: (l) => log.push(l) });
  try {
    const tokens = [argmax(await m.forward(ids, 0))];
    let stepsOnNewB = -1;
    for (let i = 0; tokens.length < 40; i++) {
      if (i === 10) {
        b.child.kill("SIGKILL");
        await b.stop();
      }
      if (i === 14) {
        assert.equal(m.health().state, "degraded", "B is out of the plan");
        b = await spawnWorker(["--cache-dir", `${cache}/b`], {}, portB);
        const deadline = Date.now() + 10_000;
        while (!log.some((l) => /answers again/.test(l)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      }
      tokens.push(argmax(await m.forward([tokens[i]!], ids.length + i)));
      if (i === 14) stepsOnNewB = (await m.workerStats())[1]!["requests"] as number;
    }
    assert.deepEqual(tokens, expected, "the single-machine text");
    assert.ok(log.some((l) => /^Recovered: lost 127\.0\.0\.1:\d+ at position/.test(l)), log.join("\n"));
    assert.ok(log.some((l) => new RegExp(`^Rejoined: 127\\.0\\.0\\.1:${portB} back: re-planned over 2 nodes`).test(l)), log.join("\n"));
    assert.equal(m.health().state, "ok");
    const stats = await m.workerStats();
    assert.equal(stats.length, 2, "both workers in the plan again");
    assert.ok(stepsOnNewB >= 1, "the restarted B took part in the step right after it came back");
    assert.ok((stats[1]!["requests"] as number) > stepsOnNewB + 20, `the restarted B computes the later tokens: ${String(stats[1]!["requests"])} steps`);
    assert.equal(stats[1]!["weightBytesReceived"], 0, "its disk cache had its slices");
  } finally {
    await m.close();
    await Promise.all([a.stop(), b.stop()]);
  }
});
