/** Run one of the project's executables as a user would, capturing its output. */
import { spawn, type ChildProcess } from "node:child_process";
import * as path from "node:path";
import { after } from "node:test";

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export type Bin = "client" | "llamesh" | "worker";

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  /** Written to the child's stdin, which is then closed; without it stdin is /dev/null. */
  stdin?: string;
  /** A stdin pipe left open (the child waits on it). */
  keepStdinOpen?: boolean;
  timeoutMs?: number;
  /** Another script than bin/<bin> (e.g. a copy of it elsewhere). */
  script?: string;
}

/** A running executable: its output so far, a way to wait for a line, and its end. */
export interface SpawnedCli {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first match of `re` in stdout (or stderr, with `stream`). */
  waitFor(re: RegExp, stream?: "stdout" | "stderr"): Promise<RegExpExecArray>;
  /** Resolves when the process has ended and its output is read. */
  done: Promise<CliResult>;
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

export function spawnCli(bin: Bin, args: string[], opts: SpawnOptions = {}): SpawnedCli {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const child = spawn(process.execPath, [opts.script ?? path.resolve("bin", bin), ...args], {
    env: { ...hermetic(), ...opts.env },
    stdio: [opts.stdin === undefined && !opts.keepStdinOpen ? "ignore" : "pipe", "pipe", "pipe"],
  });
  live.add(child);
  if (opts.stdin !== undefined) child.stdin!.end(opts.stdin);
  const out = { stdout: "", stderr: "" };
  const waiters: { re: RegExp; stream: "stdout" | "stderr"; resolve: (m: RegExpExecArray) => void }[] = [];
  const check = (): void => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i]!;
      const m = w.re.exec(out[w.stream]);
      if (m) {
        waiters.splice(i, 1);
        w.resolve(m);
      }
    }
  };
  child.stdout!.on("data", (d: Buffer) => {
    out.stdout += d.toString();
    check();
  });
  child.stderr!.on("data", (d: Buffer) => {
    out.stderr += d.toString();
    check();
  });
  const done = new Promise<CliResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${bin} ${args.join(" ")}: timed out after ${timeoutMs} ms\n${out.stderr}`));
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, ...out });
    });
  });
  return {
    child,
    stdout: () => out.stdout,
    stderr: () => out.stderr,
    waitFor: (re, stream = "stdout") =>
      new Promise((resolve, reject) => {
        const m = re.exec(out[stream]);
        if (m) return resolve(m);
        waiters.push({ re, stream, resolve });
        // an end without the match is a failure, with what was printed
        void done.then(
          (r) => reject(new Error(`${bin} ended (status ${r.code}) without printing ${re} on ${stream}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`)),
          reject,
        );
      }),
    done,
  };
}

export function runCli(bin: Bin, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000, stdin?: string): Promise<CliResult> {
  return spawnCli(bin, args, { env, timeoutMs, stdin }).done;
}
