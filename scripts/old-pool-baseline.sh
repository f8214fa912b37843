#!/usr/bin/env bash
# Build the "old pool" baseline for `bench contention --baseline <dir>`: this checkout's code with
# the kernel pool of b47c52d (one static share per thread, before issue 11: no chunk counter, no
# adaptive mode, no takeover) swapped in, so that an A/B measures the pool alone on today's kernels.
# Usage: scripts/old-pool-baseline.sh <dir>   (a git worktree at HEAD; remove it with
# `git worktree remove --force <dir>`). Written against the pool of 2026-12-03; later changes to
# pool-worker.ts's runShare or wasm.ts's CHUNKS_PER_THREAD line may need the patch below adjusted.
set -euo pipefail
dir=${1:?usage: scripts/old-pool-baseline.sh <dir>}
root=$(git rev-parse --show-toplevel)
git -C "$root" worktree add -f "$dir" HEAD >/dev/null
cd "$dir"
ln -s "$root/node_modules" node_modules
git show b47c52d:src/kernels/pool.ts > src/kernels/pool.ts
rm -f src/kernels/pool-adapt.ts
python3 - <<'PY'
def edit(path, pairs):
    s = open(path).read()
    for old, new in pairs:
        if old not in s: raise SystemExit(f"{path}: patch does not apply: {old[:60]!r}")
        s = s.replace(old, new, 1)
    open(path, "w").write(s)
edit("src/kernels/pool.ts", [
    ("C_OP, C_SHARES, C_SLEEPERS,", "C_OP, C_SLEEPERS,"),
    ('} from "./pool-worker.js";', '} from "./pool-worker.js";\n/** The old pool\'s share count slot. */\nconst C_SHARES = 8;'),
    ("static async create(module: WebAssembly.Module, threads: number): Promise<ThreadPool> {",
     "static async create(module: WebAssembly.Module, threads: number, _adaptive = true): Promise<ThreadPool> {"),
    ("run(op: number, id: number, args: ArrayLike<number>, shares: number): void {",
     "run(op: number, id: number, args: ArrayLike<number>, shares: number, _key = -1): void {"),
    ("runShare(k!, op, this.args, 0, 1);", "runShare(k!, op, this.args, 0, 1, 0);"),
    ("runShare(k!, op, this.args, 0, shares);", "runShare(k!, op, this.args, 0, shares, 0);"),
    ("port: port2, index: i },", "port: port2, index: i, oldPool: true },"),
])
old_loop = '''
function oldWorkerMain(init: WorkerInit): void {
  const ctrl = new Int32Array(init.control);
  const args = new Float64Array(init.control, ARGS_BYTE, N_ARGS);
  const errBytes = new Uint8Array(init.control, ERR_BYTE, CONTROL_BYTES - ERR_BYTE);
  const instances: (KernelExports | undefined)[] = [];
  const views: (Float32Array | undefined)[] = [];
  let applied = 0;
  const share = init.index;
  let last = Atomics.load(ctrl, C_GEN);
  let lastSleepReq = Atomics.load(ctrl, C_SLEEP_REQ);
  parentPort?.postMessage("ready");
  for (;;) {
    let g = Atomics.load(ctrl, C_GEN);
    if (g === last) {
      let spinStart = performance.now();
      let i = 0;
      for (;;) {
        g = Atomics.load(ctrl, C_GEN);
        if (g !== last) break;
        if ((++i & 255) !== 0) continue;
        const req = Atomics.load(ctrl, C_SLEEP_REQ);
        if (req !== lastSleepReq || performance.now() - spinStart > SPIN_MS) {
          lastSleepReq = req;
          Atomics.add(ctrl, C_SLEEPERS, 1);
          Atomics.wait(ctrl, C_GEN, last);
          Atomics.sub(ctrl, C_SLEEPERS, 1);
          spinStart = performance.now();
        }
      }
    }
    last = g;
    const op = ctrl[C_OP]!;
    try {
      if (op === OP_BIND) applied = applyBinds(init, instances, views, applied, args[0]!);
      else if (op !== OP_STOP && share < ctrl[8]!) {
        const k = instances[ctrl[C_ARENA]!];
        if (!k) throw new Error(`arena ${ctrl[C_ARENA]} not bound in this thread`);
        runShare(k, op, args, share, ctrl[8]!, share);
      }
    } catch (e) {
      recordError(ctrl, errBytes, share, e);
    }
    Atomics.add(ctrl, C_DONE, 1);
    if (op === OP_STOP) break;
  }
  init.port.close();
}

if (!isMainThread && (workerData as { oldPool?: boolean } | undefined)?.oldPool) {
  oldWorkerMain(workerData as WorkerInit);
  parentPort?.close();
} else if (!isMainThread && (workerData as WorkerInit | undefined)?.llameshKernelPool) {'''
edit("src/kernels/pool-worker.ts", [("\nif (!isMainThread && (workerData as WorkerInit | undefined)?.llameshKernelPool) {", old_loop)])
edit("src/kernels/wasm.ts", [("const CHUNKS_PER_THREAD = 2;", "const CHUNKS_PER_THREAD = 1;")])
PY
# test/ still uses the new pool's API; only src/ and bench/ need to compile
npx tsc -p . >/dev/null || true
test -f dist/src/kernels/pool.js && grep -q oldPool dist/src/kernels/pool.js && echo "old-pool baseline built in $dir"
