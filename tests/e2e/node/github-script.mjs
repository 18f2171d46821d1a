// Runs a script the way an `actions/github-script` step does: as the body of an async
// function, with the real `@actions/core` as `core` and `fetch` in scope.
//
//   node github-script.mjs readme README.md NAME   the `script: |` of the YAML block that
//                                                  follows `<!-- e2e: NAME -->` in README.md
//   node github-script.mjs file SCRIPT.js          a script body kept in a file
//
// The README examples are run as they are written, so they are the code under test (one
// source, not a copy). They call the gateway at https://exchanger.example.com, the
// placeholder a user replaces with their own gateway, and ask for an ID token with that
// audience. Here the gateway listens on loopback at EXCHANGER_URL, so the `fetch` handed to
// the script routes requests for that one origin to EXCHANGER_URL — what a hosts-file entry
// would do; the script text is not rewritten, and the audience stays the README's (the test
// gateway is configured to accept it). Any other URL is fetched as it is.
//
// Like github-script, an exception thrown by the script fails the step with
// `Unhandled error: …`; `core.setFailed` sets the exit code to 1.

import { readFileSync } from 'node:fs';
import * as core from '@actions/core';

const EXAMPLE_ORIGIN = 'https://exchanger.example.com';

function readmeScript(readmePath, name) {
  const lines = readFileSync(readmePath, 'utf8').split(/\r?\n/);
  const marker = `<!-- e2e: ${name} -->`;
  const at = lines.findIndex((line) => line.trim() === marker);
  if (at < 0) throw new Error(`${readmePath}: no ${marker}`);
  if (!/^\s*```ya?ml\s*$/.test(lines[at + 1] ?? '')) {
    throw new Error(`${readmePath}:${at + 2}: ${marker} must be followed by a \`\`\`yaml block`);
  }
  const end = lines.findIndex((line, i) => i > at + 1 && /^\s*```\s*$/.test(line));
  if (end < 0) throw new Error(`${readmePath}:${at + 2}: the block after ${marker} never ends`);
  const block = lines.slice(at + 2, end);
  const start = block.findIndex((line) => /^\s*script:\s*\|\s*$/.test(line));
  if (start < 0) throw new Error(`${readmePath}: the block after ${marker} has no \`script: |\``);
  // A YAML literal block: the lines indented deeper than `script:` (blank lines included),
  // less the indentation of its first non-blank line; trailing blank lines dropped.
  const keyIndent = block[start].search(/\S/);
  const body = [];
  for (const line of block.slice(start + 1)) {
    if (line.trim() !== '' && line.search(/\S/) <= keyIndent) break;
    body.push(line);
  }
  while (body.length > 0 && body[body.length - 1].trim() === '') body.pop();
  const first = body.find((line) => line.trim() !== '');
  if (first === undefined) throw new Error(`${readmePath}: the script after ${marker} is empty`);
  const indent = first.search(/\S/);
  return body.map((line) => line.slice(indent)).join('\n') + '\n';
}

function routedFetch(gatewayUrl) {
  const gateway = new URL(gatewayUrl);
  return (input, init) => {
    const url = new URL(input instanceof Request ? input.url : input);
    if (url.origin !== EXAMPLE_ORIGIN) return fetch(input, init);
    url.protocol = gateway.protocol;
    url.host = gateway.host;
    return fetch(input instanceof Request ? new Request(url, input) : url, init);
  };
}

async function main(argv) {
  const [kind, ...rest] = argv;
  let script;
  if (kind === 'readme' && rest.length === 2) script = readmeScript(rest[0], rest[1]);
  else if (kind === 'file' && rest.length === 1) script = readFileSync(rest[0], 'utf8');
  else throw new Error('usage: github-script.mjs readme README.md NAME | file SCRIPT.js');
  const gatewayUrl = process.env.EXCHANGER_URL;
  if (!gatewayUrl) throw new Error('set EXCHANGER_URL to the gateway under test');

  const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
  const run = new AsyncFunction('core', 'fetch', script);
  try {
    await run(core, routedFetch(gatewayUrl));
  } catch (error) {
    core.setFailed(`Unhandled error: ${error}`);
  }
}

main(process.argv.slice(2)).catch((error) => {
  console.error(`github-script.mjs: ${error.message}`);
  process.exitCode = 2;
});
