// The rider's phone app as a CLI: personalize a virtual card (issuer side),
// show it, enroll it with the issuer, tap it at a terminal, list its rides,
// unenroll it or report it lost, and retry its debts.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status, type ChannelCredentials, type ServiceError } from '@grpc/grpc-js';
import { Command } from 'commander';
import { issueCard, readCardFile, writeCardFile } from '../common/card.js';
import { CardEmulator, readForEnrollment } from '../common/card-emulator.js';
import { booleanFlag, dataDir, DEFAULT_PORTS } from '../common/config.js';
import { decodeErrorDetails } from '../common/errors.js';
import { ensureDevKeys, loadMasterKey } from '../common/keys.js';
import type { Role } from '../common/identity.js';
import { presentCard } from '../common/present-card.js';
import { callUnary } from '../common/rpc.js';
import { channelCredentials, chooseTransport, tlsFilesFromSettings } from '../common/tls.js';
import { freshSession, sessionFile, signIn, signOut } from './session.js';
import {
  EnrollCardResponse,
  IssuerServiceClient,
  ReportCardLostResponse,
  RetryDebtsResponse,
  tapStateToJSON,
  UnenrollCardResponse,
} from '../gen/tapcredit/issuer/v1/issuer.js';
import { decisionToJSON, declineReasonToJSON, TerminalServiceClient } from '../gen/tapcredit/terminal/v1/terminal.js';
import { CardImage } from '../gen/tapcredit/type/v1/card.js';
import { Money } from '../gen/tapcredit/type/v1/money.js';

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
  // Read by common/tls.ts; declared here so commander accepts them.
  .option('--certs-dir <dir>', 'mTLS certificates from `npm run certs` (default <data dir>/certs or TAPCREDIT_CERTS_DIR)')
  .option('--tls-ca <file>', 'CA certificate (default <certs dir>/ca.pem)')
  .option('--tls-cert <file>', "the phone app's certificate (default <certs dir>/phone.pem)")
  .option('--tls-key <file>', "the phone app's private key (default <certs dir>/phone.key)")
  .option('--insecure', 'plaintext instead of mTLS (only to loopback addresses)')
  // Read by phone/session.ts.
  .option('--session <file>', "the rider's sign-in (tokens), written by sign-in (default <data dir>/phone-session.json or TAPCREDIT_PHONE_SESSION)")
  .showHelpAfterError();

program
  .command('sign-in')
  .description("sign the rider in at the credit authorizer; the tokens are kept in the session file and every rider command sends them")
  .requiredOption('--account <id>', "rider's payment account at the authorizer")
  .option('--password-file <file>', 'file holding the password (default: the TAPCREDIT_RIDER_PASSWORD environment variable)')
  .option('--issuer-id <id>', 'the issuer the token is for', 'issuer-1')
  .option('--authorizer <address>', 'AuthorizerService address', `localhost:${DEFAULT_PORTS.authorizer}`)
  .action(async (opts: { account: string; passwordFile?: string; issuerId: string; authorizer: string }) => {
    const password = opts.passwordFile ? readFileSync(opts.passwordFile, 'utf8').replace(/\r?\n$/, '') : process.env.TAPCREDIT_RIDER_PASSWORD;
    if (!password) throw new Error('give the password with --password-file or TAPCREDIT_RIDER_PASSWORD');
    const session = await signIn(sessionFile(), {
      accountId: opts.account,
      password,
      audience: opts.issuerId,
      authorizer: opts.authorizer,
      creds: credentialsTo('authorizer', opts.authorizer),
    });
    print({ signedIn: session.accountId, accessTokenExpiresAt: session.accessTokenExpiresAt });
  });

program
  .command('sign-out')
  .description('end the sign-in: the authorizer revokes its refresh token and the session file is removed')
  .action(async () => print({ signedOut: await signOut(sessionFile(), (a) => credentialsTo('authorizer', a)) }));

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
  .option('--issuer <address>', 'IssuerService address', `localhost:${DEFAULT_PORTS.issuer}`)
  .action(async (opts: { card: string; name: string; phone: string; account: string; requestId?: string; issuer: string }) => {
    const creds = credentialsTo('issuer', opts.issuer); // fails on missing certificates before the card is touched
    const token = await riderToken(); // and without a sign-in
    // The phone reads its own card as a reader does: READ, then a zero-amount
    // debit for reader "phone". The card writes its advanced counter back to
    // the file before it answers, so nothing later can lose it.
    const card = CardEmulator.fromFile(opts.card);
    const { read, proof } = readForEnrollment(card);

    const client = new IssuerServiceClient(opts.issuer, creds);
    try {
      const response = await callUnary(client, client.enrollCard, {
        requestId: opts.requestId ?? randomUUID(),
        card: { issuerCode: read.issuerCode, expiresOn: read.expiresOn, proof },
        rider: { name: opts.name, phoneNumber: opts.phone },
        accountId: opts.account,
      }, undefined, token);
      if (!response.creditFlag) throw new Error('the issuer returned no credit flag');
      card.writeCreditFlag(response.creditFlag);
      print(EnrollCardResponse.toJSON({ enrollment: response.enrollment, creditFlag: undefined }));
    } finally {
      client.close();
    }
  });

