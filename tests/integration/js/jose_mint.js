// SPDX-License-Identifier: MIT
// jose_mint.js: mints ES256 tokens with the npm `jose` library (nobody here wrote it) for
// herald's auth tests.
//
//   node jose_mint.js KID CLAIMS_JSON [CLAIMS_JSON ...]
//
// Generates a P-256 key pair, then prints one JSON object on stdout:
//   {"jwks": {"keys": [public JWK with kid, alg ES256, use sig]},
//    "tokens": [compact JWS of each CLAIMS_JSON, header {alg: ES256, kid}]}
'use strict';
const jose = require('jose');

async function main() {
  const args = process.argv.slice(2);
  const kid = args.shift();
  const { publicKey, privateKey } = await jose.generateKeyPair('ES256');
  const jwk = await jose.exportJWK(publicKey);
  jwk.kid = kid;
  jwk.alg = 'ES256';
  jwk.use = 'sig';
  const tokens = [];
  for (const claims of args) {
    tokens.push(await new jose.SignJWT(JSON.parse(claims))
      .setProtectedHeader({ alg: 'ES256', kid: kid })
      .sign(privateKey));
  }
  process.stdout.write(JSON.stringify({ jwks: { keys: [jwk] }, tokens: tokens }) + '\n');
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
