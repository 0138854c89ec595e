// Certificate revocation on the server side: the CRL file `npm run certs --
// --revoke <name>` writes, watched (polled twice a second), so a revoked peer
// is refused within about a second without a restart. The CRL must verify
// against the CA; one that does not (or cannot be read) keeps the last good
// list and is logged. No file means nothing is revoked.
import { existsSync, readFileSync, unwatchFile, watchFile } from 'node:fs';
import type { Logger } from './log.js';
import { revokedSerials } from './pki.js';

const normalize = (serialHex: string) => serialHex.toLowerCase().replace(/^0+/, '');

export class RevocationWatcher {
  private serials = new Set<string>();
  private readonly listener = () => void this.load();

  private constructor(
    private readonly file: string,
    private readonly caPem: string,
    private readonly log: Logger,
  ) {}

  static async start(file: string, caPem: string, log: Logger, intervalMs = 500): Promise<RevocationWatcher> {
    const w = new RevocationWatcher(file, caPem, log);
    await w.load();
    watchFile(file, { interval: intervalMs, persistent: false }, w.listener);
    return w;
  }

  private async load(): Promise<void> {
    if (!existsSync(this.file)) {
      this.serials = new Set();
      return;
    }
    try {
      this.serials = await revokedSerials(readFileSync(this.file, 'utf8'), this.caPem);
      this.log.info({ crl: this.file, revoked: this.serials.size }, 'certificate revocation list loaded');
    } catch (err) {
      this.log.error({ crl: this.file, error: (err as Error).message }, 'certificate revocation list not loaded; keeping the last one');
    }
  }

  /** True when the certificate with this serial (hex, as Node reports it) is revoked. */
  isRevoked = (serialHex: string | undefined): boolean => serialHex !== undefined && this.serials.has(normalize(serialHex));

  close(): void {
    unwatchFile(this.file, this.listener);
  }
}
