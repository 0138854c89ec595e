// Shared fixtures of the terminal tests: issuer keys, enrolled cards, a
// terminal on port 0 with a fast forwarder, and a fake IssuerService that
// records every TapReport it receives.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Server, ServerCredentials, status, type ServiceError, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { pino } from 'pino';
import { issueCard, signCreditFlag, writeCreditFlag } from '../../common/card.js';
import { invalidArgument, toServiceError } from '../../common/errors.js';
import {
  IssuerServiceService,
  TapReportStatus,
  type EnrollCardRequest,
  type EnrollCardResponse,
  type TapReportRequest,
  type TapReportResponse,
} from '../../gen/tapcredit/issuer/v1/issuer.js';
import type { CardImage } from '../../gen/tapcredit/type/v1/card.js';
import { startTerminal, type TerminalConfig, type TerminalHandle } from '../../terminal/service.js';

export const silentLog = pino({ level: 'silent' });
export const masterKey = randomBytes(32);
export const issuerKeys = generateKeyPairSync('ed25519');
export const FARE = { currencyCode: 'CNY', minorUnits: '200' };

export const tempDir = () => mkdtempSync(join(tmpdir(), 'tapcredit-terminal-'));
export const removeDir = (dir: string) => rmSync(dir, { recursive: true, force: true });

export const blankCard = (cardId: string, expiresOn = '2099-12-31'): CardImage =>
  issueCard(masterKey, { cardId, issuerCode: 'CITY1', expiresOn });

/** A card enrolled with the test issuer: it holds a validly signed credit flag. */
export const enrolledCard = (cardId: string, expiresOn = '2099-12-31'): CardImage =>
  writeCreditFlag(
    blankCard(cardId, expiresOn),
    signCreditFlag(issuerKeys.privateKey, { cardId, agreementId: `agr_${cardId}`, version: 1, issuedAt: new Date() }),
  );

export function terminalConfig(dir: string, issuerAddress: string, over: Partial<TerminalConfig> = {}): TerminalConfig {
  return {
    terminalId: 'T1',
    issuerCode: 'CITY1',
    databaseUrl: join(dir, 'terminal-T1.sqlite'),
    host: '127.0.0.1',
    port: 0,
    issuerAddress,
    masterKey,
    issuerPublicKey: issuerKeys.publicKey,
    fare: FARE,
    forwardIntervalMs: 20,
    log: silentLog,
    ...over,
  };
}

export const startTestTerminal = (dir: string, issuerAddress: string, over: Partial<TerminalConfig> = {}): Promise<TerminalHandle> =>
  startTerminal(terminalConfig(dir, issuerAddress, over));

/** An IssuerService that stores tap ids like the real one (new: STORED, repeat: DUPLICATE) and records every call. */
export class FakeIssuer {
  readonly reports: TapReportRequest[] = [];
  readonly stored = new Map<string, TapReportRequest['taps'][number]>();
  /** The next this-many TapReport calls fail with UNAVAILABLE. */
  unavailableCalls = 0;
  /** Status to answer for particular tap ids instead of STORED / DUPLICATE. */
  readonly overrides = new Map<string, TapReportStatus>();
  /** Tap ids the fake refuses as malformed: a batch holding one is answered INVALID_ARGUMENT naming it, as the issuer would. */
  readonly malformed = new Set<string>();
  readonly enrollments: EnrollCardRequest[] = [];
  private server = new Server();
  address = '';

  async start(): Promise<this> {
    const unimplemented = (_call: unknown, cb: (err: Partial<ServiceError>) => void) => cb({ code: status.UNIMPLEMENTED, details: 'not in the fake' });
    const impl: UntypedServiceImplementation = {
      tapReport: (call: { request: TapReportRequest }, cb: (err: Partial<ServiceError> | null, res?: TapReportResponse) => void) => {
        this.reports.push(call.request);
        if (this.unavailableCalls > 0) {
          this.unavailableCalls--;
          return cb({ code: status.UNAVAILABLE, details: 'issuer is down (fake)' });
        }
        const bad = call.request.taps.flatMap((tap, i) => (this.malformed.has(tap.tapId) ? [{ field: `taps[${i}].fare.currency_code`, description: 'must be CNY, the issuer\'s currency' }] : []));
        if (bad.length > 0) return cb(toServiceError(invalidArgument(bad), 'issuer.tapcredit'));
        const results = call.request.taps.map((tap) => {
          const override = this.overrides.get(tap.tapId);
          if (override) return { tapId: tap.tapId, status: override, reason: 'FAKE' };
          if (this.stored.has(tap.tapId)) return { tapId: tap.tapId, status: TapReportStatus.TAP_REPORT_STATUS_DUPLICATE, reason: '' };
          this.stored.set(tap.tapId, tap);
          return { tapId: tap.tapId, status: TapReportStatus.TAP_REPORT_STATUS_STORED, reason: '' };
        });
        cb(null, { results });
      },
      enrollCard: (call: { request: EnrollCardRequest }, cb: (err: Partial<ServiceError> | null, res?: EnrollCardResponse) => void) => {
        this.enrollments.push(call.request);
        const cardId = call.request.card!.proof!.cardId;
        const issuedAt = new Date();
        cb(null, {
          enrollment: { cardId, accountId: call.request.accountId, agreementId: `agr_${cardId}`, enrolledAt: issuedAt },
          creditFlag: signCreditFlag(issuerKeys.privateKey, { cardId, agreementId: `agr_${cardId}`, version: 1, issuedAt }),
        });
      },
      settle: unimplemented,
      getCard: unimplemented,
      listCardTaps: unimplemented,
    };
    this.server.addService(IssuerServiceService, impl);
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.address = `127.0.0.1:${port}`;
    return this;
  }

  /** Every tap id the terminal sent, in order, repeats included. */
  sentTapIds(): string[] {
    return this.reports.flatMap((r) => r.taps.map((t) => t.tapId));
  }

  stop(): void {
    this.server.forceShutdown();
  }
}

export { expectGrpcError, sleep, waitFor } from '../helpers/assert.js';
