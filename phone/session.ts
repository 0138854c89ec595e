// The phone app's sign-in: the rider's tokens kept in a session file (mode
// 0600) between commands. The access token goes with every rider call; when
// it is about to expire the app trades the refresh token for new ones first
// (the authorizer uses the old refresh token up, so the file is rewritten).
import { chmodSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChannelCredentials } from '@grpc/grpc-js';
import { dataDir, setting } from '../common/config.js';
import { callUnary } from '../common/rpc.js';
import { AuthorizerServiceClient, type RiderTokens } from '../gen/tapcredit/authorizer/v1/authorizer.js';

export interface Session {
  accountId: string;
  /** The issuer id the access token is for. */
  audience: string;
  /** Where the authorizer that signed the rider in listens (for refreshes). */
  authorizer: string;
  accessToken: string;
  accessTokenExpiresAt: string;
  refreshToken: string;
}

/** Refresh when less than this is left of the access token. */
const REFRESH_MARGIN_MS = 60_000;

/** --session, TAPCREDIT_PHONE_SESSION, or <data dir>/phone-session.json. */
export const sessionFile = () => setting('session', 'TAPCREDIT_PHONE_SESSION', join(dataDir(), 'phone-session.json'));

export function readSession(file: string): Session | undefined {
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Session) : undefined;
}

function writeSession(file: string, session: Session): void {
  writeFileSync(file, JSON.stringify(session, null, 2), { mode: 0o600 });
  chmodSync(file, 0o600);
}

const fromTokens = (base: Omit<Session, 'accessToken' | 'accessTokenExpiresAt' | 'refreshToken'>, t: RiderTokens): Session => ({
  ...base,
  accessToken: t.accessToken,
  accessTokenExpiresAt: t.accessTokenExpiresAt!.toISOString(),
  refreshToken: t.refreshToken,
});

export async function signIn(
  file: string,
  opts: { accountId: string; password: string; audience: string; authorizer: string; creds: ChannelCredentials },
): Promise<Session> {
  const client = new AuthorizerServiceClient(opts.authorizer, opts.creds);
  try {
    const { tokens } = await callUnary(client, client.signIn, { accountId: opts.accountId, password: opts.password, audience: opts.audience });
    const session = fromTokens({ accountId: opts.accountId, audience: opts.audience, authorizer: opts.authorizer }, tokens!);
    writeSession(file, session);
    return session;
  } finally {
    client.close();
  }
}

/** The session with an access token good for a while yet, refreshed (and saved) when needed. */
export async function freshSession(file: string, credsTo: (address: string) => ChannelCredentials, now = Date.now()): Promise<Session | undefined> {
  const session = readSession(file);
  if (!session || Date.parse(session.accessTokenExpiresAt) - now > REFRESH_MARGIN_MS) return session;
  const client = new AuthorizerServiceClient(session.authorizer, credsTo(session.authorizer));
  try {
    const { tokens } = await callUnary(client, client.refreshToken, { refreshToken: session.refreshToken, audience: session.audience });
    const next = fromTokens(session, tokens!);
    writeSession(file, next);
    return next;
  } finally {
    client.close();
  }
}

export async function signOut(file: string, credsTo: (address: string) => ChannelCredentials): Promise<boolean> {
  const session = readSession(file);
  if (!session) return false;
  const client = new AuthorizerServiceClient(session.authorizer, credsTo(session.authorizer));
  try {
    await callUnary(client, client.signOut, { refreshToken: session.refreshToken });
  } finally {
    client.close();
    rmSync(file, { force: true });
  }
  return true;
}
