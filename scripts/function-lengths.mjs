#!/usr/bin/env node
// Lists the functions longer than LIMIT lines in the given TypeScript files (the TypeScript compiler's AST).
// Usage: node scripts/function-lengths.mjs 80 src/cluster/*.ts   (prints nothing when none is longer)
import ts from "typescript"; import fs from "node:fs";
const limit = Number(process.argv[2]); const files = process.argv.slice(3);
for (const f of files) {
  const src = ts.createSourceFile(f, fs.readFileSync(f, "utf8"), ts.ScriptTarget.Latest, true);
  const visit = (n) => {
    if ((ts.isFunctionDeclaration(n) || ts.isMethodDeclaration(n) || ts.isArrowFunction(n) || ts.isFunctionExpression(n) || ts.isConstructorDeclaration(n)) && n.body) {
      const a = src.getLineAndCharacterOfPosition(n.getStart()).line, b = src.getLineAndCharacterOfPosition(n.end).line;
      if (b - a + 1 > limit) console.log(`${f}:${a + 1} ${b - a + 1} lines ${n.name?.getText?.() ?? "(anon)"}`);
    }
    ts.forEachChild(n, visit);
  };
  visit(src);
}
