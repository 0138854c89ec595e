// `npm run keys` (deployed: `node dist/scripts/keys.js init`): creates the
// system's secrets once, before any server starts: the card master key, the
// issuer's Ed25519 flag-signing key pair and the authorizer's holder key,
// each where it is missing (existing keys are kept). Servers never create
// keys, so replicas started together cannot each make their own.
import { resolve, join } from 'node:path';
import { Command } from 'commander';
import { ensureAllKeys } from '../common/keys.js';

const program = new Command('keys').description('the secrets of a tapcredit system');
program
  .command('init', { isDefault: true })
  .description('create the keys that are missing (files readable by the owner only) and print where they are')
  .option('--data-dir <dir>', 'data directory; the keys go to <data dir>/keys [env TAPCREDIT_DATA_DIR]', process.env.TAPCREDIT_DATA_DIR || 'data')
  .option('--keys-dir <dir>', 'put the keys here instead of <data dir>/keys')
  .action((opts: { dataDir: string; keysDir?: string }) => {
    const dir = resolve(opts.keysDir ?? join(opts.dataDir, 'keys'));
    const files = ensureAllKeys(dir);
    console.log(`keys in ${dir}:
  TAPCREDIT_MASTER_KEY_FILE=${files.masterKeyFile}          (issuer, terminals)
  TAPCREDIT_SIGNING_KEY_FILE=${files.signingKeyFile}   (issuer)
  TAPCREDIT_ISSUER_PUBLIC_KEY_FILE=${files.publicKeyFile}  (terminals)
  TAPCREDIT_HOLDER_KEY_FILE=${files.holderKeyFile}  (authorizer)`);
  });
await program.parseAsync();
