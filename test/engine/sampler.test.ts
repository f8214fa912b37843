/** The sampler against the distributions it must draw from (computed here by hand, not by it). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Sampler } from "../../src/engine/sampler.js";

function frequencies(s: Sampler, logits: number[], draws: number): number[] {
  const f = logits.map(() => 0);
  for (let i = 0; i < draws; i++) f[s.sample(logits)]!++;
  return f.map((x) => x / draws);
}

test("temperature sampling over the whole vocabulary draws each token with its softmax probability", () => {
  // logits ln 1, ln 2, ln 4, ln 1: at T = 1 the probabilities are 1/8, 2/8, 4/8, 1/8; at T = 2, sqrt of the weights
  const logits = [0, Math.log(2), Math.log(4), 0];
  const at1 = frequencies(new Sampler({ temperature: 1, topP: 1, topK: 0, seed: 7 }), logits, 80_000);
  [1 / 8, 2 / 8, 4 / 8, 1 / 8].forEach((p, i) => assert.ok(Math.abs(at1[i]! - p) < 0.01, `T=1 token ${i}: ${at1[i]} vs ${p}`));
  const w = [1, Math.SQRT2, 2, 1];
  const z = w.reduce((a, b) => a + b, 0);
  const at2 = frequencies(new Sampler({ temperature: 2, topP: 1, topK: 0, seed: 8 }), logits, 80_000);
  w.forEach((x, i) => assert.ok(Math.abs(at2[i]! - x / z) < 0.01, `T=2 token ${i}: ${at2[i]} vs ${x / z}`));
});

test("top-p keeps the smallest set reaching p, top-k the k best; the same seed gives the same draws", () => {
  const logits = [0, Math.log(2), Math.log(4), 0];
  // top_p 0.7: 4/8 < 0.7 <= 6/8, so tokens 2 and 1 only, renormalized to 2/3 and 1/3
  const p = frequencies(new Sampler({ temperature: 1, topP: 0.7, topK: 0, seed: 9 }), logits, 60_000);
  assert.equal(p[0]! + p[3]!, 0);
  assert.ok(Math.abs(p[2]! - 2 / 3) < 0.01 && Math.abs(p[1]! - 1 / 3) < 0.01, `top-p: ${p}`);
  const k = frequencies(new Sampler({ temperature: 1, topP: 1, topK: 1, seed: 9 }), logits, 1000);
  assert.deepEqual(k, [0, 0, 1, 0]);
  const draw = (seed: number) => Array.from({ length: 50 }, ((s) => () => s.sample(logits))(new Sampler({ temperature: 1, topP: 1, topK: 0, seed })));
  assert.deepEqual(draw(3), draw(3));
  assert.notDeepEqual(draw(3), draw(4));
  assert.equal(new Sampler({ temperature: 0, topP: 1, topK: 0, seed: 1 }).sample(logits), 2);
});

test("sampling a 32,000-token vocabulary at the OpenAI defaults takes well under a forward pass", () => {
  const logits = Array.from({ length: 32_000 }, (_, i) => Math.sin(i) * 5);
  const s = new Sampler({ temperature: 1, topP: 1, topK: 0, seed: 1 });
  for (let i = 0; i < 20; i++) s.sample(logits); // warm-up (JIT)
  const t0 = performance.now();
  for (let i = 0; i < 50; i++) s.sample(logits);
  const ms = (performance.now() - t0) / 50;
  assert.ok(ms < 5, `${ms.toFixed(2)} ms per token (was 23 ms with a full sort)`);
});
