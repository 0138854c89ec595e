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

type Gen<S extends string> = S extends 'authorizer'
  ? typeof import('../../gen/tapcredit/authorizer/v1/authorizer.js')
  : S extends 'issuer'
    ? typeof import('../../gen/tapcredit/issuer/v1/issuer.js')
    : typeof import('../../gen/tapcredit/terminal/v1/terminal.js');

/** A generated module as the servers under test load it (to watch the calls they make through its clients). */
export async function serversGenerated<S extends 'authorizer' | 'issuer' | 'terminal'>(service: S): Promise<Gen<S>> {
  if (process.env.TAPCREDIT_RUNTIME !== 'dist') {
    if (service === 'authorizer') return (await import('../../gen/tapcredit/authorizer/v1/authorizer.js')) as Gen<S>;
    if (service === 'issuer') return (await import('../../gen/tapcredit/issuer/v1/issuer.js')) as Gen<S>;
    return (await import('../../gen/tapcredit/terminal/v1/terminal.js')) as Gen<S>;
  }
  return import(pathToFileURL(join(import.meta.dirname, '..', '..', 'dist', 'gen', 'tapcredit', service, 'v1', `${service}.js`)).href) as Promise<Gen<S>>;
}
