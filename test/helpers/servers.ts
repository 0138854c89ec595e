// Where the integration tests take the servers from: the TypeScript sources,
// or with TAPCREDIT_RUNTIME=dist the compiled build (`npm run test:dist`
// after `npm run build`), so the suite also runs against what is deployed.
// Child-process servers follow the same variable (common/launcher.ts).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

type Authorizer = typeof import('../../authorizer/service.js');
type Issuer = typeof import('../../issuer/service.js');
type Terminal = typeof import('../../terminal/service.js');

export async function serverModules(): Promise<Pick<Authorizer, 'startAuthorizer'> & Pick<Issuer, 'startIssuer'> & Pick<Terminal, 'startTerminal'>> {
  if (process.env.TAPCREDIT_RUNTIME !== 'dist') {
    const [a, i, t] = await Promise.all([import('../../authorizer/service.js'), import('../../issuer/service.js'), import('../../terminal/service.js')]);
    return { startAuthorizer: a.startAuthorizer, startIssuer: i.startIssuer, startTerminal: t.startTerminal };
  }
  const dist = join(import.meta.dirname, '..', '..', 'dist');
  const load = <M>(service: string): Promise<M> => {
    const file = join(dist, service, 'service.js');
    if (!existsSync(file)) throw new Error(`TAPCREDIT_RUNTIME=dist but ${file} is missing: run \`npm run build\` first`);
    return import(pathToFileURL(file).href) as Promise<M>;
  };
  const [a, i, t] = await Promise.all([load<Authorizer>('authorizer'), load<Issuer>('issuer'), load<Terminal>('terminal')]);
  return { startAuthorizer: a.startAuthorizer, startIssuer: i.startIssuer, startTerminal: t.startTerminal };
}

/** Which servers this run tests, for a test that must say so. */
export const serversUnderTest = () => (process.env.TAPCREDIT_RUNTIME === 'dist' ? 'dist' : 'source');
