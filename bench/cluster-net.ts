/**
 * The LAN of `npm run bench:cluster`: "hosts" that are Linux network namespaces (lmsh-h0,
 * lmsh-h1, ...), each with one veth link to a bridge in its own namespace (lmsh-sw), the switch.
 * Both ends of every link are shaped to 1 Gbit/s with `tc tbf` (netem is not available on these
 * machines, so no latency is added: what the bench measures is the kernel's and Node's own).
 * Traffic never leaves the namespaces created here; teardown() deletes them.
 *
 * Also the processes placed on those hosts: workers (bin/worker pinned to a core with taskset),
 * the bench's own client phase, and a message echo (bench/echo.ts) that measures a link's
 * latency and throughput for Node processes independently of the cluster code.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const SWITCH = "lmsh-sw";
const BRIDGE = "lmsh-br";

export interface Host {
  ns: string;
  ip: string;
}

export function sh(cmd: string, args: string[], allowFail = false): { ok: boolean; out: string } {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  const ok = r.status === 0;
  if (!ok && !allowFail) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr || r.error?.message || `exit ${r.status}`}`);
  return { ok, out: (r.stdout ?? "") + (r.stderr ?? "") };
}

/** Why this machine cannot run the bench (null: it can). */
export function cannotRun(): string | null {
  if (process.platform !== "linux") return `needs Linux network namespaces (ip netns) and tc; this is ${process.platform}`;
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    return "creating network namespaces and shaping the veth links with tc needs root (run: sudo npm run bench:cluster)";
  }
  for (const tool of ["ip", "tc", "taskset"]) {
    if (!sh("sh", ["-c", `command -v ${tool}`], true).ok) return `${tool} is not installed (iproute2 and util-linux are needed)`;
  }
  return null;
}

const hostName = (i: number): string => `lmsh-h${i}`;

/** Delete every namespace this bench may have created (also those of an interrupted run). */
export function teardown(): void {
  const listed = sh("ip", ["netns", "list"], true).out;
  for (const m of listed.matchAll(/^(lmsh-[a-z0-9-]+)/gm)) sh("ip", ["netns", "del", m[1]!], true);
}

/** Create `n` hosts on one 1 Gbit/s switch; host i has address 10.231.77.(10 + i). */
export function createLan(n: number): Host[] {
  teardown();
  sh("ip", ["netns", "add", SWITCH]);
  sh("ip", ["-n", SWITCH, "link", "add", BRIDGE, "type", "bridge"]);
  sh("ip", ["-n", SWITCH, "link", "set", BRIDGE, "up"]);
  const shape = (ns: string, dev: string): void => {
    // 1 Gbit/s token bucket (burst ~ 1 ms of traffic, queue up to 10 ms)
    sh("ip", ["netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", "1gbit", "burst", "128kb", "latency", "10ms"]);
  };
  const hosts: Host[] = [];
  for (let i = 0; i < n; i++) {
    const ns = hostName(i);
    const ip = `10.231.77.${10 + i}`;
    sh("ip", ["netns", "add", ns]);
    sh("ip", ["link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", `port${i}`, "netns", SWITCH]);
    sh("ip", ["-n", SWITCH, "link", "set", `port${i}`, "master", BRIDGE]);
    sh("ip", ["-n", SWITCH, "link", "set", `port${i}`, "up"]);
    sh("ip", ["-n", ns, "addr", "add", `${ip}/24`, "dev", "eth0"]);
    sh("ip", ["-n", ns, "link", "set", "eth0", "up"]);
    sh("ip", ["-n", ns, "link", "set", "lo", "up"]);
    shape(ns, "eth0");
    shape(SWITCH, `port${i}`);
    hosts.push({ ns, ip });
  }
  return hosts;
}

export interface BenchWorker {
  child: ChildProcess;
  host: Host;
  port: number;
  err: () => string;
}

/** bin/worker (of the checkout at `root`, default this one) on `host`, pinned to `core`, 1 thread; resolves once it listens. */
export function startWorker(host: Host, core: number, cacheDir: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}, root = ROOT): Promise<BenchWorker> {
  return new Promise((resolve, reject) => {
    const args = ["netns", "exec", host.ns, "taskset", "-c", String(core), process.execPath, path.join(root, "bin", "worker"), "0", "--host", host.ip, "--threads", "1", "--cache-dir", cacheDir, ...extra];
    const child = spawn("ip", args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
    let out = "";
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening [^\s]*:(\d+)/.exec(out);
      if (m) resolve({ child, host, port: Number(m[1]), err: () => err });
    });
    child.on("exit", (code) => {
      if (!/listening/.test(out)) reject(new Error(`worker on ${host.ns} exited with ${code}: ${err}`));
    });
  });
}

/** Run `script` (a dist/bench file) with `args` on `host` pinned to `cores`; its last stdout line is JSON. */
export function runJson<T>(host: Host, cores: string, script: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn("ip", ["netns", "exec", host.ns, "taskset", "-c", cores, process.execPath, script, ...args], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, ...env },
    });
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.on("exit", (code) => {
      const line = out.trim().split("\n").pop() ?? "";
      if (code !== 0) return reject(new Error(`${path.basename(script)} on ${host.ns} exited with ${code}`));
      resolve(JSON.parse(line) as T);
    });
  });
}

export function fmtBytes(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} KB` : `${n.toFixed(0)} B`;
}

export const median = (x: readonly number[]): number => [...x].sort((p, q) => p - q)[Math.floor(x.length / 2)]!;

/** A markdown table, columns padded. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string => "| " + r.map((c, i) => c.padEnd(widths[i]!)).join(" | ") + " |\n";
  return line(rows[0]!) + "|" + rows[0]!.map((_, i) => "-".repeat(widths[i]! + 2)).join("|") + "|\n" + rows.slice(1).map(line).join("");
}
