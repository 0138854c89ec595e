import { createHash, randomUUID } from 'node:crypto';

/** A new random id with a readable prefix, e.g. "agr_5f0c...". */
export const newId = (prefix: string) => `${prefix}_${randomUUID().replace(/-/g, '')}`;

/** Fingerprint of a request's canonical bytes, to tell a true repeat from a reused id. */
export const fingerprint = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
