// `npm run certs`: a development CA and an mTLS certificate per identity
// (issuer, authorizer, each terminal, ops, phone app) in data/certs, as
// common/pki.ts makes them. Existing files are kept, so running it again only
// adds what is missing (e.g. a new terminal); --reissue renews the
// certificates under the same CA.
import { Command } from 'commander';
import { join } from 'node:path';
import { CRL_FILE, DEV_PKI_DEFAULTS, ensureDevPki, revokeInDir } from '../common/pki.js';
import { certsDir } from '../common/tls.js';

const list = (value: string) =>
  value
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean);

const opts = new Command()
  .name('certs')
  .description('create a development CA and the mTLS certificates of every tapcredit identity')
  .option('--certs-dir <dir>', 'where to write them (default <data dir>/certs, or TAPCREDIT_CERTS_DIR)')
  .option('--data-dir <dir>', 'data directory (default ./data or TAPCREDIT_DATA_DIR)')
  .option('--issuer-id <id>', 'issuer id (the name in the issuer certificate)', DEV_PKI_DEFAULTS.issuerId)
  .option('--authorizer-id <id>', 'authorizer id (the name in the authorizer certificate)', DEV_PKI_DEFAULTS.authorizerId)
  .option('--terminals <ids>', 'terminal ids, comma-separated', DEV_PKI_DEFAULTS.terminalIds.join(','))
  .option('--hosts <names>', 'extra DNS names / IP addresses of the servers, comma-separated (localhost, 127.0.0.1 and ::1 are always in)', '')
  .option('--reissue', 'issue every certificate anew (the CA is kept)')
  .option('--revoke <name>', 'revoke the certificate <name>.pem of the directory (e.g. terminal-T0001, phone): its serial goes on the CRL (crl.pem) every server watches; then --reissue gives that identity a new certificate')
  .parse()
  .opts<{ issuerId: string; authorizerId: string; terminals: string; hosts: string; reissue?: boolean; revoke?: string }>();

// certsDir() reads --certs-dir / --data-dir itself (common/config.ts).
const dir = certsDir();
if (opts.revoke) {
  const serial = await revokeInDir(dir, opts.revoke);
  console.log(`revoked ${opts.revoke} (serial ${serial}) in ${join(dir, CRL_FILE)}; servers refuse it within a second`);
  process.exit(0);
}
const written = await ensureDevPki(dir, {
  issuerId: opts.issuerId,
  authorizerId: opts.authorizerId,
  terminalIds: list(opts.terminals),
  hosts: list(opts.hosts),
  reissue: opts.reissue,
});
console.log(written.length > 0 ? `wrote ${written.length} certificates in ${dir}:\n  ${written.join('\n  ')}` : `certificates in ${dir} are complete; nothing written`);
