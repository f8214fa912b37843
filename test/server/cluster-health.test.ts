/**
 * A served cluster whose only worker goes away and comes back: /health says down (503) and
 * requests fail with 503 naming the lost worker while it is gone; once it answers again the next
 * request takes it back in and is served (the greedy text of one machine), /health says ok, and
 * /metrics shows the worker in the plan. (The attack found serve answering 400 forever.)
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel } from "../../src/engine/open.js";
import { openDistributedModel } from "../../src/cluster/client.js";
import { STORIES, skipUnless, tempDir } from "../helpers/models.js";
import { spawnWorker } from "../cluster/helpers.js";
import { post, PROMPT, reference, serve, until } from "./helpers.js";

const backend = await createBackend({ threads: 1 });
after(() => backend.close());

test("served cluster: a lost worker makes /health down and requests 503; back, it serves again and /health is ok", { skip: skipUnless(STORIES) }, async () => {
  const cache = tempDir("llamesh-cache-");
  let w = await spawnWorker(["--cache-dir", cache]);
  const port = w.port;
  const log: string[] = [];
  const model = await openDistributedModel(STORIES, { workers: [{ host: "127.0.0.1", port }], backend, maxSeqLen: 128, slots: 2, log: (l) => log.push(l) });
  const s = await serve(model);
  try {
    const want = (await reference(await openModel(STORIES, { backend, maxSeqLen: 128 }), model.tokenizer.encode(PROMPT, true), 20)).text;
    const body = { prompt: PROMPT, max_tokens: 20, temperature: 0 };
    assert.equal((await post(s.base, "/v1/completions", body)).json["choices"][0].text, want);
    w.child.kill("SIGKILL");
    await w.stop();
    const failed = await post(s.base, "/v1/completions", body);
    assert.equal(failed.status, 503);
    assert.match(failed.json["error"].message, /no worker left/);
    const down = await fetch(`${s.base}/health`);
    assert.equal(down.status, 503);
    assert.equal(((await down.json()) as { status: string }).status, "down");
    w = await spawnWorker(["--cache-dir", cache], {}, port);
    await until(() => log.some((l) => /answers again/.test(l)), "the worker's return", 15_000);
    const again = await post(s.base, "/v1/completions", body);
    assert.equal(again.status, 200, JSON.stringify(again.json));
    assert.equal(again.json["choices"][0].text, want);
    const ok = (await (await fetch(`${s.base}/health`)).json()) as { status: string; workers: { inPlan: boolean }[] };
    assert.equal(ok.status, "ok");
    assert.deepEqual(ok.workers.map((x) => x.inPlan), [true]);
    const metrics = await (await fetch(`${s.base}/metrics`)).text();
    assert.match(metrics, new RegExp(`^llamesh_worker_in_plan\\{worker="127\\.0\\.0\\.1:${port}"\\} 1$`, "m"));
    assert.match(metrics, /^llamesh_node_syncs_total\{node="127\.0\.0\.1:\d+"\} [1-9]\d*$/m);
  } finally {
    await s.close();
    await model.close();
    await w.stop();
  }
});
