// Captures a logger's JSON lines in memory, so tests can read what the
// servers logged: follow a trace, look for secrets that must not be there.
import { createLogger, type Logger } from '../../common/log.js';

export interface CapturedLogs {
  log: Logger;
  /** Every line written so far, as written. */
  text(): string;
  /** Every line written so far, parsed. */
  lines(): Record<string, any>[];
}

export function captureLogs(name = 'test'): CapturedLogs {
  const chunks: string[] = [];
  // Captures at debug whatever LOG_LEVEL the run has, so what is asserted is always there.
  const log = createLogger(name, { write: (chunk: string) => void chunks.push(chunk) }, 'debug');
  const text = () => chunks.join('');
  return {
    log,
    text,
    lines: () =>
      text()
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l)),
  };
}
