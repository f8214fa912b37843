/** The planner splits columns on the blocks of the matrices' types: 256 for the K-quants. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { planCluster } from "../../src/cluster/planner.js";

test("K-quant blocks: o_proj and down columns of every node start on 256-value blocks", () => {
  // Llama 2 7B: 32 heads of 128, hidden 11008 = 43 x 256
  const shape = { dim: 4096, hiddenDim: 11008, nHeads: 32, nKvHeads: 32, headDim: 128, vocabSize: 32000 };
  const q8 = planCluster(shape, [1, 1, 1]);
  const q4k = planCluster(shape, [1, 1, 1], { attn: 256, ffn: 256 });
  assert.equal(q8.kvPerUnit, 1);
  assert.equal(q4k.kvPerUnit, 2, "two 128-wide heads per 256-value block");
  assert.equal(q4k.ffnUnits, 43);
  for (const n of q4k.nodes) {
    assert.equal((n.kv0 * 128) % 256, 0);
    assert.equal((n.hb0 * 32) % 256, 0);
  }
  // 43 blocks of 256 over 3 equal nodes: 15, 14, 14 of them, in 32-unit blocks 120, 112, 112
  assert.deepEqual(q4k.nodes.map((n) => n.hb1 - n.hb0), [120, 112, 112]);
  assert.equal(q4k.nodes[2]!.hb1, 344, "every hidden unit is someone's");
});
