// The issuers the authorizer settles with, reached through the generated
// IssuerServiceClient, every call with a deadline.
import { callUnary, channelTarget } from '../common/rpc.js';
import { channelCredentials, type TlsConfig } from '../common/tls.js';
import { IssuerServiceClient, SettlementItemStatus } from '../gen/tapcredit/issuer/v1/issuer.js';
import type { SettlementAck, SettlementBatch } from './settlement.js';

export const DEFAULT_SETTLE_DEADLINE_MS = 10_000;

/**
 * Parses ISSUER_ADDRESSES: "issuer-1=127.0.0.1:50052,issuer-2=10.0.0.5:50052".
 * An issuer with several replicas lists each: "issuer-1=10.0.0.5:50052,10.0.0.6:50052"
 * (an entry without "=" belongs to the issuer before it), or repeats its id.
 */
export function parseIssuerAddresses(raw: string): Record<string, string> {
  const lists = new Map<string, string[]>();
  let last: string[] | undefined;
  for (const entry of raw.split(',').map((p) => p.trim()).filter(Boolean)) {
    const at = entry.indexOf('=');
    if (at === -1 && last) {
      last.push(entry);
      continue;
    }
    if (at <= 0 || at === entry.length - 1) throw new Error(`ISSUER_ADDRESSES: expected issuer-id=host:port, got ${JSON.stringify(entry)}`);
    const issuerId = entry.slice(0, at);
    last = lists.get(issuerId) ?? [];
    lists.set(issuerId, last);
    last.push(entry.slice(at + 1));
  }
  return Object.fromEntries([...lists].map(([issuerId, addresses]) => [issuerId, addresses.join(',')]));
}

export class IssuerDirectory {
  private readonly addresses = new Map<string, string>();
  private readonly clients = new Map<string, IssuerServiceClient>();

  constructor(
    private readonly authorizerId: string,
    addresses: Record<string, string>,
    private readonly deadlineMs = DEFAULT_SETTLE_DEADLINE_MS,
    /** mTLS: each issuer is reached only if its certificate names that issuer id. */
    private readonly tls?: TlsConfig,
  ) {
    for (const [issuerId, address] of Object.entries(addresses)) this.addresses.set(issuerId, address);
  }

  /** Sets or changes where an issuer listens. */
  /** True when the issuer is one this authorizer settles with (a rider token's audience must be). */
  knows(issuerId: string): boolean {
    return this.addresses.has(issuerId);
  }

  setAddress(issuerId: string, address: string): void {
    if (this.addresses.get(issuerId) === address) return;
    this.addresses.set(issuerId, address);
    this.clients.get(issuerId)?.close();
    this.clients.delete(issuerId);
  }

  private client(issuerId: string): IssuerServiceClient {
    let client = this.clients.get(issuerId);
    if (!client) {
      const address = this.addresses.get(issuerId);
      if (!address) throw new Error(`no address configured for issuer ${issuerId}`);
      // address may list the issuer's replicas: settlements go round robin over them.
      const { target, options } = channelTarget(address);
      client = new IssuerServiceClient(target, channelCredentials(this.tls, { role: 'issuer', name: issuerId }), options);
      this.clients.set(issuerId, client);
    }
    return client;
  }

  /** IssuerService.Settle for a batch; resolves the issuer's per-item answer. */
  settle = async (batch: SettlementBatch): Promise<SettlementAck> => {
    const client = this.client(batch.issuerId);
    const money = (minorUnits: bigint) => ({ currencyCode: batch.currency, minorUnits: minorUnits.toString() });
    const response = await callUnary(
      client,
      client.settle,
      {
        settlementId: batch.settlementId,
        authorizerId: this.authorizerId,
        items: batch.items.map((i) => ({ deductionId: i.deductionId, tapId: i.tapId, amount: money(i.amount) })),
        total: money(batch.total),
      },
      this.deadlineMs,
    );
    return {
      results: response.results.map((r) => ({ tapId: r.tapId, matched: r.status === SettlementItemStatus.SETTLEMENT_ITEM_STATUS_MATCHED, reason: r.reason })),
      matchedTotal: response.matchedTotal ? BigInt(response.matchedTotal.minorUnits) : undefined,
    };
  };

  close(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}
