// The rider's phone app as a CLI: personalize a virtual card (issuer side),
// show it, enroll it with the issuer, and tap it at a terminal.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { Command } from 'commander';
import { issueCard, newTerminalRandom, readCardFile, writeCardFile, writeCreditFlag, zeroAmountDebit } from '../common/card.js';
import { dataDir, DEFAULT_PORTS } from '../common/config.js';
import { decodeErrorDetails } from '../common/errors.js';
import { ensureDevKeys, loadMasterKey } from '../common/keys.js';
import { callUnary } from '../common/rpc.js';
import { EnrollCardResponse, IssuerServiceClient } from '../gen/tapcredit/issuer/v1/issuer.js';
import { decisionToJSON, declineReasonToJSON, TerminalServiceClient } from '../gen/tapcredit/terminal/v1/terminal.js';
import { CardImage } from '../gen/tapcredit/type/v1/card.js';
import { Money } from '../gen/tapcredit/type/v1/money.js';

/** The reader id the phone app uses for its zero-amount debits. */
const PHONE_READER_ID = 'phone';
const DATE_PATTERN = /^\d{4}-\d{2}-\d{2}$/;

const print = (value: unknown) => console.log(JSON.stringify(value, null, 2));

/** Four years from today (UTC), the usual life of a transit card. */
function defaultExpiry(): string {
  const d = new Date();
  d.setUTCFullYear(d.getUTCFullYear() + 4);
  return d.toISOString().slice(0, 10);
}

const program = new Command()
  .name('phone')
  .description('tapcredit phone app: enroll a virtual transit card and tap it at a terminal')
  // Read by common/config.ts dataDir(); declared here so commander accepts it.
  .option('--data-dir <dir>', 'data directory holding the development keys (default ./data or TAPCREDIT_DATA_DIR)')
  .showHelpAfterError();

const card = program.command('card').description('virtual card images');

card
  .command('issue')
  .description('personalize a new virtual card, as the issuer does before handing it out')
  .requiredOption('--card-id <id>', 'card number')
  .requiredOption('--out <file>', 'card image file to write')
  .option('--issuer-code <code>', 'issuer code', 'CITY1')
  .option('--expires-on <date>', 'last valid day, YYYY-MM-DD (default: 4 years ahead)')
  .option('--master-key-file <file>', 'issuer master key (hex); default <data dir>/keys/master.key')
  .action((opts: { cardId: string; out: string; issuerCode: string; expiresOn?: string; masterKeyFile?: string }) => {
    const expiresOn = opts.expiresOn ?? defaultExpiry();
    if (!DATE_PATTERN.test(expiresOn) || Number.isNaN(Date.parse(expiresOn))) throw new Error('--expires-on must be a date YYYY-MM-DD');
    const masterKey = loadMasterKey(opts.masterKeyFile ?? ensureDevKeys(join(dataDir(), 'keys')).masterKeyFile);
    const issued = issueCard(masterKey, { cardId: opts.cardId, issuerCode: opts.issuerCode, expiresOn });
    writeCardFile(opts.out, issued);
    print({ issued: opts.out, card: maskedCard(issued) });
  });

card
  .command('show')
  .description('print a card image (its key masked) and whether it holds a credit flag')
  .argument('<file>', 'card image file')
  .action((file: string) => {
    const image = readCardFile(file);
    print({ card: maskedCard(image), creditFlagPresent: image.creditFlag !== undefined });
  });

program
  .command('enroll')
  .description("read the card and enroll it with the issuer for the rider's payment account; writes the credit flag into the card")
  .requiredOption('--card <file>', 'card image file')
  .requiredOption('--name <name>', "rider's full name, as registered with the authorizer")
  .requiredOption('--phone <e164>', "rider's mobile number, e.g. +8613800138000")
  .requiredOption('--account <id>', "rider's payment account at the authorizer")
  .option('--request-id <id>', 'idempotency key (default: a random UUID); reuse it to retry safely')
  .option('--issuer <address>', 'IssuerService address', `127.0.0.1:${DEFAULT_PORTS.issuer}`)
  .action(async (opts: { card: string; name: string; phone: string; account: string; requestId?: string; issuer: string }) => {
    // Reading the card is a zero-amount debit: the card advances its counter,
    // so the image is written back before anything else can fail.
    const read = zeroAmountDebit(readCardFile(opts.card), {
      terminalId: PHONE_READER_ID,
      terminalSequence: 0n,
      terminalRandom: newTerminalRandom(),
    });
    writeCardFile(opts.card, read.card);

    const client = new IssuerServiceClient(opts.issuer, credentials.createInsecure());
    try {
      const response = await callUnary(client, client.enrollCard, {
        requestId: opts.requestId ?? randomUUID(),
        card: { issuerCode: read.card.issuerCode, expiresOn: read.card.expiresOn, proof: read.proof },
        rider: { name: opts.name, phoneNumber: opts.phone },
        accountId: opts.account,
      });
      if (!response.creditFlag) throw new Error('the issuer returned no credit flag');
      writeCardFile(opts.card, writeCreditFlag(readCardFile(opts.card), response.creditFlag));
      print(EnrollCardResponse.toJSON({ enrollment: response.enrollment, creditFlag: undefined }));
    } finally {
      client.close();
    }
  });

program
  .command('tap')
  .description('present the card to a terminal and write the card back as the terminal left it')
  .requiredOption('--card <file>', 'card image file')
  .option('--terminal <address>', 'TerminalService address', `127.0.0.1:${DEFAULT_PORTS.terminal}`)
  .action(async (opts: { card: string; terminal: string }) => {
    const client = new TerminalServiceClient(opts.terminal, credentials.createInsecure());
    try {
      const response = await callUnary(client, client.presentCard, { card: readCardFile(opts.card) });
      if (response.card) writeCardFile(opts.card, response.card);
      print({
        decision: decisionToJSON(response.decision),
        declineReason: response.declineReason ? declineReasonToJSON(response.declineReason) : undefined,
        fare: response.tap?.fare ? Money.toJSON(response.tap.fare) : undefined,
        tapId: response.tap?.tapId,
      });
    } finally {
      client.close();
    }
  });

/** The card as JSON with its secret key masked: it is never printed. */
function maskedCard(image: CardImage) {
  return {
    ...(CardImage.toJSON(image) as object),
    counter: image.counter, // proto JSON omits a zero counter; a rider wants to see it
    cardKey: image.cardKey.length > 0 ? '<masked>' : '',
  };
}

function isServiceError(err: unknown): err is ServiceError {
  return typeof (err as ServiceError)?.code === 'number' && (err as ServiceError).metadata !== undefined;
}

try {
  await program.parseAsync();
} catch (err) {
  if (isServiceError(err)) {
    const { errorInfo, badRequest } = decodeErrorDetails(err);
    console.error(`error: ${status[err.code] ?? err.code}: ${err.details || err.message}`);
    if (errorInfo?.reason) console.error(`reason: ${errorInfo.reason}`);
    for (const v of badRequest?.fieldViolations ?? []) console.error(`  ${v.field}: ${v.description}`);
  } else {
    console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
  }
  process.exit(1);
}