program
  .command('tap')
  .description("hold the card to a terminal's reader: the card answers the terminal's commands (its key never leaves it) and its file keeps the advanced counter")
  .requiredOption('--card <file>', 'card image file')
  .option('--terminal <address>', 'TerminalService address', `localhost:${DEFAULT_PORTS.terminal}`)
  .action(async (opts: { card: string; terminal: string }) => {
    const client = new TerminalServiceClient(opts.terminal, credentialsTo('terminal', opts.terminal));
    try {
      const response = await presentCard(client, CardEmulator.fromFile(opts.card));
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

/** Money with its amount always shown (proto JSON omits a zero). */
const moneyJSON = (m: Money | undefined) => m && { currencyCode: m.currencyCode, minorUnits: m.minorUnits };

/**
 * The rider's access token, refreshed when it is about to expire. Over mTLS a
 * rider call needs one; a plaintext (--insecure, loopback) issuer checks none.
 */
async function riderToken(): Promise<string | undefined> {
  const session = await freshSession(sessionFile(), (a) => credentialsTo('authorizer', a));
  if (!session && !booleanFlag('insecure')) throw new Error('sign in first: npm run phone -- sign-in --account <id> (password in TAPCREDIT_RIDER_PASSWORD)');
  return session?.accessToken;
}

/** Calls the issuer as the phone app, for the signed-in rider, and prints the answer. */
async function askIssuer<Res>(address: string, call: (client: IssuerServiceClient, token: string | undefined) => Promise<Res>, toJSON: (r: Res) => unknown): Promise<void> {
  const creds = credentialsTo('issuer', address);
  const token = await riderToken();
  const client = new IssuerServiceClient(address, creds);
  try {
    print(toJSON(await call(client, token)));
  } finally {
    client.close();
  }
}

program
  .command('history')
  .description("list the card's rides, newest first: time, terminal, line, fare, amount charged, state, debt and recovery")
  .requiredOption('--card-id <id>', 'card number')
  .option('--page-size <n>', 'rides per page (default 50)', '50')
  .option('--page-token <token>', 'next_page_token of the previous page')
  .option('--issuer <address>', 'IssuerService address', `localhost:${DEFAULT_PORTS.issuer}`)
  .action((opts: { cardId: string; pageSize: string; pageToken?: string; issuer: string }) =>
    askIssuer(
      opts.issuer,
      (c, token) => callUnary(c, c.listCardTaps, { cardId: opts.cardId, pageSize: Number(opts.pageSize), pageToken: opts.pageToken ?? '' }, undefined, token),
      (r) => ({
        taps: r.taps.map((t) => ({
          tapId: t.tap?.tapId,
          tappedAt: t.tap?.tappedAt?.toISOString(),
          terminalId: t.tap?.terminalId,
          lineId: t.tap?.lineId,
          fare: moneyJSON(t.tap?.fare),
          amountDue: moneyJSON(t.amountDue),
          charged: moneyJSON(t.charged),
          state: tapStateToJSON(t.state),
          declineReason: t.declineReason || undefined,
          recovered: t.recovered || undefined,
          nextRetryAt: t.nextRetryAt?.toISOString(),
          cloneReason: t.cloneReason || undefined,
        })),
        nextPageToken: r.nextPageToken || undefined,
      }),
    ),
  );

program
  .command('unenroll')
  .description('unenroll the card: the issuer revokes the payment agreement and the gates decline the card; it can be enrolled again')
  .requiredOption('--card-id <id>', 'card number')
  .requiredOption('--account <id>', 'the payment account the card is bound to')
  .option('--issuer <address>', 'IssuerService address', `localhost:${DEFAULT_PORTS.issuer}`)
  .action((opts: { cardId: string; account: string; issuer: string }) =>
    askIssuer(opts.issuer, (c, token) => callUnary(c, c.unenrollCard, { cardId: opts.cardId, accountId: opts.account }, undefined, token), UnenrollCardResponse.toJSON),
  );

program
  .command('lost')
  .description('report the card lost: the gates decline it for good; enroll a new card on the same account')
  .requiredOption('--card-id <id>', 'card number')
  .requiredOption('--account <id>', 'the payment account the card is bound to')
  .option('--issuer <address>', 'IssuerService address', `localhost:${DEFAULT_PORTS.issuer}`)
  .action((opts: { cardId: string; account: string; issuer: string }) =>
    askIssuer(opts.issuer, (c, token) => callUnary(c, c.reportCardLost, { cardId: opts.cardId, accountId: opts.account }, undefined, token), ReportCardLostResponse.toJSON),
  );

program
  .command('retry-debts')
  .description("retry the card's declined fares now (after a top-up); once nothing is owed the gates take the card again")
  .requiredOption('--card-id <id>', 'card number')
  .option('--issuer <address>', 'IssuerService address', `localhost:${DEFAULT_PORTS.issuer}`)
  .action((opts: { cardId: string; issuer: string }) =>
    askIssuer(
      opts.issuer,
      (c, token) => callUnary(c, c.retryDebts, { cardId: opts.cardId }, undefined, token),
      (r) => ({ ...(RetryDebtsResponse.toJSON(r) as object), outstandingDebt: moneyJSON(r.outstandingDebt) }),
    ),
  );

/** mTLS with the phone app's certificate to a server that must carry the role; plaintext with --insecure (loopback only). */
function credentialsTo(role: Role, address: string): ChannelCredentials {
  const tls = chooseTransport({ insecure: booleanFlag('insecure'), peerAddresses: [address], files: tlsFilesFromSettings('phone') });
  return channelCredentials(tls, { role });
}

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
