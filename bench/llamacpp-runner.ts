/**
 * Runs llama.cpp (through node-llama-cpp's prebuilt CPU binary, installed by bench/compare.ts
 * into a cache folder) once on a GGUF file and prints one JSON line with its timings.
 * Usage: node llamacpp-runner.js <node-llama-cpp-dir> <model.gguf> <threads> <prompt> <n> <ctx>
 * Kept in its own process so llama.cpp's threads and memory never overlap llamesh's.
 */
import * as path from "node:path";
import { pathToFileURL } from "node:url";

interface Token {
  readonly __brand?: "token";
}
interface NlcModule {
  getLlama(o: { gpu: false; build: "never"; logLevel?: string }): Promise<{
    loadModel(o: { modelPath: string }): Promise<{
      tokenize(text: string): Token[];
      createContext(o: { contextSize: number; threads: number; batchSize?: number }): Promise<{ getSequence(): unknown; dispose(): Promise<void> }>;
      dispose(): Promise<void>;
    }>;
    dispose(): Promise<void>;
  }>;
  LlamaCompletion: new (o: { contextSequence: unknown }) => {
    generateCompletionWithMeta(
      input: string,
      o: { maxTokens: number; temperature: number; onToken: (t: Token[]) => void; repeatPenalty: false },
    ): Promise<{ response: string; metadata: { stopReason: string } }>;
  };
}

const [dir, modelPath, threadsArg, prompt, nArg, ctxArg] = process.argv.slice(2);
const entry = path.join(dir!, "node_modules", "node-llama-cpp", "dist", "index.js");
const nlc = (await import(pathToFileURL(entry).href)) as NlcModule;
const llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath: modelPath! });
const context = await model.createContext({ contextSize: Number(ctxArg), threads: Number(threadsArg), batchSize: 512 });
const completion = new nlc.LlamaCompletion({ contextSequence: context.getSequence() });
const promptTokens = model.tokenize(prompt!).length + 1; // + BOS
const stamps: number[] = [];
const t0 = performance.now();
const r = await completion.generateCompletionWithMeta(prompt!, {
  maxTokens: Number(nArg),
  temperature: 0,
  repeatPenalty: false,
  onToken: (toks) => {
    for (let i = 0; i < toks.length; i++) stamps.push(performance.now());
  },
});
// The first token arrives after the prompt pass; each later one costs one decode pass.
const promptMs = stamps[0]! - t0;
const decodeMs = stamps[stamps.length - 1]! - stamps[0]!;
process.stdout.write(
  JSON.stringify({
    promptTokens,
    promptTokPerS: promptTokens / (promptMs / 1000),
    generated: stamps.length,
    decodeTokPerS: (stamps.length - 1) / (decodeMs / 1000),
    stop: r.metadata.stopReason,
  }) + "\n",
);
await context.dispose();
await model.dispose();
await llama.dispose();
