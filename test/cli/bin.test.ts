/** bin/* before `npm install`: one line saying what to do, not Node's ERR_MODULE_NOT_FOUND stack. */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { spawnCli, type Bin } from "../helpers/cli.js";
import { tempDir } from "../helpers/models.js";

/** A copy of the package's bin/ (and package.json) in a folder of its own, with what `extra` adds. */
function copyOfBin(extra: (root: string) => void = () => undefined): string {
  const root = tempDir("llamesh-unbuilt-");
  fs.cpSync(path.resolve("bin"), path.join(root, "bin"), { recursive: true });
  fs.copyFileSync(path.resolve("package.json"), path.join(root, "package.json"));
  extra(root);
  return root;
}

test("without dist/: a one-line message saying to run npm install, status 1", async () => {
  const root = copyOfBin();
  for (const bin of ["client", "llamesh", "worker"] as Bin[]) {
    const r = await spawnCli(bin, ["--help"], { script: path.join(root, "bin", bin) }).done;
    assert.equal(r.code, 1, bin);
    assert.equal(r.stdout, "");
    assert.equal(
      r.stderr,
      `error: llamesh is not built (${path.join(root, "dist", "src", "cli", `${bin}.js`)} is missing): run \`npm install\` in ${root}, which compiles it into dist/\n`,
    );
  }
});

test("with dist/ but without node_modules/: a one-line message too", async () => {
  const root = copyOfBin((r) => fs.cpSync(path.resolve("dist", "src"), path.join(r, "dist", "src"), { recursive: true }));
  const r = await spawnCli("client", ["--help"], { script: path.join(root, "bin", "client") }).done;
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: llamesh is not installed completely \(Cannot find package '@huggingface\/[a-z]+'.*\): run `npm install` in .*\n$/);
  assert.equal(r.stderr.split("\n").length, 2, "one line");
});
