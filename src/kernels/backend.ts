/**
 * Chooses the kernel backend: WebAssembly SIMD on a thread pool (wasm.ts) when the runtime has
 * SIMD, else the TypeScript reference (announced by one log line).
 */
export { createBackend } from "./wasm.js";
export type { KernelBackend } from "./kernels.js";
