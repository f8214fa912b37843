/**
 * Chooses the kernel backend: WebAssembly SIMD on a thread pool when the runtime has SIMD,
 * else the TypeScript reference (announced by one log line).
 */
import type { KernelBackend } from "./kernels.js";
import { ReferenceBackend } from "./reference.js";

export interface BackendOptions {
  threads: number;
  log?: (line: string) => void;
  /** Use the plain TypeScript kernels even where WebAssembly SIMD works. */
  forceReference?: boolean;
}

export async function createBackend(opts: BackendOptions): Promise<KernelBackend> {
  if (!opts.forceReference) {
    // TODO(kernels): WebAssembly SIMD backend lands here.
  }
  return new ReferenceBackend();
}
