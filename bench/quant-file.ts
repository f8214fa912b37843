/**
 * Writes a GGUF of a Hugging Face folder with one of the engine's type plans (engine/types.ts
 * typePlan: Q4_K_M = Q4_K with Q6_K for attn_v/ffn_down of some layers and the output, Q4_0 with a
 * Q6_K output, ...), quantized by the WASM kernels (llama-quantize's quantizers bit for bit, ~20x
 * faster than the TypeScript ones): the Q4_K_M and Q4_0 files of `bench compare` from the same
 * weights as the synthetic Q8_0 file. For benchmarks only, e.g.
 * node -e 'import("./dist/bench/quant-file.js").then(m => m.writeQuantGguf({ hfDir, file, choice: "Q4_K_M", threads: 2 }))'
 */
import { Arena } from "../src/kernels/arena.js";
import { rowBytes, type TensorType } from "../src/kernels/formats.js";
import { WasmBackend } from "../src/kernels/wasm.js";
import { loadLlamaConfig } from "../src/model/config.js";
import { SafetensorsModel } from "../src/model/safetensors.js";
import { typePlan, type QuantChoice } from "../src/engine/types.js";
import { writeGgufFromSafetensors } from "../src/synthetic/gguf-writer.js";

/** llama.cpp's general.file_type of the choices (LLAMA_FTYPE_*). */
const FILE_TYPES: Partial<Record<QuantChoice, number>> = { Q4_0: 2, Q8_0: 7, Q4_K_M: 15, Q5_K_M: 17, Q6_K: 18 };

export async function writeQuantGguf(opts: { hfDir: string; file: string; choice: QuantChoice; threads?: number; log?: (line: string) => void }): Promise<void> {
  const c = loadLlamaConfig(opts.hfDir);
  const src = SafetensorsModel.open(opts.hfDir);
  let plan: Record<string, TensorType>;
  try {
    plan = typePlan(src, c, opts.choice);
  } finally {
    src.close();
  }
  const be = await WasmBackend.create(opts.threads ?? 2);
  // the writer hands over slices of at most a few M values (SLICE_FLOATS whole rows)
  const maxValues = 1 << 23;
  const arena = new Arena(maxValues * 4 + maxValues * 2 + be.scratchBytes + (1 << 20), "quant-file");
  const k = be.bind(arena);
  const xs = arena.alloc(maxValues * 4, 64), dst = arena.alloc(maxValues * 2, 64);
  const encode = (type: string, x: Float32Array): Uint8Array | undefined => {
    if (type === "F32" || type === "F16" || x.length > maxValues) return undefined;
    const t = type as TensorType;
    arena.f32(xs, x.length).set(x);
    k.quantizeWeights(t, dst, xs, x.length);
    return arena.u8(dst, rowBytes(t, x.length)).slice();
  };
  try {
    const t0 = performance.now();
    writeGgufFromSafetensors(opts.hfDir, opts.file, { quant: "Q8_0", types: plan, fileType: FILE_TYPES[opts.choice], encode });
    const mix = new Map<string, number>();
    for (const t of Object.values(plan)) mix.set(t, (mix.get(t) ?? 0) + 1);
    opts.log?.(`${opts.file}: ${opts.choice} (${[...mix].map(([t, n]) => `${n} ${t}`).join(", ")}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } finally {
    be.release(arena);
    await be.close();
  }
}
