// The city's riders as the generator sees them: an account at the credit
// authorizer per rider (opened and topped up as ops), a card per rider
// enrolled through the issuer by ops (as at a service desk), and the card images the
// readers present (each card is in one place at a time: a reader takes a
// free card from the pool and gives it back with its counter advanced).
import { randomUUID } from 'node:crypto';
import { issueCard } from '../common/card.js';
import { CardEmulator, readForEnrollment } from '../common/card-emulator.js';
import { callUnary } from '../common/rpc.js';
import { AuthorizerServiceClient } from '../gen/tapcredit/authorizer/v1/authorizer.js';
import { IssuerServiceClient } from '../gen/tapcredit/issuer/v1/issuer.js';
import type { CardImage } from '../gen/tapcredit/type/v1/card.js';
import { CURRENCY, ISSUER_CODE, type Cluster } from './cluster.js';

export interface Rider {
  index: number;
  accountId: string;
  name: string;
  phoneNumber: string;
  /** The rider's card as it is now (counter advanced by every read). */
  card: CardImage;
  agreementId: string;
}

export const cardIdOf = (i: number) => `C${String(i).padStart(8, '0')}`;

/** Runs fn over items with at most `concurrency` calls in flight. */
export async function forEachConcurrent<T>(items: readonly T[], concurrency: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

export interface EnrollOptions {
  riders: number;
  /** Top-up of rider i, in minor units (0: none). */
  topUp: (i: number) => bigint;
  /** Credit limit of rider i, in minor units. */
  creditLimit?: (i: number) => bigint;
  concurrency?: number;
  onProgress?: (done: number) => void;
}

/** Opens an account per rider, tops it up and enrolls the rider's card; resolves the riders with their enrolled cards. */
export async function enrollRiders(cluster: Cluster, opts: EnrollOptions): Promise<Rider[]> {
  const ops = { role: 'ops' as const, name: 'admin' };
  const authorizer = new AuthorizerServiceClient(cluster.authorizer.address, cluster.credentials(ops, 'authorizer'));
  // Enrolled by ops, as at a service desk: bulk provisioning needs no rider sign-in each.
  const issuer = new IssuerServiceClient(cluster.issuer.address, cluster.credentials(ops, 'issuer'));
  const riders: Rider[] = new Array(opts.riders);
  let done = 0;
  const money = (minorUnits: bigint) => ({ currencyCode: CURRENCY, minorUnits: minorUnits.toString() });
  try {
    await forEachConcurrent(
      Array.from({ length: opts.riders }, (_, i) => i),
      opts.concurrency ?? 32,
      async (i) => {
        const accountId = `acc-${String(i).padStart(8, '0')}`;
        const name = `Rider ${i}`;
        const phoneNumber = `+8613${String(i).padStart(9, '0')}`;
        await callUnary(authorizer, authorizer.openAccount, {
          accountId,
          holder: { name, phoneNumber },
          currencyCode: CURRENCY,
          creditLimit: money(opts.creditLimit?.(i) ?? 0n),
        });
        const topUp = opts.topUp(i);
        if (topUp > 0n) {
          await callUnary(authorizer, authorizer.topUp, { requestId: `topup-${accountId}-${randomUUID()}`, accountId, amount: money(topUp) });
        }
        const blank = issueCard(cluster.masterKey, { cardId: cardIdOf(i), issuerCode: ISSUER_CODE, expiresOn: '2099-12-31' });
        const card = new CardEmulator(blank);
        const { proof } = readForEnrollment(card);
        const response = await callUnary(issuer, issuer.enrollCard, {
          requestId: randomUUID(),
          card: { issuerCode: ISSUER_CODE, expiresOn: blank.expiresOn, proof },
          rider: { name, phoneNumber },
          accountId,
        });
        const flag = response.creditFlag!;
        card.writeCreditFlag(flag);
        riders[i] = { index: i, accountId, name, phoneNumber, card: card.card, agreementId: flag.agreementId };
        opts.onProgress?.(++done);
      },
    );
  } finally {
    authorizer.close();
    issuer.close();
  }
  return riders;
}

/**
 * Cards not being presented right now, oldest-returned first: a card comes
 * back at the end of the queue, so each card rests between two taps as long
 * as the whole pool takes to go round.
 */
export class CardPool {
  private readonly free: number[];
  private head = 0;

  constructor(readonly riders: Rider[]) {
    // Shuffled, so consecutive taps are of unrelated cards.
    this.free = riders.map((r) => r.index);
    for (let i = this.free.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [this.free[i], this.free[j]] = [this.free[j], this.free[i]];
    }
  }

  /** A free card's rider, or undefined when every card is being presented. */
  take(): Rider | undefined {
    if (this.head >= this.free.length) return undefined;
    const i = this.free[this.head++];
    if (this.head > 4096 && this.head * 2 > this.free.length) {
      this.free.splice(0, this.head);
      this.head = 0;
    }
    return this.riders[i];
  }

  give(rider: Rider): void {
    this.free.push(rider.index);
  }
}
