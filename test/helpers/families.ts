/**
 * One tiny synthetic checkpoint per family llamesh runs, with its feature far from trivial (see
 * test/engine/families.test.ts): shared by the engine and cluster tests.
 */
import type { SyntheticShape } from "../../src/synthetic/checkpoint.js";
import { tinyShape } from "./models.js";

export const FAMILY_CASES: { name: string; shape: SyntheticShape }[] = [
  {
    name: "Llama 3.1 (llama3 RoPE scaling)",
    shape: tinyShape({
      family: "llama", ropeTheta: 10000,
      ropeScaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
    }),
  },
  {
    name: "Llama 3.2 (llama3 RoPE scaling, tied embeddings)",
    shape: tinyShape({
      family: "llama", tied: true, ropeTheta: 500000,
      ropeScaling: { rope_type: "llama3", factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8 },
    }),
  },
  { name: "Llama with linear RoPE scaling", shape: tinyShape({ ropeScaling: { type: "linear", factor: 2 } }) },
  { name: "Mistral (sliding window 5)", shape: tinyShape({ family: "mistral", slidingWindow: 5 }) },
  { name: "Qwen2.5 (q/k/v biases)", shape: tinyShape({ family: "qwen2", tied: true, ropeTheta: 1000000 }) },
  { name: "Qwen3 (q/k norms, head_dim 24 apart from 64 / 4)", shape: tinyShape({ family: "qwen3", headDim: 24, ropeTheta: 1000000 }) },
];
