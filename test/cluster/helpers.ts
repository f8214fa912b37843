/** Spawning real worker processes on loopback for the cluster tests. */
import { spawn, type ChildProcess } from "node:child_process";
import * as path from "node:path";
import { after } from "node:test";

export interface SpawnedWorker {
  port: number;
  child: ChildProcess;
  stderr: () => string;
  stop: () => Promise<void>;
}

const live = new Set<ChildProcess>();
after(() => {
  for (const c of live) c.kill("SIGKILL");
});

/** This process's environment without a cluster secret the developer may have set. */
function hermetic(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env["LLAMESH_SECRET"];
  return env;
}

/** Start `bin/worker 0 --host 127.0.0.1` and wait for its "listening" line. */
export function spawnWorker(args: string[] = [], env: NodeJS.ProcessEnv = {}, port = 0): Promise<SpawnedWorker> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.resolve("bin", "worker"), String(port), "--host", "127.0.0.1", "--threads", "1", ...args], {
      env: { ...hermetic(), LLAMESH_WORKER_GMAC: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    live.add(child);
    let out = "";
    let err = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`worker did not start in 15 s: ${err}`));
    }, 15_000);
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening [^\s]*:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({
          port: Number(m[1]),
          child,
          stderr: () => err,
          stop: () =>
            new Promise<void>((res) => {
              if (child.exitCode !== null || child.signalCode !== null) return res(); // already gone (killed)
              child.once("exit", () => {
                live.delete(child);
                res();
              });
              child.kill("SIGTERM");
            }),
        });
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (!/listening/.test(out)) reject(new Error(`worker exited with ${code}: ${err}`));
    });
  });
}
